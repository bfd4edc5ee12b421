"""Request limits: JSON bodies only (415), at most `max_bytes` of them (413), and a lingering
close after a refusal so that clients which send their whole body first still read the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("iris_classifier.http")

# After answering a request whose body is left unread, the rest is read and thrown away, as
# nginx's lingering close does: a client that sends its whole body before reading (urllib,
# http.client) then reads the answer instead of "connection reset". Bounded in bytes, in
# total time and in time without data; a body beyond that gets the reset after all.
LINGER_MAX_BYTES = 256 * 1024 * 1024
LINGER_MAX_SECONDS = 10.0
LINGER_IDLE_SECONDS = 2.0


def _accepted_media_type(media_type: str, path: str) -> bool:
    if media_type == "application/json" or media_type.endswith("+json"):
        return True
    # Binary tensors of the Open Inference Protocol: a JSON header, then raw values.
    return media_type == "application/octet-stream" and path.startswith("/v2/")


class RequestLimitsMiddleware:
    """Admits only JSON request bodies, and answers 413 to one above `max_bytes` unread.

    A body that is not JSON gets 415 rather than BentoML's guess at a form or a file (curl's
    `-d` without a Content-Type header sends a form). A declared Content-Length over the limit
    is refused before a byte is read. A chunked body is read only up to the limit; a body
    within it is then replayed to the application, so the application never sees a part.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and not _accepted_media_type(media_type, scope["path"]):
            await _refuse(
                scope,
                receive,
                send,
                415,
                f"unsupported Content-Type {media_type!r}: send application/json",
                "content-type",
            )
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send, f"declared Content-Length {declared}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(
                    scope, receive, send, f"more than {self.max_bytes} bytes sent"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        await _refuse(
            scope,
            receive,
            send,
            413,
            f"request body too large: {reason}, the limit is {self.max_bytes} bytes",
            "body",
        )


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, reason: str, field: str
) -> None:
    logger.warning("refused %s %s: %d %s", scope["method"], scope["path"], status, reason)
    # The answer goes out whole now; the server closes the connection only once the last
    # (empty) part is sent, so the unread body is drained in between. The rest of the body
    # is never parsed, so the connection cannot be reused.
    await send_json(
        send,
        status,
        {"error": reason, "detail": [{"field": field, "reason": reason}]},
        closing=True,
    )
    if (
        Headers(scope=scope).get("expect", "").lower() != "100-continue"
    ):  # else the body never comes
        await discard_body(receive)
    await send({"type": "http.response.body", "body": b""})


async def send_json(send: Send, status: int, content: Any, *, closing: bool = False) -> None:
    """Send `content` as a JSON answer; `closing` marks it `Connection: close` and leaves the
    response open (an empty last part must follow) so the request body can still be read."""
    await send_json_bytes(send, status, json.dumps(content).encode(), closing=closing)


async def send_json_bytes(send: Send, status: int, body: bytes, *, closing: bool = False) -> None:
    """Send `body`, JSON already encoded, as `send_json` sends its content."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if closing:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": closing})


async def discard_body(receive: Receive) -> int:
    """Read and drop the rest of the request body, within the lingering bounds; bytes read."""
    discarded = 0
    deadline = time.monotonic() + LINGER_MAX_SECONDS
    while discarded <= LINGER_MAX_BYTES:
        wait = min(LINGER_IDLE_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), wait)
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break
        discarded += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return discarded


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers.get("content-length", ""))
    except ValueError:
        return None
