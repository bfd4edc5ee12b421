"""The prediction log (iris_classifier/serving/model/prediction_log.py): what was asked and answered."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from iris_classifier.serving.http.request_context import CURRENT_REQUEST, context_for
from iris_classifier.serving.model.prediction_log import (
    LOGGER_NAME,
    PredictionLineFormatter,
    PredictionLog,
)
from iris_classifier.serving.telemetry.logs import configure_logging, utc_timestamp
from tests.conftest import SEED_FLOWER

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
HOSTILE_NAMES = [
    "x\nFAKE LOG LINE [ERROR] admin",
    "x\r\x1b[2KFAKE",
    "x\u2028FAKE",
    'q","log":"access',
]


@pytest.fixture
def captured(tmp_path: Path) -> Iterator[Path]:
    """The prediction logger's lines, in the service's line format, in a file of their own."""
    path = tmp_path / "predictions.jsonl"
    handler = logging.FileHandler(path)
    handler.setFormatter(PredictionLineFormatter("replica-1", utc_timestamp))
    predictions = logging.getLogger(LOGGER_NAME)
    saved = predictions.handlers[:], predictions.propagate, predictions.level
    predictions.handlers[:] = [handler]
    predictions.propagate = False
    predictions.setLevel(logging.INFO)
    try:
        yield path
    finally:
        predictions.handlers[:], predictions.propagate, predictions.level = saved
        handler.close()


# A prediction line's fields, in the order they are written.
PREDICTION_FIELDS = [
    "log",
    "time",
    "replica",
    "request_id",
    "route",
    "model_version",
    "rows",
    "rows_left_out",
    "flowers",
]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def logging_predictor(service_client, monkeypatch: pytest.MonkeyPatch):
    """The in-process service's one Predictor, logging every request."""
    import service

    predictor = service.routes.served.predictor
    assert predictor.prediction_log is None, "the prediction log is off by default"
    monkeypatch.setattr(
        predictor,
        "prediction_log",
        PredictionLog(1.0, 32, predictor.model.class_names, predictor.model_tag),
    )
    return predictor


def test_seed_and_tensor_requests_are_logged_alike(
    service_client, logging_predictor, captured: Path
) -> None:
    """Single flower, batch, V2 JSON and V2 binary: one line each, with the same fields."""
    infer = "/v2/models/iris_classifier/infer"
    rows = np.asarray(FLOWERS[:2], dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "flowers",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    ).encode()
    sent = {
        "single": (
            "/iris/classify_iris",
            {"json": dict(zip(FEATURE_NAMES, FLOWERS[0], strict=True))},
        ),
        "batch": (
            "/iris/classify_batch",
            {
                "json": {
                    "flowers": [dict(zip(FEATURE_NAMES, row, strict=True)) for row in FLOWERS[:2]]
                }
            },
        ),
        "v2-json": (
            infer,
            {
                "json": {
                    "inputs": [
                        {
                            "name": "flowers",
                            "datatype": "FP32",
                            "shape": [2, 4],
                            "data": FLOWERS[:2],
                        }
                    ]
                }
            },
        ),
        "v2-binary": (
            infer,
            {
                "content": header + rows.astype("<f4").tobytes(),
                "headers": {"Inference-Header-Content-Length": str(len(header))},
            },
        ),
    }
    for request_id, (path, request) in sent.items():
        headers = {"X-Request-ID": request_id, **request.pop("headers", {})}
        response = service_client.post(path, headers=headers, **request)
        assert response.status_code == 200, response.text
    lines = {line["request_id"]: line for line in lines_of(captured)}
    assert set(lines) == set(sent)
    first_flower = dict(zip(FEATURE_NAMES, FLOWERS[0], strict=True))
    for request_id, line in lines.items():
        assert line["log"] == "prediction"
        assert line["route"] == sent[request_id][0]
        assert line["model_version"] == logging_predictor.model_tag
        assert line["rows"] == len(line["flowers"]) == (1 if request_id == "single" else 2)
        assert line["rows_left_out"] == 0
        flower = line["flowers"][0]
        assert {name: round(flower[name], 5) for name in FEATURE_NAMES} == first_flower
        assert flower["class"] == "setosa"
        assert set(flower["probabilities"]) == set(CLASS_NAMES)
        assert flower["out_of_range"] == []
    # Every front end logs the same answer for the same flower.
    assert len({json.dumps(line["flowers"][0]["probabilities"]) for line in lines.values()}) == 1


