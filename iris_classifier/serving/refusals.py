"""The answer to a request the contract refuses, and its log line.

A refusal costs about what reading the request cost, whatever the request holds: at most
MAX_LISTED_PROBLEMS problems are listed, in the answer and in the log, each field name and
reason cut to a fixed length, with the count of the others.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

MAX_LISTED_PROBLEMS = 5
MAX_FIELD_CHARS = 64
MAX_REASON_CHARS = 200


def validation_refusal(error: ValidationError) -> tuple[dict[str, Any], str]:
    """The 400 answer for a request the contract refused, and its one-line summary.

    `{"error": "invalid input: sepal_length: Input should be a finite number", "detail":
    [{"field": "sepal_length", "reason": "...", "type": "finite_number"}]}`
    """
    listed = [
        problem(item["loc"], item["msg"], item["type"])
        for item in error.errors(include_url=False, include_context=False, include_input=False)[
            :MAX_LISTED_PROBLEMS
        ]
    ]
    summary = summarize(listed, error.error_count())
    return {"error": f"invalid input: {summary}", "detail": listed}, summary


def problem(location: Any, reason: Any, kind: Any) -> dict[str, str]:
    field = ".".join(str(part) for part in location) if isinstance(location, list | tuple) else ""
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
