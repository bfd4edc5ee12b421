"""What one single-flower request costs, layer by layer, beside the least an ASGI app costs.

    python -m benchmarks.cpu_by_layer              # needs a stored model (make model)
    python -m benchmarks.cpu_by_layer --smoke      # a few seconds a step: checks the tool works

Two routes are measured, the same flower each way: `/iris/classify_iris` and V2 JSON infer.

In this process, as CPU time per call (best of --repeats runs of --calls calls, so that other
work on the machine counts as little as possible):

- parse + validate: the route's own parser of the body bytes;
- predictor: the `Predictor` call (the model, the range check, the model metrics);
- answer encoding: the answer written to JSON bytes;
- route table: the service's `RouteTable` called with ASGI messages (body read, dispatch, the
  three steps above, the answer sent), less the cost of the messages themselves;
- service middlewares: the service's whole ASGI app (every layer around the route table, the
  service's own and those BentoML keeps: request metrics, tracing, the request timeout, the
  slow-client bounds, the access line and request id), less the route table.

Over HTTP, as the CPU time of the server's process tree during a wrk load divided by the
requests it answered (server on --server-cpus, wrk on --load-cpus, as `make bench` runs them):
`bentoml serve` of the service, whose figure less the whole ASGI app is uvicorn and HTTP; and
the ceiling, `benchmarks/baselines/ceiling.py` on the same uvicorn, which parses the flower
and answers a fixed linear model's JSON (`make bench` runs the same app).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.loadgen import run_wrk
from benchmarks.measure import tree_cpu_seconds
from benchmarks.servers import CEILING
from harness import cli
from harness.cpus import add_pinning_arguments, resolve_pinning
from harness.processes import (
    REPO_ROOT,
    bentoml_serve_command,
    running_on_free_port,
)
from iris_classifier.flowers import FEATURE_NAMES, MODEL_NAME

logger = logging.getLogger("benchmarks.cpu_by_layer")

FLOWER = (5.1, 3.5, 1.4, 0.2)
SEED_PATH = "/iris/classify_iris"
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
SEED_BODY = json.dumps(dict(zip(FEATURE_NAMES, FLOWER, strict=True))).encode()
V2_BODY = json.dumps(
    {
        "inputs": [{"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": list(FLOWER)}],
        "outputs": [{"name": "probabilities"}],
    }
).encode()
ROUTES = (("seed", SEED_PATH, SEED_BODY), ("v2", V2_PATH, V2_BODY))


def best_cpu_us(run: Callable[[int], None], calls: int, repeats: int) -> float:
    """CPU microseconds per call of the fastest of `repeats` runs of `calls` calls."""
    timings = []
    for _ in range(repeats):
        started = time.process_time_ns()
        run(calls)
        timings.append((time.process_time_ns() - started) / calls / 1000)
    return min(timings)


def repeat(call: Callable[[], object]) -> Callable[[int], None]:
    def run(calls: int) -> None:
        for _ in range(calls):
            call()

    return run


# --- ASGI without a server ---------------------------------------------------------------------


def http_scope(path: str, body: bytes, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3000),
        "state": dict(state),
    }


class Exchange:
    """One request's receive and send, as a server would hand them to the app."""

    never = asyncio.Event()

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.read = False
        self.status: int | None = None
        self.answer = b""

    async def receive(self) -> dict[str, Any]:
        if not self.read:
            self.read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.answer += message.get("body", b"")


AsgiCall = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def asgi_runner(
    loop: asyncio.AbstractEventLoop, call: AsgiCall, path: str, body: bytes, state: dict[str, Any]
) -> Callable[[int], None]:
    async def many(calls: int) -> None:
        for _ in range(calls):
            exchange = Exchange(body)
            await call(http_scope(path, body, state), exchange.receive, exchange.send)
            if exchange.status != 200:
                raise RuntimeError(f"{path} answered {exchange.status}: {exchange.answer[:300]!r}")

    return lambda calls: loop.run_until_complete(many(calls))