def test_the_answer_logged_is_the_answer_given(
    service_client, logging_predictor, captured: Path
) -> None:
    answer = service_client.post("/iris/classify_iris", json=SEED_FLOWER).json()
    (line,) = lines_of(captured)
    (flower,) = line["flowers"]
    assert flower["class"] == answer["class"]
    assert flower["probabilities"] == answer["probabilities"]
    assert flower["out_of_range"] == answer["out_of_range"]


def log_in_a_request(log: PredictionLog, rows: int) -> None:
    features = np.tile(np.asarray(FLOWERS), (rows // 3 + 1, 1))[:rows]
    probabilities = np.full((rows, len(log.class_names)), 1 / len(log.class_names))
    token = CURRENT_REQUEST.set(
        context_for({"method": "POST", "path": "/p", "headers": [(b"x-request-id", b"r-1")]})
    )
    try:
        log.log_many(features, probabilities, [0] * rows, [["sepal_length"]] * rows)
    finally:
        CURRENT_REQUEST.reset(token)


def test_a_large_batch_shows_its_first_rows_and_counts_the_rest(captured: Path) -> None:
    log_in_a_request(PredictionLog(1.0, 3, CLASS_NAMES, "iris_classifier:v1"), rows=1000)
    (line,) = lines_of(captured)
    assert (line["rows"], line["rows_left_out"], len(line["flowers"])) == (1000, 997, 3)
    assert [[flower[name] for name in FEATURE_NAMES] for flower in line["flowers"]] == FLOWERS


def test_hostile_class_names_can_neither_break_a_line_nor_add_a_field(captured: Path) -> None:
    """Class names come from the training data's labels: any text, a newline included."""
    names = [*HOSTILE_NAMES, "y" * 100_000]
    log_in_a_request(PredictionLog(1.0, 32, names, "iris_classifier:v1\nFAKE"), rows=40)
    text = captured.read_text()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    line = text[:-1]
    assert "\r" not in line
    assert "\x1b" not in line
    assert line.isascii(), "a line separator or escape sequence must be written escaped"
    assert len(line.splitlines()) == 1
    assert len(line) < 64 * 1024
    entry = json.loads(line)
    assert list(entry) == PREDICTION_FIELDS
    assert entry["log"] == "prediction"
    assert entry["model_version"] == "iris_classifier:v1\nFAKE"
    for flower in entry["flowers"]:
        assert list(flower) == [*FEATURE_NAMES, "class", "probabilities", "out_of_range"]
        assert list(flower["probabilities"])[:4] == HOSTILE_NAMES
        assert flower["class"] == HOSTILE_NAMES[0]
    assert (len(entry["flowers"]), entry["rows_left_out"]) == (32, 8)


def test_a_rate_logs_about_that_share_of_requests() -> None:
    random.seed(7)
    assert not any(PredictionLog(0.0, 1, CLASS_NAMES, "v").sampled() for _ in range(1000))
    assert all(PredictionLog(1.0, 1, CLASS_NAMES, "v").sampled() for _ in range(1000))
    sampled = sum(PredictionLog(0.3, 1, CLASS_NAMES, "v").sampled() for _ in range(10_000))
    # 0.3 of 10,000 draws, within five standard deviations (46 each).
    assert 2770 < sampled < 3230


def test_prediction_lines_are_json_when_the_other_lines_are_text(
    capsys: pytest.CaptureFixture,
) -> None:
    root, predictions = logging.getLogger(), logging.getLogger(LOGGER_NAME)
    saved_root, saved_predictions = root.handlers[:], predictions.handlers[:]
    try:
        writer = configure_logging("text", "replica-1")
        logging.getLogger("iris_classifier.access").warning("POST /p 200")
        log_in_a_request(PredictionLog(1.0, 32, CLASS_NAMES, "iris_classifier:v1"), rows=2)
        writer.flush()
        access, prediction = capsys.readouterr().out.splitlines()
    finally:
        root.handlers[:] = saved_root
        predictions.handlers[:] = saved_predictions
    assert " iris_classifier.access " in access
    assert not access.startswith("{")
    assert prediction.startswith('{"log":"prediction",')
    assert json.loads(prediction)["rows"] == 2
