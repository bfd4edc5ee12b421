"""Pass/fail rules for a load test run; each returns a result that says what it measured.

The balancer in front of the replicas (kube-proxy on a cluster, HAProxy set up like it here)
sends each new connection to a replica chosen at random, so the rules are statistical. Balance
is Pearson's chi-square goodness-of-fit test against an even split: it accepts the random
spread of a fair per-connection choice, yet flags a replica that gets visibly less or more than
its share once a few hundred connections are in. Pooled clients' requests are not independent
draws (each connection's share follows one choice), so they join a looser rule on the load
itself: no replica more than a bound off the mean. A crash costs what the dead replica had in
flight plus the connections sent to it until it left the rotation: a binomial number, bounded
by its upper quantile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy.stats import binom, chisquare


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


def failure_ratio_gate(failures: int, requests: int, max_ratio: float) -> GateResult:
    if requests == 0:
        return GateResult("failure ratio", False, "no request was made")
    ratio = failures / requests
    return GateResult(
        "failure ratio",
        ratio < max_ratio,
        f"{failures}/{requests} = {ratio:.3%} (must be below {max_ratio:.1%})",
    )


def latency_gate(percentile: str, measured_ms: float, limit_ms: float) -> GateResult:
    passed = not math.isnan(measured_ms) and measured_ms <= limit_ms
    return GateResult(
        f"{percentile} latency", passed, f"{measured_ms:.0f} ms (limit {limit_ms:.0f} ms)"
    )


def cpu_per_request_gate(
    cpu_seconds: Mapping[str, float | None], requests: Mapping[str, int], limit_ms: float
) -> GateResult:
    """The replicas' CPU time over the requests they answered, at most `limit_ms` each.

    CPU time is what a request costs the service, whatever else runs on the machine: waiting
    for a core stretches latency, not CPU time.
    """
    name = f"replica CPU per request at most {limit_ms:g} ms"
    unread = sorted(replica for replica, seconds in cpu_seconds.items() if seconds is None)
    if unread:
        return GateResult(name, False, f"cannot read the CPU time of {', '.join(unread)}")
    total_requests = sum(requests.get(replica, 0) for replica in cpu_seconds)
    if total_requests == 0:
        return GateResult(name, False, "the replicas answered no request")
    total_ms = 1000 * sum(seconds or 0.0 for seconds in cpu_seconds.values())
    per_replica = ", ".join(
        f"{replica}: {1000 * (seconds or 0.0) / max(1, requests.get(replica, 0)):.2f}"
        for replica, seconds in sorted(cpu_seconds.items())
    )
    measured = total_ms / total_requests
    return GateResult(
        name,
        measured <= limit_ms,
        f"{measured:.2f} ms over {total_requests} requests ({per_replica})",
    )


def format_tally(tally: Mapping[str, int]) -> str:
    total = sum(tally.values())
    return ", ".join(
        f"{replica}: {count} ({count / total:.1%})" for replica, count in sorted(tally.items())
    )


def max_relative_deviation(tally: Mapping[str, int]) -> float:
    """The largest |count - mean| / mean over replicas; 0 is a perfectly even split."""
    mean = sum(tally.values()) / len(tally)
    return max(abs(count - mean) / mean for count in tally.values())


def balance_gate(tally: Mapping[str, int], expected_replicas: int, alpha: float) -> GateResult:
    """Every expected replica served, and the spread is consistent with an even split."""
    name = "balance"
    if sum(tally.values()) == 0:
        return GateResult(name, False, "no successful request named its replica")
    if len(tally) != expected_replicas:
        return GateResult(
            name,
            False,
            f"{len(tally)} replicas served, expected {expected_replicas}: {format_tally(tally)}",
        )
    if expected_replicas == 1:
        return GateResult(name, True, f"a single replica served everything: {format_tally(tally)}")
    p_value = float(chisquare(list(tally.values())).pvalue)
    return GateResult(
        name,
        p_value >= alpha,
        f"{format_tally(tally)}; max deviation from the mean "
        f"{max_relative_deviation(tally):.1%}; chi-square p = {p_value:.3g} "
        f"(even split rejected below {alpha:g})",
    )


def pooled_balance_gate(
    tally: Mapping[str, int], expected_replicas: int, max_deviation: float
) -> GateResult:
    """Every user's requests, kept-alive ones included: no replica further than `max_deviation`
    (a fraction of the mean) from an even share."""
    name = "balance, kept-alive users included"
    if len(tally) != expected_replicas or sum(tally.values()) == 0:
        return GateResult(
            name,
            False,
            f"{len(tally)} replicas served, expected {expected_replicas}: {format_tally(tally)}",
        )
    deviation = max_relative_deviation(tally)
    return GateResult(
        name,
        deviation <= max_deviation,
        f"{format_tally(tally)}; max deviation from the mean {deviation:.1%} "
        f"(limit {max_deviation:.0%})",
    )


def scale_out_gate(
    tally: Mapping[str, int], added: str, replicas: int, settle_s: float
) -> GateResult:
    """The replica added under pooled load serves at least half its even share of the pooled
    users' requests once `settle_s` has passed."""
    name = f"scale-out: {added} serves pooled clients within {settle_s:g} s"
    total = sum(tally.values())
    if total == 0:
        return GateResult(name, False, "no kept-alive request succeeded after the scale-out")
    share = tally.get(added, 0) / total
    floor = 0.5 / replicas
    return GateResult(
        name,
        share >= floor,
        f"{share:.1%} of the kept-alive requests (at least {floor:.1%}, half of an even "
        f"share over {replicas}): {format_tally(tally)}",
    )


def crash_failures_gate(
    victim: str,
    *,
    failures: int,
    requests: int,
    in_flight: int,
    started_before_removal: int,
    replicas: int,
    alpha: float,
) -> GateResult:
    """Failures after a replica is killed, within what a random per-connection balancer costs.

    Each of the `started_before_removal` requests sent between the kill and the replica's
    removal from rotation opened its own connection and reached the dead replica with
    probability 1/`replicas`; their number is binomial, and the gate allows its 1 - `alpha`
    quantile on top of the `in_flight` requests the replica was serving when it died.
    """
    share = int(binom.ppf(1 - alpha, started_before_removal, 1 / replicas))
    bound = in_flight + share
    return GateResult(
        f"SIGKILL {victim}: failures bounded by its in-flight requests and its share until removal",
        failures <= bound,
        f"{failures} failed (of {requests}); at most {bound}: {in_flight} in flight at the kill "
        f"+ {share} of the {started_before_removal} requests started before its removal "
        f"(1/{replicas} expected, upper {1 - alpha:.1%} quantile)",
    )
