"""Where a single-flower request's CPU goes: py-spy samples the serving worker under wrk, and
each sample's innermost frame is put in a layer (metrics, logging, the HTTP server, the model,
...). The table gives each layer's share of the samples, the self time a layer costs.

    python -m benchmarks.hot_path_profile --output build/profile

py-spy is not a dependency of the project: `pip install py-spy` (it needs to ptrace the worker:
root, or `kernel.yama.ptrace_scope` 0). The server runs on `--server-cpus`, wrk on
`--load-cpus`, as in `make bench`; the model is the one `BENTOML_HOME` holds (`make model`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from benchmarks.loadgen import WrkResult, run_wrk
from harness import cli
from harness.processes import bentoml_serve_command, process_tree, running_on_free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# (layer, pattern on the innermost frame's file), first match wins; the order matters where
# the service's own modules are named for a job another layer also does.
LAYERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (layer, re.compile(pattern))
    for layer, pattern in (
        ("metrics: prometheus_client", r"prometheus_client/"),
        (
            "metrics: the service's",
            r"iris_classifier/serving/(?:\w+/)?(metric_buffer|metrics|request_metrics|drift)\.py",
        ),
        (
            "logging and the access line",
            r"(/logging/|iris_classifier/serving/(?:\w+/)?(logs|line_writer|prediction_log)\.py)",
        ),
        # joined_writes.py holds a response's head for uvicorn and writes it to the socket.
        (
            "HTTP server: uvicorn, uvloop, httptools, socket writes",
            r"(uvicorn/|uvloop/|httptools/|iris_classifier/serving/http/joined_writes\.py)",
        ),
        ("the model: ONNX Runtime", r"onnxruntime/"),
        ("pydantic", r"pydantic"),
        ("the service's edge, routes and predictor", r"iris_classifier/"),
        (
            "BentoML, Starlette and OpenTelemetry",
            r"(bentoml/|_bentoml_impl/|_bentoml_sdk/|starlette/|opentelemetry/)",
        ),
        ("asyncio", r"/asyncio/"),
        ("NumPy", r"numpy/"),
    )
)
OTHER = "other (the interpreter, threads, the rest of the standard library)"
# py-spy's raw format: frames outermost first, separated by ";", then the sample count.
FRAME_FILE = re.compile(r"\((?P<file>[^()]*?):\d+\)$")


def layer_of(frame: str) -> str:
    match = FRAME_FILE.search(frame)
    where = match.group("file") if match else frame
    for layer, pattern in LAYERS:
        if pattern.search(where):
            return layer
    return OTHER


def self_time_by_layer(collapsed: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """Samples per layer and per innermost frame, from py-spy's collapsed stacks."""
    layers: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    for line in collapsed:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit() or count == "0":
            continue
        innermost = stack.rsplit(";", 1)[-1]
        layers[layer_of(innermost)] += int(count)
        frames[innermost] += int(count)
    return layers, frames


def service_roots(frames: Iterable[str]) -> set[str]:
    """The directories the service's own frames were loaded from: which checkout was served."""
    roots = set()
    for frame in frames:
        match = FRAME_FILE.search(frame)
        if match and (cut := match.group("file").find("iris_classifier/")) >= 0:
            roots.add(match.group("file")[:cut] or ".")
    return roots


def render(
    layers: Counter[str],
    frames: Counter[str],
    title: str,
    *,
    requests_per_second: float,
    top: int = 15,
) -> str:
    """Shares of the samples; and, since the worker keeps its CPU busy under the load, each
    share of 1 / (requests a second) as the layer's CPU per request."""
    total = sum(layers.values())
    if not total:
        raise ValueError("py-spy recorded no sample of the worker")
    us_per_request = 1e6 / requests_per_second
    lines = [
        f"# {title}",
        "",
        f"{total:,} samples of the worker's Python threads at {requests_per_second:,.0f} "
        f"requests a second ({us_per_request:.0f} us each); the service's code was loaded from "
        f"{', '.join(sorted(service_roots(frames))) or 'nowhere sampled'}.",
        "",
        "| layer | self time | us per request |",
        "| --- | ---: | ---: |",
        *(
            f"| {layer} | {count / total:.1%} | {count / total * us_per_request:.1f} |"
            for layer, count in layers.most_common()
        ),
        "",
        f"The {top} innermost frames that cost the most:",
        "",
        "| frame | self time |",
        "| --- | ---: |",
        *(
            f"| `{frame.replace('|', '/')}` | {count / total:.1%} |"
            for frame, count in frames.most_common(top)
        ),
    ]
    return "\n".join(lines) + "\n"


def busiest_process(root_pid: int, seconds: float) -> int:
    """The process of the tree that used the most CPU over `seconds`: the worker under load."""
    before = {p.pid: sum(p.cpu_times()[:2]) for p in process_tree(root_pid)}
    time.sleep(seconds)
    used = {p.pid: sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0) for p in process_tree(root_pid)}
    return max(used, key=used.__getitem__)


def profile(args: argparse.Namespace) -> str:
    py_spy = args.py_spy or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy, or give --py-spy PATH")
    load = {"connections": args.connections, "cpus": args.load_cpus}
    with running_on_free_port(
        lambda port: ["taskset", "-c", args.server_cpus, *bentoml_serve_command(port)],
        log_path=args.output / "serve.log",
        cwd=args.checkout,
        timeout=120,
    ) as (process, base_url):
        warm = threading.Thread(
            target=run_wrk, args=(base_url, "single.lua"), kwargs={"seconds": 4, **load}
        )
        warm.start()
        worker = busiest_process(process.pid, 2.0)
        warm.join()
        results: list[WrkResult] = []
        loaded = threading.Thread(
            target=lambda: results.append(
                run_wrk(base_url, "single.lua", seconds=args.seconds + 2, **load)
            )
        )
        loaded.start()
        time.sleep(1)
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as raw:
            command = [
                py_spy, "record", "--pid", str(worker), "--rate", str(args.rate),
                "--duration", str(args.seconds), "--format", "raw", "--nonblocking", "--full-filenames",
                "--output", raw.name,
            ]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True)
            layers, frames = self_time_by_layer(raw)
        loaded.join()
    if not results or results[0].failed:
        raise RuntimeError(f"the load failed: {results}")
    return render(
        layers,
        frames,
        f"Self time of a single-flower request: {args.checkout}",
        requests_per_second=results[0].requests_per_second,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.parser("benchmarks.hot_path_profile", (__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "build" / "profile",
        help="directory for profile.md and the server's log",
    )
    parser.add_argument(
        "--checkout", type=Path, default=REPO_ROOT, help="the code to serve (default: this one)"
    )
    parser.add_argument("--seconds", type=int, default=12, help="how long py-spy samples")
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--connections", type=int, default=8, help="wrk's connections")
    parser.add_argument("--server-cpus", default="0", help="CPUs the server is pinned to")
    parser.add_argument("--load-cpus", default="1", help="CPUs wrk is pinned to")
    parser.add_argument("--py-spy", help="py-spy's path (default: the one on PATH)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.output.mkdir(parents=True, exist_ok=True)
    args.checkout = args.checkout.resolve()
    report = profile(args)
    (args.output / "profile.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
