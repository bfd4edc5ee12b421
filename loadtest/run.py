"""Load-test the service locally: replicas, HAProxy in front, locust, then fault scenarios.

    python -m loadtest.run                       # 3 replicas, HAProxy on 127.0.0.1:8080
    python -m loadtest.run --run-time 20s --observe 4 --lb-port 18080
    python -m loadtest.run --no-steady --scenarios sigterm,rolling

Replicas are containers of the built image when a Docker engine holds it, otherwise
`bentoml serve` processes (the model must be in BENTOML_HOME's store either way). Everything
started is stopped on exit, and the exit code is non-zero when any gate fails.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness import cli
from harness.containers import image_present, project_image
from harness.deployment import BASE_DEPLOYMENT
from harness.processes import (
    PORT_ATTEMPTS,
    REPO_ROOT,
    free_port,
    on_free_port,
    port_in_use,
    start,
    stop_tree,
)
from loadtest import settings
from loadtest.chart import write_chart
from loadtest.gates import GateResult, cpu_per_request_gate
from loadtest.haproxy import (
    HAProxy,
    ReadinessProbe,
    Server,
    manifest_drain_seconds,
    manifest_grace_seconds,
    manifest_readiness_probe,
    running_haproxy,
)
from loadtest.prometheus import (
    Prometheus,
    PrometheusError,
    agreement_gate,
    format_view,
    running_prometheus,
    view_of_run,
    write_view_chart,
)
from loadtest.replicas import ContainerReplica, ProcessReplica, Replica
from loadtest.request_log import read_csv
from loadtest.scenarios import drive_faults, drive_scale_out, judge
from loadtest.settings import conf_float, conf_int

logger = logging.getLogger("loadtest")

# The fault run is stopped by the driver; this only caps it if the driver is stuck.
FAULT_RUN_CAP = "15m"
# Adds a replica under pooled load; runs alone (see loadtest/scenarios.py).
SCALE_OUT = "scaleout"
# The service's connection recycling, when a run sets it (`IRIS_CONNECTION_MAX_SECONDS=0
# IRIS_CONNECTION_MAX_REQUESTS=0` turns it off); otherwise the replicas' defaults apply.
PASSED_TO_REPLICAS = ("IRIS_CONNECTION_MAX_REQUESTS", "IRIS_CONNECTION_MAX_SECONDS")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.parser("loadtest.run", __doc__.split("\n")[0])
    parser.add_argument(
        "--replicas",
        type=int,
        default=conf_int("expected-replicas"),
        help="replicas to start; locust.conf's expected-replicas sets the default",
    )
    parser.add_argument(
        "--lb-port",
        type=int,
        default=int(os.environ.get("LOADTEST_LB_PORT", "8080")),
        help="port HAProxy listens on at 127.0.0.1 ($LOADTEST_LB_PORT sets the default; 0 for a free one)",
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "container", "process"),
        default="auto",
        help="replicas as containers of --image or as bentoml serve processes (auto: "
        "containers when a Docker engine holds the image)",
    )
    parser.add_argument(
        "--image", default=project_image(), help="image for containers: this version's"
    )
    parser.add_argument(
        "--run-id",
        default=uuid.uuid4().hex[:8],
        help="label put on the containers of this run (default: a random one)",
    )
    parser.add_argument(
        "--run-time", help="length of the gated steady run (default: locust.conf's run-time)"
    )
    parser.add_argument(
        "--observe",
        type=float,
        default=6.0,
        help="seconds each fault phase is watched under load",
    )
    parser.add_argument(
        "--max-recovery",
        type=float,
        help="seconds after a SIGKILL by which requests must all succeed again (default: the "
        "readiness probe's longest detection time + 1 s)",
    )
    parser.add_argument("--no-faults", dest="faults", action="store_false", help="steady run only")
    parser.add_argument(
        "--no-prometheus",
        dest="prometheus",
        action="store_false",
        help="do not start Prometheus to scrape the replicas and report its view of the run",
    )
    parser.add_argument(
        "--no-steady", dest="steady", action="store_false", help="fault scenarios only"
    )
    parser.add_argument(
        "--replica-cpu-ms-per-request",
        type=float,
        default=float(
            os.environ.get("LOCUST_REPLICA_CPU_MS_PER_REQUEST")
            or conf_float("replica-cpu-ms-per-request")
        ),
        help="gate: the replicas' CPU time over the requests they answered in the steady run "
        "(default: locust.conf's replica-cpu-ms-per-request, or "
        "$LOCUST_REPLICA_CPU_MS_PER_REQUEST); 0 skips it",
    )
    parser.add_argument(
        "--scenarios",
        default="sigterm,kill,rolling",
        help="fault scenarios in this order, comma-separated: sigterm (SIGTERM one replica, "
        "restart it), kill (SIGKILL one, restart it), rolling (replace every replica one by "
        "one); or scaleout alone (add a replica while only kept-alive users load the service)",
    )
    parser.add_argument(
        "--probe-period",
        type=float,
        metavar="SECONDS",
        help="check /readyz this many seconds apart instead of the Deployment's periodSeconds "
        "(short runs, with a --drain-seconds to match)",
    )
    parser.add_argument(
        "--deployment",
        type=Path,
        default=BASE_DEPLOYMENT,
        help="the Deployment whose drain, readiness probe and grace period the replicas and "
        "HAProxy follow (default: kustomize/base/deployment.yaml)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help="IRIS_DRAIN_SECONDS of the replicas (default: the Deployment's): it must outlast "
        "the balancer's detection of a failing readiness check",
    )
    parser.add_argument(
        "--kept-alive-users",
        type=int,
        help="users (of locust.conf's) that keep their connection open (default: locust.conf's "
        "kept-alive-users)",
    )
    parser.add_argument(
        "--no-drain",
        dest="drain",
        action="store_false",
        help="SIGTERM without first taking the replica out of HAProxy, so that it leaves the "
        "rotation only on failed readiness checks, as in the rolling update: the replica's own "
        "drain must cover an endpoint removal that is slow to reach the balancer",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=REPO_ROOT / "reports" / "loadtest",
        help="where reports, charts and logs go (default: reports/loadtest)",
    )
    args = parser.parse_args(argv)
    if args.drain_seconds is None:
        args.drain_seconds = manifest_drain_seconds(args.deployment)
    # How long a stopping replica is waited for: as long as the kubelet waits before SIGKILL.
    args.grace_seconds = manifest_grace_seconds(args.deployment)
    if args.max_recovery is None:
        args.max_recovery = readiness_probe(args).worst_detection_s + 1.0
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if unknown := set(args.scenarios) - {"sigterm", "kill", "rolling", SCALE_OUT}:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if SCALE_OUT in args.scenarios and args.scenarios != [SCALE_OUT]:
        parser.error(f"{SCALE_OUT} runs alone: its users are all kept-alive ones")
    if args.scenarios[:1] not in (["sigterm"], [SCALE_OUT]):
        parser.error("the scenarios start with sigterm")
    if args.faults and args.replicas < 2:
        parser.error(
            "the fault scenarios stop replicas one at a time: use 2 or more, or --no-faults"
        )
    return args


def readiness_probe(args: argparse.Namespace) -> ReadinessProbe:
    """The Deployment's readiness probe, checked every --probe-period seconds if given."""
    probe = manifest_readiness_probe(args.deployment)
    return probe if args.probe_period is None else replace(probe, period_s=args.probe_period)


