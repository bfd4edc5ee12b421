"""Slow clients cannot hold a replica's connections open.

uvicorn keeps a connection for as long as its client sends a byte now and then: a request head
trickled one header line at a time is never finished and never timed out, and a replica takes
every connection it is offered. Behind a Gateway that is the balancer's problem; on a bare
NodePort or a laptop it is an open door. Three bounds (config.py reads them; 0 turns one off):

- a request head must be whole within `head_seconds` of the connection opening, or of its first
  byte on a kept-alive connection; else the connection is closed, after a 408 in the one error
  shape if part of a head came (a connection that sent nothing is just closed). The idle time
  between requests stays `--timeout-keep-alive`'s;
- a body must come at `body_min_rate` bytes a second on average, counted from the head, once
  BODY_GRACE_SECONDS have passed; else the request is answered 408 and its connection closed
  (checked while the application waits for the body, every SWEEP_SECONDS);
- at most `max_connections` connections are open at once; the next is answered 503 with
  Retry-After, in the error shape, and closed, while those open are served as before.

The first and last work on the connection's protocol, which seam.py reaches. uvicorn's
own `--limit-concurrency` is not used: it answers in plain text, counts requests in flight
together with connections, and only once a head is whole, so a connection that never finishes
one is never refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_classifier.serving import seam
from iris_classifier.serving.http.errors import ErrorAnswer, send_error_answer
from iris_classifier.serving.http.responder import Responder
from iris_classifier.serving.telemetry.metric_buffer import (
    BufferedCounter,
    BufferedGauge,
    MetricBuffer,
    shared_buffer,
)

logger = logging.getLogger("iris_classifier.http")

# Before the body's rate counts: an Expect: 100-continue round trip and a retransmission or two
# on a lossy link, as Kestrel grants.
BODY_GRACE_SECONDS = 5.0
# A refused client's request is read and dropped for this long after the 503, so that the
# client reads the answer rather than a reset; at most `max_connections` linger at once.
REFUSAL_LINGER_SECONDS = 1.0
RETRY_AFTER_SECONDS = 1
# Requests whose bodies no route reads: no clock for them.
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How often the bodies being waited for are checked against their deadlines.
SWEEP_SECONDS = 0.25
# One warning line per this many seconds says what was closed and refused, however many.
REPORT_SECONDS = 10.0


@dataclass(frozen=True)
class ClientLimits:
    max_connections: int
    head_seconds: float
    body_min_rate: float  # bytes a second


def raw_answer(answer: ErrorAnswer, served_by: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes its connection, for a connection no request owns."""
    body = answer.body()
    lines = [
        b"HTTP/1.1 %d %s" % (answer.status, HTTPStatus(answer.status).phrase.encode()),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        *(name + b": " + value for name, value in answer.headers),
        b"connection: close",
        b"x-served-by: " + served_by,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class ConnectionGuard:
    """Counts a replica's open connections and guards each one's protocol, once `install`ed on
    the loop the server runs in."""

    def __init__(
        self, limits: ClientLimits, served_by: str, buffer: MetricBuffer | None = None
    ) -> None:
        self.limits = limits
        self.open = 0
        self._buffer = buffer
        # Bound by `install`, which only the worker's start runs.
        self._dropped: dict[str, BufferedCounter] = {}
        self.open_gauge: BufferedGauge | None = None
        self.lingering = 0
        self.installed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        served = served_by.encode("latin-1", "replace")
        self.head_too_slow = raw_answer(
            ErrorAnswer(408, f"request head not received whole within {limits.head_seconds:g} s"),
            served,
        )
        self.full = raw_answer(
            ErrorAnswer(
                503,
                f"this replica holds {limits.max_connections} connections, its limit: retry",
                field="connection",
                headers=((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),),
            ),
            served,
        )
        self._noted: Counter[str] = Counter()
        self._report: asyncio.TimerHandle | None = None
        self._warned_untracked = False

    @property
    def enabled(self) -> bool:
        return self.limits.max_connections > 0 or self.limits.head_seconds > 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.installed or not self.enabled:
            return
        self.installed, self.loop = True, loop
        # Imported here, in the worker: the arbiter imports this module too, and metrics.py
        # brings NumPy, which only predicting needs.
        from iris_classifier.serving.telemetry.metrics import collectors

        buffer = self._buffer or shared_buffer()
        metrics = collectors()
        # The events `note` takes, as the reasons /metrics shows.
        self._dropped = {
            event: buffer.counter(metrics.connections_dropped.labels(reason))
            for event, reason in (("head", "head_timeout"), ("refused", "over_limit"))
        }
        self.open_gauge = buffer.gauge(metrics.open_connections)
        seam.wrap_listeners(loop, self.guarded)

    def guarded(self, protocol: asyncio.Protocol) -> asyncio.Protocol:
        if not seam.tracks_requests(protocol):
            if not self._warned_untracked:
                self._warned_untracked = True
                logger.warning("%s keeps no request state: connections are not guarded", protocol)
            return protocol
        return GuardedConnection(protocol, self)

    def note(self, event: str) -> None:
        """Count a closed or refused connection, on /metrics and for the next report line."""
        self._dropped[event].inc()
        self._noted[event] += 1
        if self._report is None and self.loop is not None:
            self._report = self.loop.call_later(
                REPORT_SECONDS, self._write_report, context=contextvars.Context()
            )

    def _write_report(self) -> None:
        self._report = None
        noted, self._noted = self._noted, Counter()
        logger.warning(
            "slow clients: in %g s, %d connections closed without a whole request head within "
            "%g s, %d refused past %d open",
            REPORT_SECONDS,
            noted["head"],
            self.limits.head_seconds,
            noted["refused"],
            self.limits.max_connections,
        )


class GuardedConnection(asyncio.Protocol):
    """One connection: uvicorn's protocol for it, timed while a request head is awaited."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.handed_over = False  # upgraded: the inner protocol is no longer uvicorn's HTTP one
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_after: object | None = None  # the request before the awaited head
        self.head_begun = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.guard.limits.max_connections
        if limit and self.guard.open >= limit:
            self._refuse()
            return
        self.guard.open += 1
        self.guard.open_gauge.inc()  # type: ignore[union-attr]
        self.inner.connection_made(transport)
        self._await_head(begun=False)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # read and dropped: the refusal is on its way
        if self.handed_over:
            self.inner.data_received(data)
            return
        awaiting = self.head_timer is not None
        if awaiting:
            self.head_begun = True
        else:
            before = seam.current_request(self.inner)
            between_requests = not seam.answering(self.inner)
        self.inner.data_received(data)
        if self.transport is not None and self.transport.get_protocol() is not self:
            self._hand_over()
        elif awaiting:
            if seam.current_request(self.inner) is not self.head_after:
                self._head_arrived()
        elif between_requests and seam.current_request(self.inner) is before:
            # The first bytes of the next request, its head not whole yet: time it.
            self.head_after = before
            self._await_head(begun=True)

    def eof_received(self) -> bool | None:
        if self.refused:
            self._close()
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        if self.refused:
            self.guard.lingering -= 1
            return
        self.guard.open -= 1
        self.guard.open_gauge.dec()  # type: ignore[union-attr]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    def _await_head(self, *, begun: bool) -> None:
        seconds = self.guard.limits.head_seconds
        if seconds <= 0 or self.guard.loop is None:
            return
        self.head_begun = begun
        self.head_timer = self.guard.loop.call_later(seconds, self._head_too_slow)

    def _head_arrived(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if seam.current_request(self.inner) is not self.head_after:
            return  # a pipelined head, parsed as the answer before it ended
        self.guard.note("head")
        if self.head_begun:
            transport.write(self.guard.head_too_slow)
        transport.close()

    def _hand_over(self) -> None:
        """The inner protocol gave the connection to another (an upgrade): pass everything on
        to that one, so its end still reaches the count."""
        assert self.transport is not None
        self.inner = self.transport.get_protocol()  # type: ignore[assignment]
        self.transport.set_protocol(self)
        self.handed_over = True
        self._head_arrived()

    def _refuse(self) -> None:
        transport = self.transport
        assert transport is not None
        self.refused = True
        self.guard.lingering += 1
        self.guard.note("refused")
        transport.write(self.guard.full)
        if (
            self.guard.lingering > self.guard.limits.max_connections
            or not transport.can_write_eof()
        ):
            transport.close()
            return
        transport.write_eof()
        assert self.guard.loop is not None
        self.guard.loop.call_later(REFUSAL_LINGER_SECONDS, self._close)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _BodyClock:
    """A request's receive, with the deadline its body must keep; its answer goes through the
    request's responder, which the 408 takes over."""

    def __init__(self, receive: Receive, responder: Responder, watch: BodyWatch) -> None:
        self._receive = receive
        self.responder = responder
        self.watch = watch
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.received = 0
        self.body_done = False
        self.too_slow = False
        self.waiting: asyncio.Task | None = None

    def deadline(self) -> float:
        return self.started + max(BODY_GRACE_SECONDS, self.received / self.watch.min_rate)

    async def receive(self) -> Message:
        if self.too_slow:
            return {"type": "http.disconnect"}
        if self.body_done:
            return await self._receive()
        self.waiting = task = asyncio.current_task()
        self.watch.add(self)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            # Only the watch's own cancellation is answered; any other goes on.
            if not self.too_slow or task is None or task.uncancel() > 0:
                raise
            await self._refuse()
            return {"type": "http.disconnect"}
        finally:
            self.waiting = None
            self.watch.waiting.discard(self)
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
        return message

    def cut(self) -> None:
        """Past the deadline while waiting: end the wait, which answers the 408."""
        if self.waiting is not None:
            self.too_slow = True
            self.waiting.cancel()

    async def _refuse(self) -> None:
        responder = self.responder
        if responder.started:  # an answer already on its way ends as it would have
            return
        elapsed = self.loop.time() - self.started
        refusal = ErrorAnswer(
            408,
            f"request body too slow: {self.received} bytes in {elapsed:.1f} s, "
            f"below {self.watch.min_rate:g} bytes a second",
            field="body",
        )
        await send_error_answer(responder.send_in_place, refusal, closing=True)
        await responder.send_in_place({"type": "http.response.body", "body": b""})


class BodyWatch:
    """The bodies being waited for, looked at every SWEEP_SECONDS while there are any.

    One sweep for all requests rather than a timer each: most bodies come whole in the first
    message, and a timer set and cancelled per request would cost more than the rest of the
    layer.
    """

    def __init__(self, min_rate: float) -> None:
        self.min_rate = min_rate
        self.waiting: set[_BodyClock] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the sweeping one, None if none

    def add(self, clock: _BodyClock) -> None:
        self.waiting.add(clock)
        if self.loop is not clock.loop:
            self.loop = clock.loop
            self.loop.call_later(SWEEP_SECONDS, self._sweep, self.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:
            return  # a sweep of a loop that served before (tests run several)
        now = loop.time()
        for clock in [clock for clock in self.waiting if now >= clock.deadline()]:
            self.waiting.discard(clock)
            clock.cut()
        if self.waiting:
            loop.call_later(SWEEP_SECONDS, self._sweep, loop)
        else:
            self.loop = None


class SlowClients:
    """The ASGI layer: installs the connection guard when the lifespan starts, before the server
    listens, and keeps each request's body to the minimum rate."""

    def __init__(self, app: ASGIApp, guard: ConnectionGuard) -> None:
        self.app = app
        self.guard = guard
        self.bodies = BodyWatch(guard.limits.body_min_rate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.guard.install(asyncio.get_running_loop())
        elif (
            scope["type"] == "http"
            and self.bodies.min_rate > 0
            and scope["method"] not in BODILESS_METHODS
        ):
            responder = Responder.around(send)
            clock = _BodyClock(receive, responder, self.bodies)
            await self.app(scope, clock.receive, responder)
            return
        await self.app(scope, receive, send)
