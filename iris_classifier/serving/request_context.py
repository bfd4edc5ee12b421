"""The request a line of log belongs to: its id, method and path, for every log call made
while the request is handled.

A client may name its request with `X-Request-ID` so that its logs and ours can be joined.
The id is accepted only when it is 1 to 64 characters from `A-Z a-z 0-9 . _ : -` (a UUID, a
W3C trace id or a ULID all fit); anything else is replaced by a fresh random id, so a header
can never carry a newline, an escape sequence or a megabyte into the log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = b"x-request-id"
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Longer paths are shown cut, with their length: enough to recognise the route.
MAX_PATH_CHARS = 256


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    method: str
    path: str  # cut to MAX_PATH_CHARS


CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` when it is safe, else a new random one (32 hex digits)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if SAFE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how long it was when it is cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def context_for(scope: dict) -> RequestContext:
    return RequestContext(
        request_id=request_id_from(scope.get("headers", ())),
        method=clip(scope.get("method", ""), 16),
        path=clip(scope.get("path", ""), MAX_PATH_CHARS),
    )