def choose_replicas(args: argparse.Namespace, log_dir: Path, first: int = 1) -> list[Replica]:
    """`args.replicas` replicas named replica-<first>, replica-<first + 1>, ..."""
    use_containers = args.mode == "container" or (args.mode == "auto" and image_present(args.image))
    names = [f"replica-{index}" for index in range(first, first + args.replicas)]
    env = {"IRIS_DRAIN_SECONDS": f"{args.drain_seconds:g}"}
    # Containers get only what they are given: recycling set for this run reaches them too.
    env |= {name: os.environ[name] for name in PASSED_TO_REPLICAS if name in os.environ}
    if use_containers:
        logger.info("Replicas: containers of %s (label iris-loadtest=%s)", args.image, args.run_id)
        return [
            ContainerReplica(
                name,
                free_port(),
                args.image,
                args.run_id,
                log_dir,
                env,
                stop_timeout_s=args.grace_seconds,
            )
            for name in names
        ]
    reason = "as asked" if args.mode == "process" else f"no Docker engine holding {args.image}"
    logger.info("Replicas: bentoml serve processes (%s)", reason)
    return [
        ProcessReplica(name, free_port(), log_dir, env, stop_timeout_s=args.grace_seconds)
        for name in names
    ]


def ready_on_a_free_port(replica: Replica) -> tuple[str, int, float]:
    """(name, port, seconds to ready) of a launched replica. Its port was free when chosen; if
    another process took it before the replica bound it, the replica is started again on
    another (before the balancer learns its port)."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return replica.name, replica.port, replica.wait_ready()
        except (RuntimeError, TimeoutError):
            replica.remove()
            if attempt == PORT_ATTEMPTS or not port_in_use(replica.port):
                raise
            logger.warning("%s: port %d was taken; trying another", replica.name, replica.port)
            replica.port = free_port()
            replica.launch()
    raise AssertionError("unreachable")


def locust_command(
    host: str, report_dir: Path, *extra: str, kept_alive_users: int | None = None
) -> list[str]:
    if kept_alive_users is not None:
        extra = ("--kept-alive-users", str(kept_alive_users), *extra)
    return [
        str(Path(sys.executable).with_name("locust")),
        "--config",
        str(settings.LOCUST_CONF),
        "--host",
        host,
        "--html",
        str(report_dir / "report.html"),
        "--csv",
        str(report_dir / "locust"),
        *extra,
    ]


def steady_run(
    host: str,
    args: argparse.Namespace,
    replicas: Sequence[Replica],
    prometheus: Prometheus | None,
) -> list[GateResult]:
    """The same gated locust run as `make loadtest`, its output shown as it comes, then what
    the replicas' CPU time and Prometheus say of it."""
    report_dir = args.report_dir / "steady"
    extra = ["--expected-replicas", str(args.replicas)]
    if args.run_time:
        extra += ["--run-time", args.run_time]
    logger.info("Steady load through %s; report in %s", host, report_dir)
    command = locust_command(host, report_dir, *extra, kept_alive_users=args.kept_alive_users)
    cpu_before = {replica.name: replica.cpu_seconds() for replica in replicas}
    since = time.time()
    code = subprocess.run(command, cwd=REPO_ROOT).returncode
    until = time.time()
    cpu_after = {replica.name: replica.cpu_seconds() for replica in replicas}
    results = [GateResult("steady run (locust gates above)", code == 0, f"locust exit code {code}")]
    records = read_csv(report_dir / "requests.csv")
    if args.replica_cpu_ms_per_request > 0:
        results.append(
            cpu_per_request_gate(
                {
                    name: None
                    if before is None or cpu_after[name] is None
                    else cpu_after[name] - before
                    for name, before in cpu_before.items()
                },
                Counter(record.served_by for record in records if record.served_by),
                args.replica_cpu_ms_per_request,
            )
        )
    if prometheus is not None:
        view = view_of_run(prometheus, since, until, records)
        logger.info(
            "Prometheus's view of the steady run beside locust's:\n%s", format_view(view, records)
        )
        write_view_chart(prometheus, view, since, until, report_dir / "prometheus.png")
        results.append(agreement_gate(view, args.replicas))
    return results