async def null_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The messages alone: what the harness costs around any app."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class Lifespan:
    """Runs an ASGI app's lifespan startup in `loop`, and its shutdown on close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: AsgiCall) -> None:
        self.loop = loop
        self.state: dict[str, Any] = {}
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = loop.create_future()
        self.stopped = loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = loop.create_task(app(scope, self.messages.get, self.send))
        self.messages.put_nowait({"type": "lifespan.startup"})
        loop.run_until_complete(self.started)

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_exception(RuntimeError(message.get("message", "startup failed")))
        elif kind.startswith("lifespan.shutdown"):
            self.stopped.set_result(None)

    def close(self) -> None:
        self.messages.put_nowait({"type": "lifespan.shutdown"})
        self.loop.run_until_complete(asyncio.wait_for(self.stopped, 30))
        self.loop.run_until_complete(self.task)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """The process's stdout and stderr into `path`, as `bentoml serve` writes its log to a file:
    a log line per request is part of a request's cost, its terminal is not."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


# --- the layers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteCost:
    parse_us: float
    predictor_us: float
    encode_us: float
    route_table_us: float  # everything the table does for the request, the harness taken off
    app_us: float  # the service's whole ASGI app, the harness taken off
    http_us: float | None = None  # CPU per request of `bentoml serve` over HTTP

    @property
    def table_overhead_us(self) -> float:
        return self.route_table_us - self.parse_us - self.predictor_us - self.encode_us

    @property
    def middleware_us(self) -> float:
        return self.app_us - self.route_table_us

    @property
    def server_us(self) -> float | None:
        return None if self.http_us is None else self.http_us - self.app_us


def in_process_costs(calls: int, repeats: int) -> tuple[dict[str, RouteCost], float]:
    """Each route's in-process layers, and the harness's own cost per call."""
    import uvloop

    import service
    from iris_classifier.serving.protocols.contract import parse_flower
    from iris_classifier.serving.protocols.v2 import parse_request

    loop = uvloop.new_event_loop()  # what uvicorn runs the service on
    asyncio.set_event_loop(loop)
    app = service.IrisClassifier.to_asgi()
    lifespan = Lifespan(loop, app)
    try:
        table = service.routes
        served = table.served
        if served is None:
            raise RuntimeError("the service started without serving its model")
        predictor, protocol = served.predictor, served.protocol

        def measure(call: Callable[[int], None]) -> float:
            call(min(calls, 200))  # warm every cache first
            return best_cpu_us(call, calls, repeats)

        harness = measure(asgi_runner(loop, null_app, SEED_PATH, SEED_BODY, lifespan.state))

        def through(path: str, body: bytes) -> tuple[float, float]:
            async def table_call(scope: dict[str, Any], receive: Any, send: Any) -> None:
                await table(scope, receive, send, app)

            route = measure(asgi_runner(loop, table_call, path, body, lifespan.state))
            whole = measure(asgi_runner(loop, app, path, body, lifespan.state))
            return route - harness, whole - harness

        values = parse_flower(SEED_BODY)
        answer = predictor.classify(values)
        seed_table, seed_app = through(SEED_PATH, SEED_BODY)
        seed = RouteCost(
            parse_us=measure(repeat(lambda: parse_flower(SEED_BODY))),
            predictor_us=measure(repeat(lambda: predictor.classify(values))),
            encode_us=measure(repeat(lambda: orjson.dumps(answer))),
            route_table_us=seed_table,
            app_us=seed_app,
        )

        request, features = parse_request(V2_BODY, None)
        predictions = predictor.predict(features)
        v2_table, v2_app = through(V2_PATH, V2_BODY)
        v2 = RouteCost(
            parse_us=measure(repeat(lambda: parse_request(V2_BODY, None))),
            predictor_us=measure(repeat(lambda: predictor.predict(features))),
            encode_us=measure(repeat(lambda: protocol._answer(request, predictions))),
            route_table_us=v2_table,
            app_us=v2_app,
        )
    finally:
        lifespan.close()
        loop.close()
    return {"seed": seed, "v2": v2}, harness


# --- over HTTP ---------------------------------------------------------------------------------


