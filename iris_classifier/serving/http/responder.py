"""The request's one `send` wrapper, shared by every layer of the service that needs to see or
change its answer.

Each layer that wrapped `send` for a job of its own cost every answer's two messages one more
coroutine call. Instead the outermost layer makes one `Responder` and each layer inside gives
it its job through `Responder.around(send)`: our headers on the head (`mark`), `Connection:
close` (`close_for`), foreign errors in the error shape (`reshape`), a callable to run when the
answer starts (`at_start`), an answer sent in the application's place, whose messages are then
dropped (`send_in_place`); and it tells them what went out (`started`, `status`, `finished`). A
layer used alone still works: it makes a responder of its own around the `send` it was given.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Protocol

from starlette.types import Message, Scope, Send

from iris_classifier.serving.http.errors import JSON_MEDIA_TYPE, ErrorAnswer, send_error_answer
from iris_classifier.serving.http.request_context import REQUEST_ID_HEADER

SERVED_BY_HEADER = b"x-served-by"
# Statuses BentoML's layers answer in a shape of their own: 429, its concurrency limit; 504, its
# timeout layer, should the seam not find it to replace.
FOREIGN_STATUSES = frozenset({429, 504})


class ClosesConnections(Protocol):
    def closes_connection(self, scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> bool: ...


class Responder:
    """One request's `send`, with the jobs the layers gave it. On the application's head the
    `at_start` callables run first, then a foreign error is held to be reshaped; the head that
    leaves is then closed and marked."""

    __slots__ = (
        "at_start",
        "closer",
        "dropping",
        "finished",
        "head",
        "held",
        "marks",
        "reshaping",
        "scope",
        "send",
        "started",
        "status",
    )

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0  # of the head that left
        self.started = False  # the application's head came
        self.finished = False  # the answer's last body part came
        self.at_start: list[Callable[[], None]] = []
        self.dropping = False
        self.marks: tuple[tuple[bytes, bytes], ...] = ()
        self.closer: ClosesConnections | None = None
        self.scope: Scope = {}
        self.reshaping = False
        self.held: list[bytes] | None = None
        self.head: Message = {}

    @staticmethod
    def around(send: Send) -> Responder:
        """The responder a layer in front made, or a new one around `send`."""
        return send if type(send) is Responder else Responder(send)

    def mark(self, served_by: bytes, request_id: bytes) -> None:
        """`X-Served-By` and `X-Request-ID` on the answer's head, in place of any it has."""
        self.marks = ((SERVED_BY_HEADER, served_by), (REQUEST_ID_HEADER, request_id))

    def close_for(self, closer: ClosesConnections, scope: Scope) -> None:
        """`Connection: close` on the answer's head when `closer` says so."""
        self.closer, self.scope = closer, scope

    def reshape(self) -> None:
        """A foreign error answer is held until its body is whole, then sent as a refusal."""
        self.reshaping = True

    async def __call__(self, message: Message) -> None:
        if self.dropping:
            return
        if self.held is not None:
            self.held.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.finished = True
                body, self.held = b"".join(self.held), None
                headers = list(self.head.get("headers", ()))
                refusal = reshaped(self.head["status"], body, headers)
                await send_error_answer(self._send_reshaped, refusal)
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            for job in self.at_start:
                job()
            if self.reshaping and foreign_error(message):
                self.held, self.head = [], message
                return
            message = self._finished_head(message)
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self.send(message)

    async def send_in_place(self, message: Message) -> None:
        """Send a message of an answer that takes the application's place: the application's
        own messages are dropped from the first of these on, even while one is being sent."""
        self.dropping = True
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            for job in self.at_start:
                job()
            message = self._finished_head(message)
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self.send(message)

    async def _send_reshaped(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self._finished_head(message)
        await self.send(message)

    def _finished_head(self, message: Message) -> Message:
        self.status = message["status"]
        headers = message.get("headers", ())
        closing = self.closer is not None and self.closer.closes_connection(self.scope, headers)
        if not closing and not self.marks:
            return message
        if closing:
            headers = [*headers, (b"connection", b"close")]
        if self.marks:
            headers = [
                (name, value)
                for name, value in headers
                if name not in (SERVED_BY_HEADER, REQUEST_ID_HEADER)
            ]
            headers += self.marks
        return {**message, "headers": headers}


def foreign_error(message: Message) -> bool:
    """An error answer not in the error shape: not JSON, or one of BentoML's own."""
    if message["status"] < 400:  # every answer passes here: no header scan for a success
        return False
    content_type = dict(message.get("headers", ())).get(b"content-type", b"")
    return message["status"] in FOREIGN_STATUSES or not content_type.startswith(JSON_MEDIA_TYPE)


def reshaped(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> ErrorAnswer:
    """A foreign error answer's own words (and headers, `Allow` say), as a refusal."""
    said = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError, AttributeError):
        said = json.loads(body).get("error", said)
    kept = tuple(h for h in headers if h[0] not in (b"content-type", b"content-length"))
    phrase = HTTPStatus(status).phrase
    # Starlette's bare "Internal Server Error" reads as the service's own 500 does.
    said = phrase.lower() if str(said) in ("", phrase) else str(said)
    return ErrorAnswer(status, said, headers=kept)
