"""The service's outermost HTTP layer: request id, replica name, drain, and the access line.

BentoML puts its own layers around the middlewares a service adds: the request timeout (504),
the handler of unhandled errors (500), metrics and tracing. Answers made there would leave
without our headers, so at startup this layer moves itself in front of all of them: every
response, a timeout or a crash included, carries `X-Served-By` and `X-Request-ID`, and every
request gets one access line. While the replica drains (see shutdown.py) it answers `/readyz`
with 503 and marks every response `Connection: close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iris_classifier.serving.limits import send_json
from iris_classifier.serving.request_context import CURRENT_REQUEST, context_for
from iris_classifier.serving.shutdown import Drain

logger = logging.getLogger("iris_classifier.access")

SERVED_BY_HEADER = b"x-served-by"
REQUEST_ID_HEADER = b"x-request-id"
READINESS_PATH = "/readyz"
# Probed every few seconds: their access lines would drown the requests that matter.
PROBE_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/metrics"})


class EdgeMiddleware:
    """Registered like any service middleware; in front of BentoML's layers once started."""

    def __init__(self, app: ASGIApp, served_by: str, drain: Drain) -> None:
        self.app = app
        self.served_by = served_by.encode("latin-1", "replace")
        self.drain = drain
        self.in_front = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and not self.in_front:
            self._move_in_front(scope.get("app"))
            self.drain.install(asyncio.get_running_loop())
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

        async def in_front(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                await self.handle(scope, receive, send, stack)
            else:
                await stack(scope, receive, send)

        application.middleware_stack = in_front
        self.in_front = True

    async def handle(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        context = context_for(scope)
        token = CURRENT_REQUEST.set(context)
        started = time.perf_counter()
        status = 0
        request_id = context.request_id.encode("ascii")

        async def send_marked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name not in (SERVED_BY_HEADER, REQUEST_ID_HEADER)
                ]
                headers += [(SERVED_BY_HEADER, self.served_by), (REQUEST_ID_HEADER, request_id)]
                if self.drain.active and not any(name == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if self.drain.active and scope["path"] == READINESS_PATH:
                await send_json(send_marked, 503, {"error": "draining: this replica is stopping"})
            else:
                await app(scope, receive, send_marked)
                if not status:
                    # A client that left before its answer, or an error that BentoML's timeout
                    # layer swallowed (it waits for the timeout, then finds nothing to cancel).
                    logger.warning("no answer from the application", extra={"request": context})
                    await send_json(send_marked, 500, {"error": "internal server error"})
        except Exception:
            logger.exception("unhandled error", extra={"request": context})
            if not status:
                await send_json(send_marked, 500, {"error": "internal server error"})
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
