"""The outermost layer (iris_classifier/serving/http/edge.py) and the drain (serving/shutdown.py).

A small service of its own carries the edge layer and a drain the tests can start and end. An
error no layer inside handles (500) is made in the real service's stack (`service_client`);
the request timeout (504) on a live server, in tests/test_service_live.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import bentoml
import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from iris_classifier.serving.http.edge import RequestTimeout, add_edge
from iris_classifier.serving.http.shutdown import Drain

TIMEOUT_S = 1


class Pause(BaseModel):
    seconds: float


# No metrics: the service under test registers the same Prometheus series in this process.
@bentoml.service(traffic={"timeout": TIMEOUT_S}, metrics={"enabled": False})
class Slow:
    @bentoml.api
    async def wait(self, pause: Pause, /) -> str:
        await asyncio.sleep(pause.seconds)
        return "done"


DRAIN = Drain(seconds=0)
add_edge(Slow, served_by="edge-replica", drain=DRAIN)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(Slow.to_asgi(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def draining() -> Iterator[Drain]:
    DRAIN.started_at = time.monotonic()  # as the SIGTERM handler starts it
    yield DRAIN
    DRAIN.started_at = None


def marked(response, request_id: str | None = None) -> None:
    assert response.headers["x-served-by"] == "edge-replica"
    if request_id is None:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    else:
        assert response.headers["x-request-id"] == request_id


def test_an_answer_carries_the_replica_and_the_clients_request_id(client: TestClient) -> None:
    response = client.post("/wait", json={"seconds": 0}, headers={"X-Request-ID": "abc-1"})
    assert response.status_code == 200
    marked(response, "abc-1")
    assert "connection" not in response.headers


def test_the_request_timeout_answers_504_with_both_headers(client: TestClient) -> None:
    response = client.post("/wait", json={"seconds": TIMEOUT_S + 1}, headers={"X-Request-ID": "t"})
    assert response.status_code == 504
    marked(response, "t")
    reason = f"not answered within the request timeout of {TIMEOUT_S} s"
    assert response.json() == {
        "error": reason,
        "detail": [{"field": "request", "reason": reason, "type": "gateway_timeout"}],
    }


class TimerLog:
    """The timers a loop schedules from now on, recorded through its public `call_at`, which
    `call_later`, `asyncio.sleep` and `asyncio.timeout` all go through."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handles: list[asyncio.TimerHandle] = []
        schedule = loop.call_at

        def call_at(when, callback, *args, context=None) -> asyncio.TimerHandle:
            handle = schedule(when, callback, *args, context=context)
            self.handles.append(handle)
            return handle

        loop.call_at = call_at  # type: ignore[method-assign]

    def due(self) -> int:
        """Timers neither cancelled nor run yet."""
        now = self.loop.time()
        return sum(not handle.cancelled() and handle.when() > now for handle in self.handles)


def run_requests(layer: RequestTimeout, count: int) -> tuple[list[int], int]:
    """Statuses of `count` requests through `layer`, and the timers still due in the loop."""
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def main() -> int:
        timers = TimerLog(asyncio.get_running_loop())
        for _ in range(count):
            await layer({"type": "http", "path": "/", "method": "GET"}, receive, send)
        return timers.due()

    return statuses, asyncio.run(main())


