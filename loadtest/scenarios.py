"""Fault scenarios under load, and the judgement of each phase from the per-request log.

While locust keeps the load on, one replica is terminated and restarted, then another is
killed and restarted, then a rolling update replaces every replica one by one, as a
Deployment with `maxSurge: 1, maxUnavailable: 0` does: a new replica is in rotation before an
old one gets SIGTERM. A separate scenario adds a replica while only pooled (kept-alive) users
load the service: the service's connection recycling must bring it its share. The driver only
records when things happened; every figure is then
computed from the requests themselves, so what is reported is what clients saw. A graceful
stop (SIGTERM, the rolling update) must lose no request at all, kept-alive clients included.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadtest.gates import (
    GateResult,
    balance_gate,
    crash_failures_gate,
    failure_ratio_gate,
    format_tally,
    scale_out_gate,
)
from loadtest.haproxy import HAProxy
from loadtest.replicas import Replica
from loadtest.request_log import (
    KEPT_ALIVE_MARK,
    RequestRecord,
    WindowSummary,
    finished_between,
    fresh_connections,
    replica_tally,
    summarize,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds since the epoch
    end: float
    kind: str  # "steady", "graceful", "killed", "rejoined" or "scaled-out": which gates apply
    subject: str = ""  # the replica a "scaled-out" phase is about


@dataclass(frozen=True)
class KillFigures:
    victim: str
    killed_at: float  # SIGKILL sent
    died_at: float  # its port refused connections: the kernel had closed its sockets
    processes_killed: int
    # Connections HAProxy had open to the victim just before the kill: each can lose at most
    # the one request it carries.
    open_connections: int
    detected_after_s: float


@dataclass
class FaultTimeline:
    phases: list[Phase] = field(default_factory=list)
    markers: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kill: KillFigures | None = None

    def mark(self, label: str) -> float:
        now = time.time()
        self.markers.append((now, label))
        return now


def _wait_port_closed(port: int, *, timeout: float = 10.0) -> float:
    """Poll until nothing accepts connections on `port`; return when that was (epoch s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return time.time()
        time.sleep(0.002)
    raise TimeoutError(f"port {port} still accepts connections after {timeout:.0f}s")


def _wait_for_traffic(proxy: HAProxy, *, timeout: float = 60.0) -> None:
    """Block until locust's first connections come through (it takes seconds to start)."""
    deadline = time.monotonic() + timeout
    already = proxy.connections_accepted()
    while proxy.connections_accepted() == already:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no load reached HAProxy within {timeout:.0f}s")
        time.sleep(0.1)


def _restart(replica: Replica, proxy: HAProxy, timeline: FaultTimeline) -> float:
    """Start `replica` again and return when the balancer put it back in rotation."""
    timeline.mark(f"start {replica.name}")
    replica.launch()
    ready_s = replica.wait_ready()
    proxy.set_state(replica.name, "ready")  # undoes a drain; a no-op otherwise
    up_s = proxy.wait_for(replica.name, "UP")
    up_at = timeline.mark(f"{replica.name} UP")
    timeline.notes.append(
        f"{replica.name} restarted: ready after {ready_s:.1f} s, back in HAProxy {up_s:.1f} s later"
    )
    return up_at


def drive_faults(
    replicas: Sequence[Replica],
    proxy: HAProxy,
    *,
    observe_s: float,
    warmup_s: float,
    drain_before_sigterm: bool = True,
    kill: bool = True,
    spares: Sequence[Replica] = (),
) -> FaultTimeline:
    """SIGTERM replicas[0] and restart it; SIGKILL replicas[1] and restart it (if `kill`);
    then, given as many `spares`, replace every replica by one (a rolling update)."""
    timeline = FaultTimeline()
    _wait_for_traffic(proxy)
    time.sleep(warmup_s)
    start = timeline.mark("baseline")
    time.sleep(observe_s)
    steady_since = _sigterm_and_restart(
        replicas[0], proxy, timeline, start, len(replicas), observe_s, drain_before_sigterm
    )
    if kill:
        steady_since = _sigkill_and_restart(replicas[1], proxy, timeline, steady_since, observe_s)
    if spares:
        steady_since = _rolling_update(replicas, spares, proxy, timeline, steady_since, observe_s)
    return timeline


# How soon a replica added under pooled load must serve its share: every pooled connection ends
# within the service's age limit (1 s + 20 %), and a user at 10 requests/s sends its next
# request on a new one at once; the rest is margin for a loaded machine.
SCALE_OUT_SETTLE_S = 3.0


def drive_scale_out(
    replicas: Sequence[Replica],
    added: Replica,
    proxy: HAProxy,
    *,
    observe_s: float,
    warmup_s: float,
    settle_s: float = SCALE_OUT_SETTLE_S,
) -> FaultTimeline:
    """With the load on `replicas`, start `added`, put it in rotation, and watch the spread."""
    timeline = FaultTimeline()
    _wait_for_traffic(proxy)
    time.sleep(warmup_s)
    start = timeline.mark("baseline")
    time.sleep(observe_s)
    timeline.mark(f"start {added.name}")
    added.launch()
    ready_s = added.wait_ready()
    before_at = time.time()
    timeline.phases.append(Phase(f"baseline, {len(replicas)} replicas", start, before_at, "steady"))
    proxy.set_state(added.name, "ready")
    up_s = proxy.wait_for(added.name, "UP")
    up_at = timeline.mark(f"{added.name} UP")
    timeline.notes.append(
        f"scale-out: {added.name} ready after {ready_s:.1f} s, in rotation {up_s:.1f} s later"
    )
    time.sleep(settle_s + observe_s)
    end = timeline.mark("end")
    timeline.phases.append(
        Phase(
            f"{settle_s:g} s after {added.name} joined",
            up_at + settle_s,
            end,
            "scaled-out",
            subject=added.name,
        )
    )
    return timeline


def _stop_gracefully(replica: Replica, proxy: HAProxy) -> tuple[float, float]:
    """SIGTERM; (seconds until the balancer took it out, seconds until it exited)."""
    replica.terminate()
    down_s = proxy.wait_for(replica.name, "DOWN", timeout=60)
    return down_s, down_s + replica.wait_stopped()


def _sigterm_and_restart(
    terminated: Replica,
    proxy: HAProxy,
    timeline: FaultTimeline,
    steady_since: float,
    replica_count: int,
    observe_s: float,
    drain_before_sigterm: bool,
) -> float:
    terminated_at = timeline.mark(f"SIGTERM {terminated.name}")
    timeline.phases.append(
        Phase(f"baseline, {replica_count} replicas", steady_since, terminated_at, "steady")
    )
    if drain_before_sigterm:
        # What Kubernetes does when it deletes a pod: the endpoint leaves the Service (no new
        # connections) while the pod gets SIGTERM and finishes what it has in flight.
        proxy.set_state(terminated.name, "drain")
    down_s, stopped_s = _stop_gracefully(terminated, proxy)
    timeline.notes.append(
        f"{terminated.name} SIGTERM "
        f"({'drained from HAProxy first' if drain_before_sigterm else 'HAProxy not told'}): "
        f"out of HAProxy's rotation after {down_s:.1f} s, exited after {stopped_s:.1f} s"
    )
    time.sleep(observe_s)
    up_at = _restart(terminated, proxy, timeline)
    timeline.phases.append(
        Phase(f"SIGTERM {terminated.name} until it is back", terminated_at, up_at, "graceful")
    )
    time.sleep(observe_s)
    return up_at


def _sigkill_and_restart(
    killed: Replica, proxy: HAProxy, timeline: FaultTimeline, steady_since: float, observe_s: float
) -> float:
    # The kill moment is taken before the connection count, so that a request reaching the
    # replica between the two is counted among those started while it was dying.
    killed_at = timeline.mark(f"SIGKILL {killed.name}")
    open_connections = proxy.server_states()[killed.name].current_sessions
    timeline.phases.append(Phase("rejoined", steady_since, killed_at, "rejoined"))
    processes = killed.kill()
    died_at = _wait_port_closed(killed.port)
    proxy.wait_for(killed.name, "DOWN")
    detected_s = time.time() - killed_at
    killed.wait_stopped()
    timeline.kill = KillFigures(
        killed.name, killed_at, died_at, processes, open_connections, detected_s
    )
    timeline.notes.append(
        f"{killed.name} SIGKILL: {processes} processes killed with {open_connections} "
        f"connections open through HAProxy; its port closed {1000 * (died_at - killed_at):.0f} ms "
        f"later; HAProxy marked it DOWN {detected_s:.1f} s after the kill"
    )
    time.sleep(observe_s)
    up_at = _restart(killed, proxy, timeline)
    timeline.phases.append(
        Phase(f"SIGKILL {killed.name} until it is back", killed_at, up_at, "killed")
    )
    time.sleep(observe_s)
    end = timeline.mark("end")
    timeline.phases.append(Phase(f"{killed.name} rejoined", up_at, end, "rejoined"))
    return end


def _rolling_update(
    olds: Sequence[Replica],
    news: Sequence[Replica],
    proxy: HAProxy,
    timeline: FaultTimeline,
    steady_since: float,
    observe_s: float,
) -> float:
    """Replace each old replica by a new one: the new one in rotation before the old one stops."""
    started = timeline.mark("rolling update")
    if started - steady_since >= 1.0:
        timeline.phases.append(Phase("before the update", steady_since, started, "rejoined"))
    for old, new in zip(olds, news, strict=True):
        timeline.mark(f"start {new.name}")
        new.launch()
        ready_s = new.wait_ready()
        proxy.set_state(new.name, "ready")  # the spare slot joins the balancer's checks
        up_s = proxy.wait_for(new.name, "UP")
        terminated_at = timeline.mark(f"SIGTERM {old.name}")
        down_s, stopped_s = _stop_gracefully(old, proxy)
        timeline.notes.append(
            f"rolling update: {new.name} ready after {ready_s:.1f} s and in rotation "
            f"{up_s:.1f} s later; then {old.name} got SIGTERM, left the rotation after "
            f"{down_s:.1f} s and exited after {stopped_s:.1f} s"
        )
        timeline.markers.append((terminated_at + stopped_s, f"{old.name} exited"))
    time.sleep(observe_s)
    end = timeline.mark("update done")
    timeline.phases.append(
        Phase(f"rolling update of {len(olds)} replicas", started, end, "graceful")
    )
    return end


def phase_table(phases: Sequence[Phase], summaries: Sequence[WindowSummary]) -> str:
    lines = [f"{'phase':<38} {'secs':>5} {'requests':>8} {'failed':>6} {'p95 ms':>7}  per replica"]
    for phase, summary in zip(phases, summaries, strict=True):
        lines.append(
            f"{phase.name:<38} {phase.end - phase.start:>5.1f} {summary.requests:>8} "
            f"{summary.failures:>6} {summary.p95_ms:>7.0f}  {format_tally(summary.per_replica)}"
        )
    return "\n".join(lines)


def judge(
    records: Sequence[RequestRecord],
    timeline: FaultTimeline,
    *,
    replica_count: int,
    max_failure_ratio: float,
    balance_alpha: float,
    max_recovery_s: float,
) -> tuple[str, list[GateResult]]:
    """The per-phase table and the gates of every phase."""
    summaries = [finished_between(records, phase.start, phase.end) for phase in timeline.phases]
    summarized = [summarize(window) for window in summaries]
    results: list[GateResult] = []
    for phase, window, summary in zip(timeline.phases, summaries, summarized, strict=True):
        if phase.kind in ("steady", "rejoined"):
            ratio = failure_ratio_gate(summary.failures, summary.requests, max_failure_ratio)
            spread = replica_tally(fresh_connections(window))
            balance = balance_gate(spread, replica_count, balance_alpha)
            results.append(GateResult(f"{phase.name}: failures", ratio.passed, ratio.detail))
            results.append(GateResult(f"{phase.name}: balance", balance.passed, balance.detail))
        elif phase.kind == "graceful":
            results.append(
                GateResult(
                    f"{phase.name}: zero failures",
                    summary.failures == 0 and summary.requests > 0,
                    f"{summary.failures} of {summary.requests} requests failed"
                    + (f" ({dict(summary.errors)})" if summary.failures else ""),
                )
            )
        elif phase.kind == "scaled-out":
            ratio = failure_ratio_gate(summary.failures, summary.requests, max_failure_ratio)
            results.append(GateResult(f"{phase.name}: failures", ratio.passed, ratio.detail))
            pooled = replica_tally(
                record for record in window if record.name.endswith(KEPT_ALIVE_MARK)
            )
            results.append(
                scale_out_gate(pooled, phase.subject, replica_count + 1, SCALE_OUT_SETTLE_S)
            )
        elif phase.kind == "killed" and timeline.kill is not None:
            results.extend(
                _kill_gates(
                    records,
                    window,
                    summary,
                    timeline.kill,
                    max_recovery_s,
                    replica_count,
                    balance_alpha,
                )
            )
    return phase_table(timeline.phases, summarized), results


def _kill_gates(
    all_records: Sequence[RequestRecord],
    window: Sequence[RequestRecord],
    summary: WindowSummary,
    kill: KillFigures,
    max_recovery_s: float,
    replica_count: int,
    alpha: float,
) -> list[GateResult]:
    failed = [record for record in window if not record.ok]
    recovery_s = max((record.finished for record in failed), default=kill.killed_at)
    recovery_s -= kill.killed_at
    # Until the balancer takes the dead replica out, each new connection may be sent to it.
    removed_at = kill.killed_at + kill.detected_after_s
    started_before_removal = sum(
        kill.killed_at <= record.started < removed_at for record in all_records
    )
    bounded = crash_failures_gate(
        kill.victim,
        failures=summary.failures,
        requests=summary.requests,
        in_flight=kill.open_connections,
        started_before_removal=started_before_removal,
        replicas=replica_count,
        alpha=alpha,
    )
    return [
        GateResult(
            bounded.name,
            bounded.passed,
            bounded.detail + (f"; errors {dict(summary.errors)}" if summary.failures else ""),
        ),
        GateResult(
            f"SIGKILL {kill.victim}: success back to 100%",
            recovery_s <= max_recovery_s,
            (f"last failure {recovery_s:.2f} s after the kill" if failed else "no failure at all")
            + f" (limit {max_recovery_s:g} s); "
            f"HAProxy marked it DOWN {kill.detected_after_s:.1f} s after the kill",
        ),
    ]
