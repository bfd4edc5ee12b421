"""The one shape of every 4xx and 5xx answer (iris_classifier/serving/README.md), and sending
answers. Problems are listed and cut to fixed budgets so that a refusal costs about what reading
the request cost, whatever the request holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NotRequired

import orjson
from pydantic import BaseModel, ValidationError
from starlette.types import Send
from typing_extensions import TypedDict

from iris_classifier.serving.http.request_context import clip

JSON_MEDIA_TYPE = b"application/json"
MAX_LISTED_PROBLEMS = 5
MAX_FIELD_CHARS = 64
MAX_REASON_CHARS = 200


class Problem(TypedDict):
    field: str
    reason: str
    type: NotRequired[str]


class ErrorBody(BaseModel):
    """The refusal's shape, for the OpenAPI document."""

    error: str
    detail: list[Problem]


class ErrorAnswer(Exception):
    """A request the service refuses: the status, the one-line error and its problems."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: list[dict[str, str]] | None = None,
        *,
        field: str = "request",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        kind = HTTPStatus(status).phrase.lower().replace(" ", "_")  # not_found, ...
        self.detail = detail or [problem(field, error, kind)]
        self.headers = headers

    def body(self) -> bytes:
        return orjson.dumps({"error": self.error, "detail": self.detail})


def _dotted_problem(item: dict[str, Any]) -> dict[str, str]:
    return problem(".".join(map(str, item["loc"])), item["msg"], item["type"])


def validation_refusal(
    error: ValidationError,
    prefix: str = "invalid input: ",
    problem_of: Callable[[dict[str, Any]], dict[str, str]] = _dotted_problem,
) -> ErrorAnswer:
    """The 400 for a request the models refused; its error reads `{prefix}field: reason; ...`
    and names at most MAX_LISTED_PROBLEMS problems, with how many more there are. `problem_of`
    names a problem in a protocol's own words (the field's dotted path and pydantic's message
    by default)."""
    listed = [
        problem_of(item)
        for item in error.errors(include_url=False, include_context=False, include_input=False)[
            :MAX_LISTED_PROBLEMS
        ]
    ]
    return ErrorAnswer(400, f"{prefix}{summarize(listed, error.error_count())}", listed)


def problem(field: str, reason: Any, kind: Any) -> dict[str, str]:
    return {
        "field": clip(field or "body", MAX_FIELD_CHARS),
        "reason": clip(str(reason), MAX_REASON_CHARS),
        "type": clip(str(kind), MAX_FIELD_CHARS),
    }


def summarize(listed: list[dict[str, str]], total: int) -> str:
    """`field: reason; ...` for the listed problems, and how many more there are."""
    summary = "; ".join(f"{item['field']}: {item['reason']}" for item in listed)
    hidden = total - len(listed)
    return f"{summary}; and {hidden} more" if hidden > 0 else summary


# Not frozen: a frozen dataclass sets each field through object.__setattr__, on every V2 answer.
@dataclass(slots=True)
class Answer:
    """A 200 answer's body, its media type and any headers of its own."""

    body: bytes
    media_type: bytes = JSON_MEDIA_TYPE
    headers: tuple[tuple[bytes, bytes], ...] = ()


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON_MEDIA_TYPE,
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    closing: bool = False,
) -> None:
    """Send a whole answer; `closing` marks it `Connection: close` and leaves the response open
    (an empty last part must follow) so the rest of the request body can still be read."""
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    if closing:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": closing})


async def send_error_answer(send: Send, refusal: ErrorAnswer, *, closing: bool = False) -> None:
    await send_body(send, refusal.status, refusal.body(), headers=refusal.headers, closing=closing)
