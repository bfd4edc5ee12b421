"""The service's outermost HTTP layer: request id, replica name, drain, and the access line;
and the request timeout, in place of BentoML's.

BentoML puts its own layers around the middlewares a service adds: the request timeout (504),
the handler of unhandled errors (500), metrics and tracing. Answers made there would leave
without our headers, so at startup this layer moves itself in front of all of them: every
response, a timeout or a crash included, carries `X-Served-By` and `X-Request-ID`, and every
request gets one access line. While the replica drains (see shutdown.py) it answers `/readyz`
with 503 and marks every response `Connection: close`; so does the answer that uses up its
connection's budget (recycling.py). An error answer made by those layers (a
plain-text 500 or 503, BentoML's 429) leaves in the one refusal shape (refusals.py).

BentoML's timeout layer leaves each request's timer in the event loop for the whole timeout
(README.md says what that cost); `RequestTimeout` takes its place, at the same depth and with
the same seconds, and forgets a request as soon as its answer starts, all requests of an event
loop sharing one timer. BentoML's request metrics layer makes way for `RequestMetrics`
(request_metrics.py), which counts the same series in memory, when the edge is given the
process's metric buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_classifier.serving.line_writer import write_through
from iris_classifier.serving.metric_buffer import MetricBuffer
from iris_classifier.serving.recycling import ConnectionRecycler
from iris_classifier.serving.refusals import Refusal, send_refusal
from iris_classifier.serving.request_context import CURRENT_REQUEST, context_for
from iris_classifier.serving.request_metrics import replace_request_metrics
from iris_classifier.serving.shutdown import Drain

logger = logging.getLogger("iris_classifier.access")

SERVED_BY_HEADER = b"x-served-by"
REQUEST_ID_HEADER = b"x-request-id"
READINESS_PATH = "/readyz"
# Probed every few seconds: their access lines would drown the requests that matter.
PROBE_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
# Statuses only BentoML's layers answer, always in a shape of their own (504: its timeout layer,
# where it could not be replaced).
FOREIGN_STATUSES = frozenset({429, 504})
INTERNAL_ERROR = "internal server error"
JSON = b"application/json"


def foreign_error(message: Message) -> bool:
    """An error answer not in the refusal shape: not JSON, or one of BentoML's own."""
    if message["status"] < 400:  # every answer passes here: no header scan for a success
        return False
    content_type = dict(message.get("headers", ())).get(b"content-type", b"")
    return message["status"] in FOREIGN_STATUSES or not content_type.startswith(JSON)


def reshaped(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> Refusal:
    """A foreign error answer's own words (and headers, `Allow` say), as a refusal."""
    said = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        said = json.loads(body).get("error", said)
    kept = tuple(h for h in headers if h[0] not in (b"content-type", b"content-length"))
    phrase = HTTPStatus(status).phrase
    # Starlette's bare "Internal Server Error" reads as the service's own 500 does.
    said = phrase.lower() if str(said) in ("", phrase) else str(said)
    return Refusal(status, said, headers=kept)


class Deadlines:
    """The unanswered requests of one event loop, oldest first, under one timer.

    Every request gets the same seconds, so deadlines fall in the order requests arrive: one
    timer, armed for the oldest request still unanswered, serves them all. It is armed once the
    loop turns, not per request: most requests are answered within the turn they arrive in and
    never need it. A request then costs a dictionary entry instead of a timer of its own and the
    `asyncio.timeout` context around it. The timer is cancelled whenever no request is left, so
    none outlives the answers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.pending: dict[TimedRequest, None] = {}  # insertion order is deadline order
        self.timer: asyncio.TimerHandle | None = None
        self.armed_for = 0.0
        self.arming = False

    def add(self, request: TimedRequest) -> None:
        request.deadline = self.loop.time() + self.seconds
        self.pending[request] = None
        if self.timer is None and not self.arming:
            self.arming = True
            self.loop.call_soon(self._arm_for_oldest)

    def discard(self, request: TimedRequest) -> None:
        pending = self.pending
        pending.pop(request, None)
        if not pending and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm_for_oldest(self) -> None:
        self.arming = False
        if self.pending and self.timer is None:
            self._arm(next(iter(self.pending)).deadline)

    def _arm(self, deadline: float) -> None:
        self.armed_for = deadline
        self.timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        # Due is what the timer was armed for: the loop may run it a clock tick early, and
        # asyncio.timeout expires then too.
        self.timer = None
        pending = self.pending
        while pending:
            oldest = next(iter(pending))
            if oldest.deadline > self.armed_for:
                self._arm(oldest.deadline)
                return
            del pending[oldest]
            oldest.expired = True
            oldest.task.cancel()


class TimedRequest:
    """One request under a `RequestTimeout`; its `send` ends the time when the answer starts."""

    __slots__ = ("answered", "deadline", "deadlines", "downstream", "expired", "task")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[Any], downstream: Send) -> None:
        self.deadlines = deadlines
        self.task = task
        self.downstream = downstream
        self.deadline = 0.0
        self.answered = False
        self.expired = False

    async def send(self, message: Message) -> None:
        if not self.answered:
            self.answered = True
            self.deadlines.discard(self)
        await self.downstream(message)


class RequestTimeout:
    """A 504 in the refusal shape for a request not answered within `seconds`; the application
    is cancelled. The time runs until the answer starts, as BentoML's did."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        # A worker runs one event loop; a new loop (a test's) starts its own deadlines.
        self.deadlines: Deadlines | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None  # an ASGI server runs every request in a task
        deadlines = self.deadlines
        if deadlines is None or deadlines.loop is not task.get_loop():
            deadlines = self.deadlines = Deadlines(task.get_loop(), self.seconds)
        cancelling = task.cancelling()
        request = TimedRequest(deadlines, task, send)
        deadlines.add(request)
        try:
            await self.app(scope, receive, request.send)
        except asyncio.CancelledError:
            # asyncio.timeout's rule: the cancellation is the timeout's only if nothing else
            # asked to cancel the task meanwhile; otherwise it goes on.
            if not request.expired or task.uncancel() > cancelling or request.answered:
                raise
        except BaseException:
            if request.expired:
                task.uncancel()
            raise
        else:
            if request.expired:  # the application swallowed the cancellation and answered
                task.uncancel()
            return
        finally:
            deadlines.discard(request)
        error = f"not answered within the request timeout of {self.seconds:g} s"
        await send_refusal(send, Refusal(504, error))