def fault_run(
    host: str,
    args: argparse.Namespace,
    replicas: Sequence[Replica],
    proxy: HAProxy,
    spares: Sequence[Replica],
) -> list[GateResult]:
    report_dir = args.report_dir / "faults"
    logger.info("Fault scenarios under load through %s; report in %s", host, report_dir)
    scale_out = args.scenarios == [SCALE_OUT]
    command = locust_command(
        host,
        report_dir,
        "--skip-gates",
        "--run-time",
        FAULT_RUN_CAP,
        # Scale-out: every user pooled (the reference user aside, which never is).
        kept_alive_users=conf_int("users") if scale_out else args.kept_alive_users,
    )
    locust = start(command, log_path=args.report_dir / "logs" / "locust-faults.log", cwd=REPO_ROOT)
    try:
        if scale_out:
            timeline = drive_scale_out(
                replicas, spares[0], proxy, observe_s=args.observe, warmup_s=3.0
            )
        else:
            timeline = drive_faults(
                replicas,
                proxy,
                observe_s=args.observe,
                warmup_s=3.0,
                drain_before_sigterm=args.drain,
                kill="kill" in args.scenarios,
                spares=spares if "rolling" in args.scenarios else (),
            )
        # SIGINT, not SIGTERM: locust writes its HTML report only on a normal or ^C stop.
        locust.send_signal(signal.SIGINT)
        locust.wait(timeout=60)
    finally:
        stop_tree(locust.pid, grace=10)
    records = read_csv(report_dir / "requests.csv")
    table, results = judge(
        records,
        timeline,
        replica_count=len(replicas),
        max_failure_ratio=conf_float("max-failure-ratio"),
        balance_alpha=conf_float("balance-alpha"),
        max_recovery_s=args.max_recovery,
    )
    write_chart(
        records,
        report_dir / "replicas.png",
        markers=timeline.markers,
        title=f"{len(replicas)} replicas behind HAProxy: {', '.join(args.scenarios)}",
    )
    for note in timeline.notes:
        logger.info("%s", note)
    logger.info("Requests per phase (by completion time):\n%s", table)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    install_signal_handlers()
    try:
        results = run_stage(args)
    except (
        RuntimeError,
        TimeoutError,
        subprocess.SubprocessError,
        OSError,
        PrometheusError,
    ) as exc:
        # Everything started has been stopped by now; say what broke, not a traceback.
        logger.error("Load test could not run: %s", exc)
        return 2
    for result in results:
        logger.info("%s", result)
    passed = all(result.passed for result in results)
    logger.info("Load test %s", "PASSED" if passed else "FAILED")
    return 0 if passed else 1


