"""Reading a request body within the limits (415, 413), and a lingering close after a refusal:
iris_classifier/serving/README.md says which."""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from iris_classifier.serving.http.errors import ErrorAnswer, send_error_answer

# After answering a request whose body is left unread, the rest is read and thrown away, as
# nginx's lingering close does: a client that sends its whole body before reading (urllib,
# http.client) then reads the answer instead of "connection reset". Bounded in bytes, in
# total time and in time without data; a body beyond that gets the reset after all.
LINGER_MAX_BYTES = 256 * 1024 * 1024
LINGER_MAX_SECONDS = 10.0
LINGER_IDLE_SECONDS = 2.0
JSON_TYPES = frozenset({"application/json"})
# Binary tensors of the Open Inference Protocol: a JSON header, then raw values.
TENSOR_TYPES = frozenset({"application/json", "application/octet-stream"})
# The length of a binary tensor request's JSON header, and of its answer's.
HEADER_LENGTH = "inference-header-content-length"


class BodyRefused(ErrorAnswer):
    """A body refused before it was read whole: answered, then the rest is drained."""


async def read_body(
    scope: Scope, receive: Receive, max_bytes: int, media_types: frozenset[str] = JSON_TYPES
) -> bytes | None:
    """The whole body, or None if the client left. `BodyRefused` for a media type other than
    `media_types` (none is read as JSON, as BentoML read it; curl's `-d` alone sends a form), or
    over `max_bytes`: a declared Content-Length before a byte is read, a chunked body as soon as
    it passes the limit."""
    content_type, declared = _type_and_length(scope["headers"])
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type not in media_types and not media_type.endswith("+json"):
        reason = f"unsupported Content-Type {media_type[:64]!r}: send application/json"
        raise BodyRefused(415, reason, field="content-type")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(f"declared Content-Length {declared}", max_bytes)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(f"more than {max_bytes} bytes sent", max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _type_and_length(headers: list[tuple[bytes, bytes]]) -> tuple[str, str]:
    """Content-Type and Content-Length ("" when absent), the first of each as `Headers` reads
    them, in one pass: every request with a body reads both."""
    content_type = content_length = None
    for name, value in headers:
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length" and content_length is None:
            content_length = value
    return (content_type or b"").decode("latin-1"), (content_length or b"").decode("latin-1")


def _too_large(reason: str, max_bytes: int) -> BodyRefused:
    return BodyRefused(
        413, f"request body too large: {reason}, the limit is {max_bytes} bytes", field="body"
    )


async def refuse_unread(scope: Scope, receive: Receive, send: Send, refusal: ErrorAnswer) -> None:
    """Answer `refusal` whole, then read and drop the unread body within the lingering bounds
    before the connection closes: the rest is never parsed, so the connection cannot be reused."""
    await send_error_answer(send, refusal, closing=True)
    if Headers(scope=scope).get("expect", "").lower() != "100-continue":  # else it never comes
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
    await send({"type": "http.response.body", "body": b""})