def replace_timeout(stack: ASGIApp) -> bool:
    """Put a `RequestTimeout` where BentoML's timeout layer is in `stack`, with its seconds."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    layer: Any = stack
    while (inner := getattr(layer, "app", None)) is not None:
        if isinstance(inner, TimeoutMiddleware):
            layer.app = RequestTimeout(inner.app, inner.timeout)
            return True
        layer = inner
    return False


def _writing_logs_through_at_shutdown(receive: Receive) -> Receive:
    """`receive` of the lifespan, which writes out the buffered log lines at shutdown.

    uvicorn sends the shutdown once every request is answered, and then ends the worker by
    raising its stop signal again with the default action, which skips the exit handlers that
    write out what the log holds: from the shutdown on, each line is written as it comes.
    """

    async def receive_noting_shutdown() -> Message:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            write_through()
        return message

    return receive_noting_shutdown


class EdgeMiddleware:
    """Registered like any service middleware; in front of BentoML's layers once started."""

    def __init__(
        self,
        app: ASGIApp,
        served_by: str,
        drain: Drain,
        recycler: ConnectionRecycler | None = None,
        metric_buffer: MetricBuffer | None = None,
    ) -> None:
        self.app = app
        self.served_by = served_by.encode("latin-1", "replace")
        self.drain = drain
        self.recycler = recycler if recycler is not None and recycler.enabled else None
        self.metric_buffer = metric_buffer
        self.in_front = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if not self.in_front:
                self._move_in_front(scope.get("app"))
                self.drain.install(asyncio.get_running_loop())
            await self.app(scope, _writing_logs_through_at_shutdown(receive), send)
            return
        if scope["type"] == "http" and not self.in_front:
            await self.handle(scope, receive, send, self.app)
            return
        await self.app(scope, receive, send)

    def _move_in_front(self, application: Any) -> None:
        """Wrap the application's whole middleware stack (Starlette builds it before lifespan)."""
        stack = getattr(application, "middleware_stack", None)
        if stack is None:
            logger.warning("cannot go in front of BentoML's layers: their answers lack headers")
            return
        if not replace_timeout(stack):
            logger.warning("BentoML's timeout layer was not found: its timers outlive requests")
        if self.metric_buffer is not None and not replace_request_metrics(
            stack, self.metric_buffer
        ):
            logger.info("no BentoML request metrics layer: each request writes its own metrics")

        async def in_front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.handle(scope, receive, send, stack)
            else:
                await stack(scope, receive, send)

        application.middleware_stack = in_front
        self.in_front = True

    def closes_connection(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether this answer must add `Connection: close`: the drain, or a used-up budget."""
        if any(name == b"connection" for name, _ in headers):  # the answer closes it already
            if self.recycler is not None:
                self.recycler.forget(scope.get("client"))
            return False
        if self.drain.active:
            return True
        return self.recycler is not None and self.recycler.answer_ends_connection(
            scope.get("client")
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        context = context_for(scope)
        token = CURRENT_REQUEST.set(context)
        started = time.perf_counter()
        status = 0
        request_id = context.request_id.encode("ascii")

        held: list[bytes] | None = None
        held_headers: list[tuple[bytes, bytes]] = []

        async def send_reshaped(message: Message) -> None:
            nonlocal held, held_headers
            if held is not None:  # the body of a foreign error answer, reshaped once whole
                held.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body, held = b"".join(held), None
                    await send_refusal(send_marked, reshaped(status, body, held_headers))
                return
            if message["type"] == "http.response.start" and foreign_error(message):
                held, held_headers = [], list(message.get("headers", ()))
            await send_marked(message)

        async def send_marked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if held is not None:
                    return
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name not in (SERVED_BY_HEADER, REQUEST_ID_HEADER)
                ]
                headers += [(SERVED_BY_HEADER, self.served_by), (REQUEST_ID_HEADER, request_id)]
                if self.closes_connection(scope, headers):
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.drain.active and scope["path"] == READINESS_PATH:
                await send_refusal(
                    send_marked, Refusal(503, "draining: this replica is stopping", field="replica")
                )
            else:
                await app(scope, receive, send_reshaped)
                if not status:
                    # A client that left, or an application that returned without an answer.
                    logger.warning("no answer from the application", extra={"request": context})
                    await send_refusal(send_marked, Refusal(500, INTERNAL_ERROR))
        except Exception:
            logger.exception("unhandled error", extra={"request": context})
            if not status:
                await send_refusal(send_marked, Refusal(500, INTERNAL_ERROR))
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            if scope["path"] in PROBE_PATHS and (status < 400 or self.drain.active):
                level = logging.DEBUG  # probes, and a drain's expected readiness 503s
            else:
                level = logging.WARNING if status >= 500 else logging.INFO
            logger.log(
                level,
                "%s %s %d",
                context.method,
                context.path,
                status,
                extra={"request": context, "status": status, "duration_ms": duration_ms},
            )
            CURRENT_REQUEST.reset(token)
