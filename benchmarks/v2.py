"""The Open Inference Protocol side by side: this service against MLServer 1.7.1.

    python -m benchmarks.v2                   # what `make bench` runs after the contract benchmark
    python -m benchmarks.v2 --smoke --output /tmp/bench   # seconds; checks the harness works

Both servers serve the same kind of model (a logistic regression fitted on the same split of
the bundled iris data), loaded once, in one process pinned to the server CPU, with wrk on the
other. Each round starts both afresh, in an order that alternates, and measures single flowers
and 1,000-row batches in V2 JSON on both, and 1,000-row batches as binary tensors on this
service (MLServer does not implement the binary extension). Ratios are medians of the ratios
within each round.
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

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.loadgen import WrkResult, run_wrk
from benchmarks.measure import SERVER_LOG_DIR
from benchmarks.processes import (
    REPO_ROOT,
    bentoml_serve_command,
    free_port,
    start,
    stop_tree,
    wait_http_ok,
)

logger = logging.getLogger("benchmarks.v2")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MLSERVER_VENV_VARIABLE = "BENCH_MLSERVER_VENV"
MLSERVER_REPOSITORY_VARIABLE = "BENCH_MLSERVER_REPOSITORY"
MODEL = "iris_classifier"
# Feature ranges of the iris data; the flowers are a fixed pseudo-random spread over them.
LOW = np.array([4.3, 2.0, 1.0, 0.1])
HIGH = np.array([7.9, 4.4, 6.9, 2.5])


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str = "application/json"
    header_length: int | None = None


@dataclass(frozen=True)
class V2Server:
    name: str
    description: str
    command: Callable[[int], list[str]]
    input_name: str
    probabilities_output: str
    binary: bool


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


def measure(
    server: V2Server, round_index: int, args: argparse.Namespace, work: Path, log_dir: Path
) -> list[Measurement]:
    workloads: list[tuple[str, int, Body]] = []
    for name, rows in (("single", 1), ("batch-json", args.batch_rows)):
        path = work / f"{server.name}-{name}.json"
        path.write_bytes(json_body(server, rows))
        workloads.append((name, rows, Body(path)))
    if server.binary:
        raw, header_length = binary_body(server, args.batch_rows)
        path = work / f"{server.name}-batch-binary.bin"
        path.write_bytes(raw)
        workloads.append(
            ("batch-binary", args.batch_rows, Body(path, "application/octet-stream", header_length))
        )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = ["taskset", "-c", args.server_cpus, *server.command(port)]
    process = start(
        command,
        log_path=log_dir / f"v2-{server.name}-round{round_index}.log",
        cwd=REPO_ROOT,
    )
    results = []
    try:
        wait_http_ok(f"{base_url}/v2/health/ready", timeout=120, process=process)
        for name, rows, body in workloads:
            script_env = {
                "BENCH_BODY_FILE": str(body.path),
                "BENCH_PATH": f"/v2/models/{MODEL}/infer",
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
    finally:
        stop_tree(process.pid)
    return results


# (label, this service's workload, MLServer's workload, target ratio)
RATIOS = (
    ("single flower, V2 JSON", "single", "single", 1.5),
    ("1,000-row batch, V2 JSON", "batch-json", "batch-json", 1.5),
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


def render_markdown(measurements: list[Measurement], servers: list[V2Server], command: str) -> str:
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
        shown = ", ".join(f"{v:.2f}" for v in values)
        if values:
            median = statistics.median(values)
            verdict = "met" if median >= target else "missed"
            lines.append(f"| {label} | {median:.2f}x | {shown} | {target:.1f}x | {verdict} |")
        else:
            lines.append(f"| {label} | n/a | | {target:.1f}x | not measured |")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8, help="length of each measured load")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=16, help="for single flowers")
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--servers", default="bentoml,mlserver", help="comma-separated: bentoml, mlserver"
    )
    parser.add_argument("--smoke", action="store_true", help="one short round: checks the harness")
    args = parser.parse_args(argv)
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
    with tempfile.TemporaryDirectory(prefix="bench-v2-") as work:
        for round_index in range(1, args.rounds + 1):
            order = servers if round_index % 2 else servers[::-1]
            for server in order:
                measurements += measure(server, round_index, args, Path(work), SERVER_LOG_DIR)
    command = os.environ.get("BENCH_COMMAND", "python -m benchmarks.v2")
    (args.output / "v2.md").write_text(render_markdown(measurements, servers, command))
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
    print(render_markdown(measurements, servers, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
