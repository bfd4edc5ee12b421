"""The one shape of every 4xx and 5xx answer the service sends, and how it is sent.

    {"error": "one line saying what is wrong", "detail": [{"field": ..., "reason": ..., "type": ...}]}

`error` is a string on every route (the Open Inference Protocol's clients read it); `detail`
lists each problem, at most MAX_LISTED_PROBLEMS of them, each cut to a fixed length, so a
refusal costs about what reading the request cost, whatever the request holds.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import Send

JSON_MEDIA_TYPE = b"application/json"
MAX_LISTED_PROBLEMS = 5
MAX_FIELD_CHARS = 64
MAX_REASON_CHARS = 200


# The shape as JSON Schema, for the OpenAPI document.
REFUSAL_SCHEMA = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


class Refusal(Exception):
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


def validation_refusal(error: ValidationError, prefix: str = "invalid input") -> Refusal:
    """The 400 for a request the contract refused; its error reads `invalid input: field:
    reason; ...` and names at most MAX_LISTED_PROBLEMS problems, with how many more there are."""
    listed = [
        problem(".".join(map(str, item["loc"])), item["msg"], item["type"])
        for item in error.errors(include_url=False, include_context=False, include_input=False)[
            :MAX_LISTED_PROBLEMS
        ]
    ]
    return Refusal(400, f"{prefix}: {summarize(listed, error.error_count())}", listed)


def problem(field: str, reason: Any, kind: Any) -> dict[str, str]:
    return {
        "field": cut(field or "body", MAX_FIELD_CHARS),
        "reason": cut(str(reason), MAX_REASON_CHARS),
        "type": cut(str(kind), MAX_FIELD_CHARS),
    }


def summarize(listed: list[dict[str, str]], total: int) -> str:
    """`field: reason; ...` for the listed problems, and how many more there are."""
    summary = "; ".join(f"{item['field']}: {item['reason']}" for item in listed)
    hidden = total - len(listed)
    return f"{summary}; and {hidden} more" if hidden > 0 else summary


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


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


async def send_refusal(send: Send, refusal: Refusal, *, closing: bool = False) -> None:
    await send_body(send, refusal.status, refusal.body(), headers=refusal.headers, closing=closing)
