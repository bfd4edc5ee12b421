"""Reading a request body within its limits (iris_classifier/serving/http/limits.py): the first
Content-Type and Content-Length of a request count, as Starlette's `Headers` reads them."""

from __future__ import annotations

import asyncio

import pytest

from iris_classifier.serving.http.limits import BodyRefused, read_body

BODY = b'{"sepal_length": 5.1}'
MAX_BYTES = 100


def read(headers: list[tuple[bytes, bytes]]) -> bytes | int:
    """The body read, or the status it was refused with."""

    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    try:
        return asyncio.run(read_body({"headers": headers}, receive, MAX_BYTES)) or b""
    except BodyRefused as refusal:
        return refusal.status


JSON, FORM = b"application/json", b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("headers", "read_as"),
    [
        ([], BODY),
        ([(b"host", b"x"), (b"content-type", JSON + b"; charset=utf-8")], BODY),
        ([(b"content-type", FORM)], 415),
        ([(b"content-type", JSON), (b"content-type", FORM)], BODY),
        ([(b"content-type", FORM), (b"content-type", JSON)], 415),
        ([(b"content-length", b"20"), (b"content-length", b"9999")], BODY),
        ([(b"content-length", b"9999"), (b"content-length", b"20")], 413),
        ([(b"content-length", b"9999"), (b"content-type", FORM)], 415),
    ],
)
def test_the_first_content_type_and_length_decide(
    headers: list[tuple[bytes, bytes]], read_as: bytes | int
) -> None:
    assert read(headers) == read_as