def install_signal_handlers() -> None:
    # A plain `kill` of this runner must still tear down what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Started in the background (`cmd &`, nohup), a process inherits SIGINT ignored, and so
    # would locust, which then never stops on the SIGINT that makes it write its reports.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_stage(args: argparse.Namespace) -> list[GateResult]:
    """Start replicas and HAProxy, run the load and the faults, stop everything; the gates."""
    log_dir = args.report_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[GateResult] = []
    with contextlib.ExitStack() as stack:
        replicas = choose_replicas(args, log_dir)
        # The pods a rolling update creates: slots in the balancer, started when their turn comes.
        rolling = args.faults and "rolling" in args.scenarios
        spares = choose_replicas(args, log_dir, first=args.replicas + 1) if rolling else []
        if args.faults and args.scenarios == [SCALE_OUT]:  # the one replica it adds
            spares = choose_replicas(args, log_dir, first=args.replicas + 1)[:1]
        for replica in [*replicas, *spares]:
            stack.callback(replica.remove)
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            logger.info("%s ready on port %s after %.1f s", *ready_on_a_free_port(replica))
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="haproxy-")))
        servers = [Server(replica.name, replica.port) for replica in replicas]
        servers += [Server(spare.name, spare.port, spare=True) for spare in spares]

        def balancing_on(port: int) -> contextlib.AbstractContextManager[HAProxy]:
            return running_haproxy(
                servers,
                listen_port=port,
                work_dir=work_dir,
                log_path=log_dir / "haproxy.log",
                probe=readiness_probe(args),
            )

        if args.lb_port == 0:
            proxy, lb_port = stack.enter_context(on_free_port(balancing_on))
        else:
            proxy, lb_port = stack.enter_context(balancing_on(args.lb_port)), args.lb_port
        prometheus = None
        if args.prometheus and args.steady:
            prometheus = stack.enter_context(
                running_prometheus(
                    {replica.name: replica.port for replica in replicas},
                    work_dir=Path(
                        stack.enter_context(tempfile.TemporaryDirectory(prefix="prometheus-"))
                    ),
                    log_path=log_dir / "prometheus.log",
                )
            )
        host = f"http://127.0.0.1:{lb_port}"
        if args.steady:
            results.extend(steady_run(host, args, replicas, prometheus))
        if args.faults:
            results.extend(fault_run(host, args, replicas, proxy, spares))
    return results


if __name__ == "__main__":
    sys.exit(main())
