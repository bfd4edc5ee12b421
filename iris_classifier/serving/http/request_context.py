"""The request a line of log belongs to: its id, method and path, for every log call made
while the request is handled.

A client may name its request with `X-Request-ID` so that its logs and ours can be joined.
The id is accepted only when it is 1 to 64 characters from `A-Z a-z 0-9 . _ : -` (a UUID, a
W3C trace id or a ULID all fit); anything else is replaced by a fresh id, so a header can never
carry a newline, an escape sequence or a megabyte into the log.

A fresh id is 32 hex digits, as a UUID's hex was: 64 random bits drawn when the process starts
(again in a forked child), then a 64-bit counter that starts at a random value. Ids from one
process never repeat, and two processes, replicas or restarts share a prefix with odds of about
n² / 2^65 for n processes ever started. A `uuid4` per request would read the system's random
source every time for a uniqueness the prefix already gives; the id is a label to join logs
by, not a secret, so the counter may show a client how many requests came between two of its
own.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = b"x-request-id"
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Longer paths are shown cut, with their length: enough to recognise the route.
MAX_PATH_CHARS = 256

_id_prefix = ""
_id_serial = itertools.count()


def _start_request_ids() -> None:
    global _id_prefix, _id_serial
    _id_prefix = secrets.token_hex(8)
    _id_serial = itertools.count(secrets.randbits(63))


_start_request_ids()
# A forked worker would otherwise hand out its parent's ids.
os.register_at_fork(after_in_child=_start_request_ids)


def new_request_id() -> str:
    """32 hex digits: this process's random prefix, then its next serial number."""
    return f"{_id_prefix}{next(_id_serial):016x}"


# Made for every request: not frozen, whose `__init__` sets each field through
# `object.__setattr__`, at twice the cost. Nothing changes a context once it is made.
@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    path: str  # cut to MAX_PATH_CHARS


CURRENT_REQUEST: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` when it is safe, else a new one (32 hex digits)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if SAFE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how long it was when it is cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def context_for(scope: dict) -> RequestContext:
    method, path = scope.get("method", ""), scope.get("path", "")
    return RequestContext(
        request_id_from(scope.get("headers", ())),
        method if len(method) <= 16 else clip(method, 16),
        path if len(path) <= MAX_PATH_CHARS else clip(path, MAX_PATH_CHARS),
    )
