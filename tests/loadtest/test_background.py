"""The background users beside the good ones: who does what, what they send, what is judged."""

from __future__ import annotations

import json

from iris_classifier.serving.config import MAX_BATCH_ROWS, MAX_BODY_BYTES
from iris_classifier.serving.protocols.contract import BatchClassification, BatchRequest
from loadtest.background import (
    HOSTILE_FIELDS,
    HOSTILE_NAME,
    LARGE_BATCH_NAME,
    good_requests,
    hostile_body,
    large_batch_body,
    large_batch_problem,
    user_role,
)
from loadtest.request_log import RequestRecord


def test_users_take_their_roles_in_the_order_they_start() -> None:
    roles = [
        user_role(number, kept_alive_users=2, hostile_users=1, large_batch_users=2)
        for number in range(7)
    ]
    assert roles == [
        "kept-alive",
        "kept-alive",
        "hostile",
        "large-batch",
        "large-batch",
        "fresh",
        "fresh",
    ]


def test_no_background_user_unless_asked_for() -> None:
    roles = {
        user_role(number, kept_alive_users=0, hostile_users=0, large_batch_users=0)
        for number in range(5)
    }
    assert roles == {"fresh"}


def test_the_hostile_body_is_within_the_body_limit_so_the_service_reads_it_whole() -> None:
    body = hostile_body()
    assert len(body) <= MAX_BODY_BYTES, len(body)
    assert len(json.loads(body)) == HOSTILE_FIELDS + 1  # and the name that forges a log line


def test_the_large_batch_is_valid_and_about_as_large_as_the_hostile_body() -> None:
    body = large_batch_body()
    request = BatchRequest.model_validate_json(body)  # what the service accepts
    assert len(request.flowers) == MAX_BATCH_ROWS
    assert len(body) <= MAX_BODY_BYTES
    assert 0.85 <= len(body) / len(hostile_body()) <= 1.15, (len(body), len(hostile_body()))
    # Unrounded, as a client writing float64 values sends them.
    first = json.loads(body)["flowers"][0]
    assert all(len(repr(value)) > 6 for value in first.values()), first


def test_the_latency_gates_judge_only_the_good_requests() -> None:
    records = [
        RequestRecord(float(index), 5.0, name, "replica-1", True, "")
        for index, name in enumerate(
            ["/iris/classify_iris", HOSTILE_NAME, LARGE_BATCH_NAME, "/iris/classify_batch"]
        )
    ]
    assert [record.name for record in good_requests(records)] == [
        "/iris/classify_iris",
        "/iris/classify_batch",
    ]


def batch_answer(rows: int) -> bytes:
    prediction = {"class": "setosa", "probability": 0.98, "out_of_range": []}
    return (
        BatchClassification(predictions=[prediction] * rows, model_version="m:1")
        .model_dump_json(by_alias=True)
        .encode()
    )


def test_the_large_batch_answer_needs_one_prediction_per_flower() -> None:
    assert large_batch_problem(batch_answer(MAX_BATCH_ROWS)) is None
    assert large_batch_problem(batch_answer(MAX_BATCH_ROWS - 1)) == (
        f"{MAX_BATCH_ROWS - 1} predictions for {MAX_BATCH_ROWS} flowers"
    )
    assert large_batch_problem(b'{"detail": "bad"}') is not None
