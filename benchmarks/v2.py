"""The Open Inference Protocol side by side: this service against MLServer 1.7.1.

    python -m benchmarks.v2                   # what `make bench` runs after the contract benchmark
    python -m benchmarks.v2 --smoke --output /tmp/bench   # seconds; checks the harness works

Both servers serve the same kind of model (a logistic regression fitted on the same split of
the bundled iris data), loaded once, in one process pinned to the server CPU, with wrk on the
other. Each round starts both afresh, in an order that alternates, and measures single flowers
and 1,000-row batches in V2 JSON on both, and 1,000-row batches as binary tensors on this
service (MLServer does not implement the binary extension). On this service the same flower is
also sent to `/iris/classify_iris`, right beside the V2 single flower on the same server process
(which of the two goes first alternates by round), so the two routes are compared under the same
conditions. After its loads, each server's resident memory is taken, summed over its process
tree (for this service: one replica, the arbiter and its worker). Ratios are medians of the
ratios within each round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from harness import cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.loadgen import WrkResult, add_load_arguments, run_wrk
from benchmarks.measure import SERVER_LOG_DIR
from harness.cpus import add_pinning_arguments, resolve_pinning
from harness.processes import (
    REPO_ROOT,
    bentoml_serve_command,
    free_port,
    running_on_free_port,
    tree_memory_bytes,
)
from iris_classifier.flowers import FEATURE_NAMES

logger = logging.getLogger("benchmarks.v2")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MLSERVER_VENV_VARIABLE = "BENCH_MLSERVER_VENV"
MLSERVER_REPOSITORY_VARIABLE = "BENCH_MLSERVER_REPOSITORY"
MODEL = "iris_classifier"
# Feature ranges of the iris data; the flowers are a fixed pseudo-random spread over them.
LOW = np.array([4.3, 2.0, 1.0, 0.1])
HIGH = np.array([7.9, 4.4, 6.9, 2.5])
INFER_PATH = f"/v2/models/{MODEL}/infer"
SEED_SINGLE_PATH = "/iris/classify_iris"
# One replica's resident memory after the load, arbiter and worker summed (RSS, MB).
REPLICA_RSS_TARGET_MB = 200.0


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str = "application/json"
    header_length: int | None = None
    url_path: str = INFER_PATH


@dataclass(frozen=True)
class V2Server:
    name: str
    description: str
    command: Callable[[int], list[str]]
    input_name: str
    probabilities_output: str
    binary: bool
    # Also serves the single flower on SEED_SINGLE_PATH, to be measured beside V2.
    seed_routes: bool = False


def flowers(rows: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    return np.round(rng.uniform(LOW, HIGH, size=(rows, 4)), 2).astype(np.float32)


def json_body(server: V2Server, rows: int) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": server.input_name,
                    "datatype": "FP32",
                    "shape": [rows, 4],
                    "data": flowers(rows).tolist(),
                }
            ],
            "outputs": [{"name": server.probabilities_output}],
        }
    ).encode()


def seed_single_body() -> bytes:
    """The V2 single flower, as the `/iris/classify_iris` route takes it."""
    return json.dumps(dict(zip(FEATURE_NAMES, flowers(1)[0].tolist(), strict=True))).encode()


def binary_body(server: V2Server, rows: int) -> tuple[bytes, int]:
    raw = flowers(rows).astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": server.input_name,
                    "datatype": "FP32",
                    "shape": [rows, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": server.probabilities_output, "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, len(header)


def this_service() -> V2Server:
    return V2Server(
        name="bentoml",
        description="this service: `bentoml serve service:IrisClassifier`, V2 routes",
        command=bentoml_serve_command,
        input_name="flowers",
        probabilities_output="probabilities",
        binary=True,
        seed_routes=True,
    )


def mlserver() -> V2Server:
    venv = Path(os.environ.get(MLSERVER_VENV_VARIABLE, REPO_ROOT / "build" / "mlserver-venv"))
    repository = os.environ.get(
        MLSERVER_REPOSITORY_VARIABLE, str(REPO_ROOT / "build" / "benchmarks" / "mlserver")
    )

    def command(port: int) -> list[str]:
        return [
            "env",
            f"MLSERVER_HTTP_PORT={port}",
            f"MLSERVER_GRPC_PORT={free_port()}",
            f"MLSERVER_METRICS_PORT={free_port()}",
            "MLSERVER_HOST=127.0.0.1",
            str(venv / "bin" / "mlserver"),
            "start",
            repository,
        ]

    return V2Server(
        name="mlserver",
        description="MLServer 1.7.1 with mlserver-sklearn, `mlserver start` (no worker pool)",
        command=command,
        input_name="input-0",
        probabilities_output="predict_proba",
        binary=False,
    )


@dataclass(frozen=True)
class Measurement:
    server: str
    workload: str
    round_index: int
    rows: int
    result: WrkResult

    @property
    def flowers_per_second(self) -> float:
        return self.result.requests_per_second * self.rows


@dataclass(frozen=True)
class Memory:
    """A server's process tree after a round's loads."""

    server: str
    round_index: int
    processes: int
    rss_mb: float
    pss_mb: float | None  # None where PSS cannot be read


def measure(
    server: V2Server, round_index: int, args: argparse.Namespace, work: Path, log_dir: Path
) -> tuple[list[Measurement], Memory]:
    workloads: list[tuple[str, int, Body]] = []
    for name, rows in (("single", 1), ("batch-json", args.batch_rows)):
        path = work / f"{server.name}-{name}.json"
        path.write_bytes(json_body(server, rows))
        workloads.append((name, rows, Body(path)))
    if server.seed_routes:
        path = work / f"{server.name}-seed-single.json"
        path.write_bytes(seed_single_body())
        seed = ("seed-single", 1, Body(path, url_path=SEED_SINGLE_PATH))
        # Beside the V2 single flower, first in every other round.
        workloads.insert(0 if round_index % 2 else 1, seed)
    if server.binary:
        raw, header_length = binary_body(server, args.batch_rows)
        path = work / f"{server.name}-batch-binary.bin"
        path.write_bytes(raw)
        workloads.append(
            ("batch-binary", args.batch_rows, Body(path, "application/octet-stream", header_length))
        )
    results = []
    with running_on_free_port(
        lambda port: ["taskset", "-c", args.server_cpus, *server.command(port)],
        ready_path="/v2/health/ready",
        log_path=log_dir / f"v2-{server.name}-round{round_index}.log",
        cwd=REPO_ROOT,
        timeout=120,
    ) as (process, base_url):
        for name, rows, body in workloads:
            script_env = {
                "BENCH_BODY_FILE": str(body.path),
                "BENCH_PATH": body.url_path,
                "BENCH_CONTENT_TYPE": body.content_type,
                "BENCH_HEADER_LENGTH": ""
                if body.header_length is None
                else str(body.header_length),
            }
            connections = args.connections if rows == 1 else args.batch_connections
            load = {"connections": connections, "cpus": args.load_cpus, "script_env": script_env}
            if args.warmup > 0:
                run_wrk(base_url, "post_file.lua", seconds=args.warmup, **load)
            result = run_wrk(base_url, "post_file.lua", seconds=args.seconds, **load)
            if result.failed:
                raise RuntimeError(f"{server.name} {name}: {result.failed} failed requests")
            results.append(Measurement(server.name, name, round_index, rows, result))
            logger.info(
                "round %d %-9s %-13s %8.0f req/s %10.0f flowers/s p99 %6.1f ms",
                round_index,
                server.name,
                name,
                result.requests_per_second,
                results[-1].flowers_per_second,
                result.p99_ms,
            )
        processes, rss, pss = tree_memory_bytes(process.pid)
        pss_mb = None if pss is None else pss / 1e6
        memory = Memory(server.name, round_index, processes, rss / 1e6, pss_mb)
        logger.info(
            "round %d %-9s after the load: %d processes, RSS %.0f MB, PSS %s MB",
            round_index,
            server.name,
            processes,
            memory.rss_mb,
            "n/a" if pss_mb is None else f"{pss_mb:.0f}",
        )
    return results, memory


# (label, this service's workload, MLServer's workload, target ratio)
RATIOS = (
    ("single flower, V2 JSON", "single", "single", 2.0),
    ("1,000-row batch, V2 JSON", "batch-json", "batch-json", 2.0),
    ("1,000-row batch, binary vs MLServer's JSON", "batch-binary", "batch-json", 3.0),
)


def paired_ratios(measurements: list[Measurement]) -> dict[str, list[float]]:
    by_key = {(m.server, m.workload, m.round_index): m for m in measurements}
    rounds = sorted({m.round_index for m in measurements})
    ratios: dict[str, list[float]] = {}
    for label, ours, theirs, _ in RATIOS:
        ratios[label] = [
            by_key["bentoml", ours, r].flowers_per_second
            / by_key["mlserver", theirs, r].flowers_per_second
            for r in rounds
            if ("bentoml", ours, r) in by_key and ("mlserver", theirs, r) in by_key
        ]
    return ratios


# The V2 single flower against the same flower on the seed route, on the same server process.
ROUTE_RATIO_LABEL = "single flower: V2 JSON / `/iris/classify_iris`, same server"
ROUTE_RATIO_TARGET = 0.95


def route_ratios(measurements: list[Measurement]) -> list[float]:
    by_key = {(m.server, m.workload, m.round_index): m for m in measurements}
    return [
        by_key["bentoml", "single", r].flowers_per_second
        / by_key["bentoml", "seed-single", r].flowers_per_second
        for r in sorted({m.round_index for m in measurements})
        if ("bentoml", "single", r) in by_key and ("bentoml", "seed-single", r) in by_key
    ]


def verdict_row(
    label: str, values: list[float], target: float, *, every_round: bool = False
) -> str:
    """A target judged on the median of the rounds' ratios or, `every_round`, on each of them."""
    aim = f"{target:g}x every round" if every_round else f"{target:g}x"
    if not values:
        return f"| {label} | n/a | | {aim} | not measured |"
    median = statistics.median(values)
    verdict = "met" if (min(values) if every_round else median) >= target else "missed"
    shown = ", ".join(f"{v:.2f}" for v in values)
    return f"| {label} | {median:.2f}x | {shown} | {aim} | {verdict} |"