def timers_while_bodies_pend(layer_class: type, count: int) -> int:
    """The timers due in the loop while `count` requests through a timeout layer of 60 s have
    started their answers and all wait to send their bodies."""

    async def main() -> int:
        timers = TimerLog(asyncio.get_running_loop())
        started: list[bool] = []
        all_started, release = asyncio.Event(), asyncio.Event()

        async def body_later(scope, receive, send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            started.append(True)
            if len(started) == count:
                all_started.set()
            await release.wait()
            await send({"type": "http.response.body", "body": b"ok"})

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        layer = layer_class(body_later, 60)
        scope = {"type": "http", "path": "/", "method": "GET"}
        requests = [asyncio.create_task(layer(scope, receive, send)) for _ in range(count)]
        await asyncio.wait_for(all_started.wait(), 10)
        due = timers.due()
        release.set()
        await asyncio.gather(*requests)
        return due

    return asyncio.run(main())


def test_the_request_timeout_leaves_no_timer_behind_an_answer() -> None:
    """Each request's timer goes when its answer starts, not when its body ends nor `seconds`
    later. BentoML's layer, which the service's replaces, keeps one per request: the negative
    control that shows the count can see them."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert timers_while_bodies_pend(RequestTimeout, 50) == 0
    assert timers_while_bodies_pend(TimeoutMiddleware, 50) == 50


def test_the_request_timeout_cancels_an_application_that_does_not_answer() -> None:
    cancelled = []

    async def stuck(scope, receive, send) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    statuses, timers = run_requests(RequestTimeout(stuck, seconds=0.05), 2)
    assert statuses == [504, 504]
    assert cancelled == [True, True]
    assert timers == 0


def test_the_request_timeout_ends_when_the_answer_starts() -> None:
    """An answer begun in time is not cut, however long its body takes."""
    bodies = []

    async def slow_body(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b"late"})
        bodies.append(b"late")

    statuses, timers = run_requests(RequestTimeout(slow_body, seconds=0.05), 1)
    assert (statuses, bodies, timers) == ([200], [b"late"], 0)


def test_each_request_has_its_own_time_under_the_shared_timer() -> None:
    """An older request timing out neither cuts a younger one short nor leaves it untimed."""
    seconds = 0.3
    outcomes: dict[str, tuple[int, float]] = {}

    async def app(scope, receive, send) -> None:
        await asyncio.sleep(scope["answer_after"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    layer = RequestTimeout(app, seconds=seconds)

    async def request(name: str, start_after: float, answer_after: float) -> None:
        await asyncio.sleep(start_after)
        started = time.monotonic()

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                outcomes[name] = (message["status"], time.monotonic() - started)

        scope = {"type": "http", "path": "/", "method": "GET", "answer_after": answer_after}
        await layer(scope, receive, send)

    async def main() -> int:
        timers = TimerLog(asyncio.get_running_loop())
        await asyncio.gather(
            request("old, stuck", 0, 60),
            request("young, answers after the old one's deadline", 0.15, 0.25),
            request("young, stuck", 0.15, 60),
        )
        return timers.due()

    due = asyncio.run(main())
    assert {name: status for name, (status, _) in outcomes.items()} == {
        "old, stuck": 504,
        "young, answers after the old one's deadline": 200,
        "young, stuck": 504,
    }
    assert outcomes["young, stuck"][1] >= seconds
    assert due == 0


def test_the_request_timeout_lets_another_cancellation_through() -> None:
    """A request cancelled for another reason (the server stopping it) is not answered 504."""
    statuses: list[int] = []

    async def stuck(scope, receive, send) -> None:
        await asyncio.sleep(60)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def main() -> bool:
        layer = RequestTimeout(stuck, seconds=60)
        task = asyncio.create_task(
            layer({"type": "http", "path": "/", "method": "GET"}, receive, send)
        )
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main())
    assert statuses == []


def test_the_request_timeout_lets_the_applications_own_timeout_error_through() -> None:
    async def raises(scope, receive, send) -> None:
        raise TimeoutError("the application's own")

    with pytest.raises(TimeoutError, match="the application's own"):
        run_requests(RequestTimeout(raises, seconds=60), 1)


def real_service():
    """service.py, imported once a model is stored (the `service_client` fixture's module)."""
    import service

    return service


def test_an_unhandled_error_in_the_real_service_carries_both_headers_and_is_logged(
    service_client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A model that raises, under every layer of the service: nothing inside answers, and the
    edge layer's 500 still carries the replica and the request id, and the error is logged
    with that id beside the access line."""
    from iris_classifier.onnx_model import OnnxClassifier
    from iris_classifier.serving.telemetry.logs import JsonLineFormatter
    from tests.conftest import SEED_FLOWER

    def broken(self, features):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(OnnxClassifier, "predict_proba_one", broken)
    started = time.monotonic()
    # Formatted as they are emitted, as a replica writes them, where the request's context is.
    as_written = FormattedLines()
    logging.getLogger().addHandler(as_written)
    try:
        with caplog.at_level(logging.INFO):
            response = service_client.post(
                "/iris/classify_iris", json=SEED_FLOWER, headers={"X-Request-ID": "boom-1"}
            )
    finally:
        logging.getLogger().removeHandler(as_written)
    waited = time.monotonic() - started
    assert response.status_code == 500
    # BentoML's timeout layer held such an error back until its timer ran out.
    timeout = real_service().IrisClassifier.config["traffic"]["timeout"]
    assert waited < timeout, (
        f"the 500 came after {waited:.1f} s: when the {timeout} s timeout ended"
    )
    assert response.json() == {
        "error": "internal server error",
        "detail": [
            {"field": "request", "reason": "internal server error", "type": "internal_server_error"}
        ],
    }
    assert response.headers["x-request-id"] == "boom-1"
    assert response.headers["x-served-by"] == real_service().settings.served_by
    lines = [json.loads(JsonLineFormatter("r").format(rec)) for rec in caplog.records]
    access = [line for line in lines if line.get("status") == 500]
    assert [(line["request_id"], line["path"]) for line in access] == [
        ("boom-1", "/iris/classify_iris")
    ]
    # The error itself, its traceback's end included, on a line of the request it broke.
    errors = [
        line
        for line in as_written.lines
        if "RuntimeError: the model broke" in line.get("error", "")
    ]
    assert errors, f"the model's error is not logged: {as_written.lines}"
    assert [(line.get("request_id"), line["level"]) for line in errors] == [
        ("boom-1", "ERROR")
    ] * len(errors), errors


def test_every_request_gets_one_access_line_with_status_and_duration(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="iris_classifier.access"):
        client.post("/wait", json={"seconds": 0}, headers={"X-Request-ID": "one-line"})
    (access,) = [rec for rec in caplog.records if rec.name == "iris_classifier.access"]
    assert access.status == 200
    assert access.duration_ms >= 0


def test_draining_answers_readiness_503_and_closes_every_connection(
    client: TestClient, draining: Drain
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["connection"] == "close"
    marked(ready)
    served = client.post("/wait", json={"seconds": 0})
    assert served.status_code == 200, "requests are still served while draining"
    assert served.headers["connection"] == "close"
    assert client.get("/livez").status_code == 200, "liveness must not restart a draining pod"


def test_not_draining_readiness_is_bentomls(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200


class FormattedLines(logging.Handler):
    """Formats each record as it is emitted, in the context the log call runs in."""

    def __init__(self) -> None:
        from iris_classifier.serving.telemetry.logs import JsonLineFormatter

        super().__init__()
        self.setFormatter(JsonLineFormatter("r"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_sigterm_starts_the_drain_and_hands_over_after_it() -> None:
    """In a thread of its own the drain installs its handler as a server's main thread would.

    The signal arrives while a request is being handled; the drain's lines are no request's.
    """
    from iris_classifier.serving.http.request_context import CURRENT_REQUEST, RequestContext

    handed_over = threading.Event()
    drain = Drain(seconds=0.2)
    outcome: dict[str, object] = {}
    lines = FormattedLines()
    shutdown_logger = logging.getLogger("iris_classifier.shutdown")
    shutdown_logger.addHandler(lines)
    level = shutdown_logger.level
    shutdown_logger.setLevel(logging.INFO)

    def main() -> None:
        loop = asyncio.new_event_loop()
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: handed_over.set())
        in_flight = CURRENT_REQUEST.set(RequestContext("in-flight-1", "POST", "/iris/x"))
        try:
            outcome["installed"] = drain.install(loop)
            os.kill(os.getpid(), signal.SIGTERM)
            loop.run_until_complete(asyncio.sleep(0.05))
            outcome["draining_at_once"] = drain.active and not handed_over.is_set()
            loop.run_until_complete(asyncio.sleep(0.4))
        finally:
            CURRENT_REQUEST.reset(in_flight)
            signal.signal(signal.SIGTERM, previous)
            shutdown_logger.removeHandler(lines)
            shutdown_logger.setLevel(level)
            loop.close()

    # Signal handlers can only be set in the main thread: run the scenario there.
    assert threading.current_thread() is threading.main_thread()
    main()
    assert outcome == {"installed": True, "draining_at_once": True}
    assert handed_over.is_set(), "the server's own handler must run once the drain is over"
    messages = [line["message"] for line in lines.lines]
    assert any(message.startswith("SIGTERM: draining for 0.2 s") for message in messages)
    assert any(message.startswith("drain over after") for message in messages)
    for line in lines.lines:
        assert not {"request_id", "method", "path"} & set(line), line


def test_no_drain_leaves_sigterm_to_the_server() -> None:
    before = signal.getsignal(signal.SIGTERM)
    loop = asyncio.new_event_loop()
    try:
        assert Drain(seconds=0).install(loop) is False
    finally:
        loop.close()
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_real_stack_answers_errors_in_front_only(service_client: TestClient) -> None:
    """ErrorShape answers an error once, in front; Starlette's plain-text error layer, which
    answered it first to have it reshaped, is no longer in the stack."""
    from starlette.middleware.errors import ServerErrorMiddleware

    from iris_classifier.serving import seam
    from iris_classifier.serving.http.edge import ErrorShape

    stack = seam.layers(service_client.app.middleware_stack)  # type: ignore[attr-defined]
    assert [type(layer) for layer in stack].count(ErrorShape) == 1
    assert not [layer for layer in stack if type(layer) is ServerErrorMiddleware]


def test_each_layer_of_the_real_stack_runs_once_per_request(
    service_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the service's stack as BentoML builds it and the seam rewrites it at startup: each
    of our layers, and the ones put in BentoML's places, handles a request exactly once."""
    from iris_classifier.serving.http import edge, routes, slow_clients
    from iris_classifier.serving.telemetry import request_metrics
    from tests.conftest import SEED_FLOWER

    layer_classes = [
        edge.RequestLog,
        edge.Draining,
        edge.ErrorShape,
        edge.RequestTimeout,
        request_metrics.RequestMetrics,
        slow_clients.SlowClients,
        routes.RouteMiddleware,
    ]
    calls: dict[str, int] = {}

    def counting(layer_class):
        call = layer_class.__call__

        async def counted(self, scope, receive, send) -> None:
            if scope["type"] == "http":
                calls[layer_class.__name__] = calls.get(layer_class.__name__, 0) + 1
            await call(self, scope, receive, send)

        return counted

    for layer_class in layer_classes:
        monkeypatch.setattr(layer_class, "__call__", counting(layer_class))
    response = service_client.post("/iris/classify_iris", json=SEED_FLOWER)
    assert response.status_code == 200
    assert calls == {layer_class.__name__: 1 for layer_class in layer_classes}


def test_the_edge_layers_share_one_send_wrapper_per_request(
    service_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RequestLog, Draining (with recycling on, so it has a job on every answer) and ErrorShape
    each give their job to one wrapper: an answer's two messages pass it twice, not six times."""
    from iris_classifier.serving.http.responder import Responder
    from tests.conftest import SEED_FLOWER

    passed: list[str] = []
    call = Responder.__call__

    async def counted(self, message) -> None:
        passed.append(message["type"])
        await call(self, message)

    monkeypatch.setattr(Responder, "__call__", counted)
    response = service_client.post("/iris/classify_iris", json=SEED_FLOWER)
    assert response.status_code == 200
    assert response.headers["x-request-id"]
    assert response.headers["x-served-by"]
    assert passed == ["http.response.start", "http.response.body"]


def test_an_answer_passes_one_send_wrapper_in_the_whole_stack(
    service_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the service's stack as the seam rewrites it, with the slow-client clock, the request
    timeout and the request metrics in it: between the route's `send` and the server's, each
    message of an answer enters one Python coroutine, the shared responder, and no other."""
    import inspect
    import sys

    from iris_classifier.serving import seam
    from iris_classifier.serving.http import edge, routes, slow_clients
    from iris_classifier.serving.telemetry import request_metrics
    from tests.conftest import SEED_FLOWER

    app = service_client.app
    stack = {type(layer) for layer in seam.layers(app.middleware_stack)}  # type: ignore[attr-defined]
    wrapping = {slow_clients.SlowClients, edge.RequestTimeout, request_metrics.RequestMetrics}
    assert wrapping <= stack, "a layer that had a send wrapper is no longer in the stack"
    server_sends: list[object] = []
    passed: list[tuple[str, list[str]]] = []
    request_log_call = edge.RequestLog.__call__
    route_call = routes.RouteMiddleware.__call__

    async def noting_server_send(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            server_sends.append(getattr(send, "__code__", None))
        await request_log_call(self, scope, receive, send)

    def probing(send):
        async def probe(message) -> None:
            entered: list[str] = []
            server_send = server_sends[-1]

            def profile(frame, event, arg) -> None:
                if event != "call":
                    return
                if frame.f_code is server_send:
                    sys.setprofile(None)  # what the server does with it is not ours to count
                elif frame.f_code.co_flags & inspect.CO_COROUTINE:
                    entered.append(frame.f_code.co_qualname)

            before = sys.getprofile()
            sys.setprofile(profile)
            try:
                await send(message)
            finally:
                sys.setprofile(before)
            passed.append((message["type"], entered))

        return probe

    async def probed_route(self, scope, receive, send) -> None:
        await route_call(self, scope, receive, probing(send) if scope["type"] == "http" else send)

    monkeypatch.setattr(edge.RequestLog, "__call__", noting_server_send)
    monkeypatch.setattr(routes.RouteMiddleware, "__call__", probed_route)
    response = service_client.post("/iris/classify_iris", json=SEED_FLOWER)
    assert response.status_code == 200
    assert server_sends
    assert server_sends[-1] is not None, "the server's send is not Python code"
    assert passed == [
        ("http.response.start", ["Responder.__call__"]),
        ("http.response.body", ["Responder.__call__"]),
    ]
