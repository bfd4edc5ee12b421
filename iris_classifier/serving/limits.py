"""ASGI middleware the service adds to BentoML's own: request limits, error format, and the
concise logging of refused requests. (Request ids, the replica name and the drain on SIGTERM
are the outermost layer: iris_classifier/serving/edge.py.)

A refusal costs about what reading the request cost, whatever the request holds: at most
MAX_LISTED_PROBLEMS problems are listed, in the answer and in the log, each field name and
reason cut to a fixed length, with the count of the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("iris_classifier.http")

MAX_LISTED_PROBLEMS = 5
MAX_FIELD_CHARS = 64
MAX_REASON_CHARS = 200
# After answering a request whose body is left unread, the rest is read and thrown away, as
# nginx's lingering close does: a client that sends its whole body before reading (urllib,
# http.client) then reads the answer instead of "connection reset". Bounded in bytes, in
# total time and in time without data; a body beyond that gets the reset after all.
LINGER_MAX_BYTES = 256 * 1024 * 1024
LINGER_MAX_SECONDS = 10.0
LINGER_IDLE_SECONDS = 2.0


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
            _problem(problem["loc"], problem["msg"], problem["type"])
            for problem in answer["detail"]
        ]
    except (ValueError, KeyError, TypeError):
        return body  # not a validation answer: pass it on as it is
    listed = problems[:MAX_LISTED_PROBLEMS]
    return json.dumps(
        {"error": f"invalid input: {summarize(listed, len(problems))}", "detail": listed}
    ).encode()


def _problem(location: Any, reason: Any, kind: Any) -> dict[str, str]:
    field = ".".join(str(part) for part in location) if isinstance(location, list | tuple) else ""
    return {
        "field": _cut(field or "body", MAX_FIELD_CHARS),
        "reason": _cut(str(reason), MAX_REASON_CHARS),
        "type": _cut(str(kind), MAX_FIELD_CHARS),
    }


def summarize(listed: list[dict[str, str]], total: int) -> str:
    """`field: reason; ...` for the listed problems, and how many more there are."""
    summary = "; ".join(f"{problem['field']}: {problem['reason']}" for problem in listed)
    hidden = total - len(listed)
    return f"{summary}; and {hidden} more" if hidden > 0 else summary


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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
                receive,
                send,
                415,
                f"unsupported Content-Type {media_type!r}: send application/json",
                "content-type",
            )
            return
        declared = _content_length(scope)
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
    if _header(scope, b"expect").lower() != "100-continue":  # else the body never comes
        await discard_body(receive)
    await send({"type": "http.response.body", "body": b""})


async def send_json(send: Send, status: int, content: Any, *, closing: bool = False) -> None:
    """Send `content` as a JSON answer; `closing` marks it `Connection: close` and leaves the
    response open (an empty last part must follow) so the request body can still be read."""
    body = json.dumps(content).encode()
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
        count = error.error_count()
        listed = [
            _problem(problem["loc"], problem["msg"], problem["type"])
            for problem in error.errors(include_url=False, include_input=False)[
                :MAX_LISTED_PROBLEMS
            ]
        ]
        return f"400 {summarize(listed, count)}"
    if isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500:
        return f"{error.error_code.value} {_cut(str(error), MAX_REASON_CHARS)}"
    return None