def http_cost_us(
    command: Callable[[int], list[str]],
    ready_path: str,
    path: str,
    body: bytes,
    args: argparse.Namespace,
    log_path: Path,
) -> float:
    """CPU microseconds of the server's whole process tree per answered request under wrk."""
    with (
        running_on_free_port(
            lambda port: ["taskset", "-c", args.server_cpus, *command(port)],
            ready_path=ready_path,
            log_path=log_path,
            cwd=REPO_ROOT,
            timeout=120,
        ) as (process, base_url),
        tempfile.NamedTemporaryFile(suffix=".json") as body_file,
    ):
        body_file.write(body)
        body_file.flush()
        load = {
            "connections": args.connections,
            "cpus": args.load_cpus,
            "script_env": {"BENCH_BODY_FILE": body_file.name, "BENCH_PATH": path},
        }
        run_wrk(base_url, "post_file.lua", seconds=args.warmup, **load)
        costs = []
        for _ in range(args.http_rounds):
            cpu_before = tree_cpu_seconds(process.pid)
            result = run_wrk(base_url, "post_file.lua", seconds=args.seconds, **load)
            cpu = tree_cpu_seconds(process.pid) - cpu_before
            if result.failed:
                raise RuntimeError(f"{path}: {result.failed} failed requests")
            costs.append(cpu / result.requests * 1e6)
    return statistics.median(costs)


# --- the report --------------------------------------------------------------------------------


def render(costs: dict[str, RouteCost], harness_us: float, ceiling_us: float | None) -> str:
    seed, v2 = costs["seed"], costs["v2"]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    rows = [
        ("JSON parse + validate", seed.parse_us, v2.parse_us),
        ("predictor (model, range check, metrics)", seed.predictor_us, v2.predictor_us),
        ("answer encoding", seed.encode_us, v2.encode_us),
        ("route table (body read, dispatch, send)", seed.table_overhead_us, v2.table_overhead_us),
        ("service middlewares (BentoML, edge)", seed.middleware_us, v2.middleware_us),
        ("uvicorn, HTTP and the rest of `bentoml serve`", seed.server_us, v2.server_us),
        ("total: `bentoml serve`, CPU per request", seed.http_us, v2.http_us),
        ("ceiling: parse the flower, fixed model, same uvicorn", ceiling_us, ceiling_us),
    ]
    lines = [
        "| layer | `/iris/classify_iris` µs | V2 JSON infer µs |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {cell(a)} | {cell(b)} |" for name, a, b in rows),
        "",
        f"In-process figures exclude the synthetic ASGI messages, {harness_us:.1f} µs per call.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = cli.parser("benchmarks.cpu_by_layer", __doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="in-process calls per run")
    parser.add_argument("--repeats", type=int, default=7, help="in-process runs; the best counts")
    parser.add_argument(
        "--seconds", type=float, default=8, help="length of each HTTP load, in seconds"
    )
    parser.add_argument("--http-rounds", type=int, default=3, help="HTTP loads; the median counts")
    parser.add_argument(
        "--warmup", type=float, default=2, help="warm-up before each HTTP load, in seconds"
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    add_pinning_arguments(parser)
    parser.add_argument("--no-http", action="store_true", help="in-process layers only")
    parser.add_argument(
        "--output",
        type=Path,
        help="also write the table and figures to this directory (default: printed only)",
    )
    parser.add_argument("--smoke", action="store_true", help="a short run: checks the tool works")
    args = parser.parse_args(argv)
    resolve_pinning(parser, args)
    if args.smoke:
        args.calls, args.repeats, args.seconds, args.http_rounds, args.warmup = 300, 2, 1, 1, 0.5
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ceiling = None
    with tempfile.TemporaryDirectory(prefix="request-cost-") as logs:
        log_dir = Path(logs)
        logger.info("in-process layers: %d calls, best of %d", args.calls, args.repeats)
        with output_to(log_dir / "in-process.log"):
            costs, harness = in_process_costs(args.calls, args.repeats)
        if not args.no_http:
            for name, path, body in ROUTES:
                logger.info("over HTTP: %s", path)
                http = http_cost_us(
                    bentoml_serve_command, "/readyz", path, body, args, log_dir / f"{name}.log"
                )
                costs[name] = RouteCost(**{**costs[name].__dict__, "http_us": http})
            logger.info("over HTTP: the ceiling")
            ceiling = http_cost_us(
                CEILING.command,
                CEILING.ready_path,
                SEED_PATH,
                SEED_BODY,
                args,
                log_dir / "ceiling.log",
            )
    table = render(costs, harness, ceiling)
    print(table)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "request-cost.md").write_text(table)
        figures = {name: {**cost.__dict__} for name, cost in costs.items()}
        document = {"routes": figures, "harness_us": harness, "ceiling_us": ceiling}
        (args.output / "request-cost.json").write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
