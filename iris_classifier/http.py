"""ASGI middleware the service adds in front of BentoML's own: request limits, error format,
replica identity, and the concise logging of refused requests."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("iris_classifier.http")


class ServedByMiddleware:
    """Adds `X-Served-By: <replica>` to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp, served_by: str) -> None:
        self.app = app
        self.header = (b"x-served-by", served_by.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def rewriting_body(send: Send, status: int, rewrite: Callable[[bytes], bytes]) -> Send:
    """A `send` that holds back a response of `status` and sends it with `rewrite(body)`.

    Responses with any other status stream through untouched, so only the answers that are
    rewritten pay for buffering.
    """
    held_start: Message | None = None
    held_body: list[bytes] = []

    async def send_rewritten(message: Message) -> None:
        nonlocal held_start
        if message["type"] == "http.response.start" and message["status"] == status:
            held_start = message
            return
        if held_start is None or message["type"] != "http.response.body":
            await send(message)
            return
        held_body.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = rewrite(b"".join(held_body))
        headers = [(k, v) for k, v in held_start.get("headers", ()) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held_start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_rewritten


class ErrorFormatMiddleware:
    """Rewrites BentoML's 400 validation answer so its message names each field and reason.

    BentoML answers `{"error": "2 validation error for IrisFeaturesIODescriptor", ...}`; the
    client gets `{"error": "invalid input: sepal_length: Input should be a finite number",
    "detail": [{"field": "sepal_length", "reason": "...", "type": "finite_number"}]}` instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, rewriting_body(send, 400, _rewrite_validation_error))


def _rewrite_validation_error(body: bytes) -> bytes:
    try:
        answer = json.loads(body)
        problems = [
            {
                "field": ".".join(str(part) for part in problem["loc"]) or "body",
                "reason": problem["msg"],
                "type": problem["type"],
            }
            for problem in answer["detail"]
        ]
    except (ValueError, KeyError, TypeError):
        return body  # not a validation answer: pass it on as it is
    summary = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
    return json.dumps({"error": f"invalid input: {summary}", "detail": problems}).encode()


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
        media_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        if media_type and not _accepted_media_type(media_type, scope["path"]):
            await _refuse(
                scope,
                send,
                415,
                f"unsupported Content-Type {media_type!r}: send application/json",
                "content-type",
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, send, f"declared Content-Length {declared}")
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
                await self._too_large(scope, send, f"more than {self.max_bytes} bytes sent")
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

    async def _too_large(self, scope: Scope, send: Send, reason: str) -> None:
        await _refuse(
            scope,
            send,
            413,
            f"request body too large: {reason}, the limit is {self.max_bytes} bytes",
            "body",
        )


async def _refuse(scope: Scope, send: Send, status: int, reason: str, field: str) -> None:
    logger.warning("refused %s %s: %d %s", scope["method"], scope["path"], status, reason)
    body = json.dumps({"error": reason, "detail": [{"field": field, "reason": reason}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read, so the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _content_length(scope: Scope) -> int | None:
    try:
        return int(_header(scope, b"content-length"))
    except ValueError:
        return None


class ConciseRefusalFilter(logging.Filter):
    """Turns BentoML's traceback for a refused request into one line naming field and reason.

    BentoML logs every 4xx it raises with the full traceback. A client sending bad input is
    not a server fault: one warning line says what was wrong, and the log stays readable.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        problems = _refusal_problems(error)
        if problems is None:
            return True
        path, method = (
            record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        )
        record.msg = "refused %s %s: %s"
        record.args = (method, path, problems)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        return True


def _refusal_problems(error: BaseException | None) -> str | None:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return "400 " + "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
    if isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500:
        return f"{error.error_code.value} {error}"
    return None