def memory_lines(memory: list[Memory]) -> list[str]:
    lines = [
        "| server | processes | RSS MB after the load, median | rounds | PSS MB, median | target |",
        "|---|---:|---:|---|---:|---|",
    ]
    for server in dict.fromkeys(m.server for m in memory):
        samples = [m for m in memory if m.server == server]
        rss = statistics.median(m.rss_mb for m in samples)
        target = ""
        if server == "bentoml":
            verdict = "met" if rss <= REPLICA_RSS_TARGET_MB else "missed"
            target = f"<= {REPLICA_RSS_TARGET_MB:.0f} MB: {verdict}"
        pss = [m.pss_mb for m in samples if m.pss_mb is not None]
        lines.append(
            f"| {server} | {max(m.processes for m in samples)} | {rss:.0f} "
            f"| {', '.join(f'{m.rss_mb:.0f}' for m in samples)} "
            f"| {f'{statistics.median(pss):.0f}' if pss else 'n/a'} | {target} |"
        )
    return lines


def render_markdown(
    measurements: list[Measurement],
    servers: list[V2Server],
    command: str,
    memory: list[Memory] | None = None,
) -> str:
    lines = [
        "# Open Inference Protocol: this service and MLServer",
        "",
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with `{command}`; "
        f"medians over {len({m.round_index for m in measurements})} rounds.",
        "",
        *(f"- `{server.name}`: {server.description}" for server in servers),
        "",
        "| server | workload | req/s | flowers/s | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.server, m.workload), []).append(m)
    for (server, workload), group in groups.items():
        lines.append(
            f"| {server} | {workload} "
            f"| {statistics.median(m.result.requests_per_second for m in group):,.0f} "
            f"| {statistics.median(m.flowers_per_second for m in group):,.0f} "
            f"| {statistics.median(m.result.p50_ms for m in group):.1f} "
            f"| {statistics.median(m.result.p99_ms for m in group):.1f} |"
        )
    lines += [
        "",
        "| ratio to MLServer (paired per round) | median | rounds | target | verdict |",
        "|---|---:|---|---:|---|",
    ]
    for label, values in paired_ratios(measurements).items():
        target = next(t for name, *_, t in RATIOS if name == label)
        lines.append(verdict_row(label, values, target))
    lines += [
        "",
        "| this service's routes (paired per round) | median | rounds | target | verdict |",
        "|---|---:|---|---:|---|",
        verdict_row(
            ROUTE_RATIO_LABEL, route_ratios(measurements), ROUTE_RATIO_TARGET, every_round=True
        ),
    ]
    if memory:
        lines += ["", *memory_lines(memory)]
    return "\n".join(lines) + "\n"


def render_chart(measurements: list[Measurement], path: Path) -> None:
    labels = [label for label, *_ in RATIOS]
    ratios = paired_ratios(measurements)
    figure, axes = plt.subplots(figsize=(9, 3.8))
    medians = [statistics.median(ratios[label]) if ratios[label] else 0 for label in labels]
    axes.barh(labels, medians, color="#4c72b0")
    for index, label in enumerate(labels):
        axes.plot(ratios[label], [index] * len(ratios[label]), "k.", alpha=0.6)
        target = RATIOS[index][3]
        axes.plot([target, target], [index - 0.4, index + 0.4], "r-", linewidth=2)
    axes.axvline(1, color="grey", linewidth=1)
    axes.set_xlabel(
        "this service / MLServer 1.7.1 (flowers per second; bar: median, dots: rounds, red: target)"
    )
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.parser("benchmarks.v2", __doc__.splitlines()[0])
    add_load_arguments(
        parser, rounds=4, seconds=8, warmup_help="warm-up before each load, in seconds"
    )
    add_pinning_arguments(parser)
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR,
        help="directory the results, tables and charts are written to (default: benchmarks/results)",
    )
    parser.add_argument(
        "--servers", default="bentoml,mlserver", help="comma-separated: bentoml, mlserver"
    )
    parser.add_argument("--smoke", action="store_true", help="one short round: checks the harness")
    args = parser.parse_args(argv)
    resolve_pinning(parser, args)
    if args.smoke:
        args.rounds, args.seconds, args.warmup = 1, 1, 0
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    chosen = args.servers.split(",")
    servers = [server for server in (this_service(), mlserver()) if server.name in chosen]
    args.output.mkdir(parents=True, exist_ok=True)
    SERVER_LOG_DIR.mkdir(parents=True, exist_ok=True)
    measurements: list[Measurement] = []
    memory: list[Memory] = []
    with tempfile.TemporaryDirectory(prefix="bench-v2-") as work:
        for round_index in range(1, args.rounds + 1):
            order = servers if round_index % 2 else servers[::-1]
            for server in order:
                results, after = measure(server, round_index, args, Path(work), SERVER_LOG_DIR)
                measurements += results
                memory.append(after)
    command = os.environ.get("BENCH_COMMAND", "python -m benchmarks.v2")
    report = render_markdown(measurements, servers, command, memory)
    (args.output / "v2.md").write_text(report)
    (args.output / "v2-memory.json").write_text(
        json.dumps(
            [
                {
                    "server": m.server,
                    "round": m.round_index,
                    "processes": m.processes,
                    "rss_mb": m.rss_mb,
                    "pss_mb": m.pss_mb,
                }
                for m in memory
            ],
            indent=1,
        )
        + "\n"
    )
    (args.output / "v2.json").write_text(
        json.dumps(
            [
                {
                    "server": m.server,
                    "workload": m.workload,
                    "round": m.round_index,
                    "rows": m.rows,
                    "rps": m.result.requests_per_second,
                    "p50_ms": m.result.p50_ms,
                    "p99_ms": m.result.p99_ms,
                }
                for m in measurements
            ],
            indent=1,
        )
        + "\n"
    )
    if any(paired_ratios(measurements).values()):
        render_chart(measurements, args.output / "v2.png")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
