"""The service's edge: small layers with one job each, in front of BentoML's own.

`RequestLog` (request id, `X-Served-By`, `X-Request-ID`, the access line), `Draining` (the drain
of shutdown.py and the close of recycling.py) and `ErrorShape` (every error in the refusal
shape, a 500 where nothing answered) go in front of the whole stack when it starts, so that
BentoML's answers (a 504, a 500) carry our headers too; `RequestTimeout` goes where BentoML's
timeout layer was, whose timers outlived their requests (README.md). seam.py does the moving.
Each gives its job to the request's one `send` wrapper (responder.py) rather than wrapping it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_classifier.serving import seam
from iris_classifier.serving.http.errors import ErrorAnswer, send_error_answer
from iris_classifier.serving.http.recycling import ConnectionRecycler
from iris_classifier.serving.http.request_context import CURRENT_REQUEST, context_for
from iris_classifier.serving.http.responder import Responder
from iris_classifier.serving.http.shutdown import Drain
from iris_classifier.serving.seam import READINESS_PATH
from iris_classifier.serving.telemetry.line_writer import write_through
from iris_classifier.serving.telemetry.logs import AccessRecord
from iris_classifier.serving.telemetry.metric_buffer import MetricBuffer
from iris_classifier.serving.telemetry.request_metrics import replace_request_metrics

logger = logging.getLogger("iris_classifier.access")

# Probed every few seconds: their access lines would drown the requests that matter.
PROBE_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})
INTERNAL_ERROR = "internal server error"


class RequestLog:
    """The request's context, our two headers on its answer, and its access line."""

    def __init__(self, app: ASGIApp, served_by: str, drain: Drain) -> None:
        self.app = app
        self.served_by = served_by.encode("latin-1", "replace")
        self.drain = drain  # a drain's readiness 503s are expected: no warning line for them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = _writing_logs_through_at_shutdown(receive)
            await self.app(scope, receive, send)
            return
        context = context_for(scope)
        token = CURRENT_REQUEST.set(context)
        started = time.perf_counter()
        responder = Responder.around(send)
        responder.mark(self.served_by, context.request_id.encode("ascii"))
        try:
            await self.app(scope, receive, responder)
        finally:
            status = responder.status
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            if scope["path"] in PROBE_PATHS and (status < 400 or self.drain.active):
                level = logging.DEBUG  # probes, and a drain's expected readiness 503s
            else:
                level = logging.WARNING if status >= 500 else logging.INFO
            if logger.isEnabledFor(level):
                logger.handle(AccessRecord(logger.name, level, context, status, duration_ms))
            CURRENT_REQUEST.reset(token)


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


class Draining:
    """The drain: readiness 503 and `Connection: close` while it lasts, and the close of the
    answer that uses up its connection's budget."""

    def __init__(
        self, app: ASGIApp, drain: Drain, recycler: ConnectionRecycler | None = None
    ) -> None:
        self.app = app
        self.drain = drain
        self.recycler = recycler if recycler is not None and recycler.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self.drain.install(asyncio.get_running_loop())
            await self.app(scope, receive, send)
            return
        if self.recycler is None and not self.drain.active:
            await self.app(scope, receive, send)
            return
        responder = Responder.around(send)
        responder.close_for(self, scope)
        if self.drain.active and scope["path"] == READINESS_PATH:
            draining = ErrorAnswer(503, "draining: this replica is stopping", field="replica")
            await send_error_answer(responder, draining)
            return
        await self.app(scope, receive, responder)

    def closes_connection(self, scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        """Whether this answer must add `Connection: close`: the drain, or a used-up budget."""
        for name, _ in headers:  # a loop, not `any` over a generator made for every answer
            if name == b"connection":  # the answer closes it already
                if self.recycler is not None:
                    self.recycler.forget(scope.get("client"))
                return False
        if self.drain.active:
            return True
        return self.recycler is not None and self.recycler.answer_ends_connection(
            scope.get("client")
        )


class ErrorShape:
    """Every error answer in the error shape, and a 500 where nothing answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        responder = Responder.around(send)
        responder.reshape()
        try:
            await self.app(scope, receive, responder)
        except Exception:
            logger.exception("unhandled error", extra={"request": CURRENT_REQUEST.get(None)})
            if not responder.started:
                await send_error_answer(send, ErrorAnswer(500, INTERNAL_ERROR))
            return
        if not responder.started:
            # A client that left, or an application that returned without an answer.
            context = CURRENT_REQUEST.get(None)
            logger.warning("no answer from the application", extra={"request": context})
            await send_error_answer(send, ErrorAnswer(500, INTERNAL_ERROR))


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
    """One request under a `RequestTimeout`; its time ends when the answer starts."""

    __slots__ = ("answered", "deadline", "deadlines", "expired", "task")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[Any]) -> None:
        self.deadlines = deadlines
        self.task = task
        self.deadline = 0.0
        self.answered = False
        self.expired = False

    def answer_started(self) -> None:
        if not self.answered:
            self.answered = True
            self.deadlines.discard(self)


class RequestTimeout:
    """A 504 in the error shape for a request not answered within `seconds`; the application
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
        request = TimedRequest(deadlines, task)
        deadlines.add(request)
        responder = Responder.around(send)
        responder.at_start.append(request.answer_started)
        try:
            await self.app(scope, receive, responder)
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
        await send_error_answer(responder, ErrorAnswer(504, error))


def add_edge(
    service: Any,
    served_by: str,
    drain: Drain,
    recycler: ConnectionRecycler | None = None,
    metric_buffer: MetricBuffer | None = None,
    untraced: list[str] | None = None,
    routed: Callable[[str], bool] | None = None,
) -> None:
    """Give `service` the edge layers, in front of BentoML's when it starts; with a metric
    buffer, BentoML's request metrics count in memory (request_metrics.py), the paths `routed`
    accepts each under its own label; requests to the `untraced` patterns (the service's
    `tracing.excluded_urls`) skip the tracing layer."""

    def rewrite(stack: ASGIApp) -> ASGIApp:
        if not seam.replace_timeout(stack, RequestTimeout):
            logger.warning("BentoML's timeout layer was not found: its timers outlive requests")
        if metric_buffer is not None and not replace_request_metrics(stack, metric_buffer, routed):
            logger.info("no BentoML request metrics layer: each request writes its own metrics")
        if untraced and not seam.bypass_tracing(stack, untraced):
            logger.info("no tracing layer found: untraced requests pass through it")
        inner = seam.without_server_errors(stack)
        return RequestLog(Draining(ErrorShape(inner), drain, recycler), served_by, drain)

    seam.rewrite_stack_at_startup(service, rewrite)
