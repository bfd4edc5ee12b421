"""The plain reading of the common V2 request against the strict models it stands in for."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.http.errors import ErrorAnswer
from iris_classifier.serving.model.drift import DriftCounts
from iris_classifier.serving.model.prediction import Predictor
from iris_classifier.serving.protocols.v2 import (
    DEFAULT_OUTPUTS,
    OUTPUTS,
    Asked,
    InferenceProtocol,
    parse_request,
    parse_strictly,
    read_common_request,
)
from iris_classifier.serving.telemetry.metrics import ModelMetrics
from tests.support.softmax_classifier import SoftmaxClassifier

# A placeholder the data's own text replaces, so numbers reach the readers spelled as clients
# spell them, not as json.dumps would.
DATA = "@data@"

ABSENT = object()  # a field left out of the request


def usually(common: Any, odd: st.SearchStrategy, percent: int = 90) -> st.SearchStrategy:
    """`common` most of the time, else a draw from `odd`: many requests are then read by both
    readings, and now and then one differs in a single place that one of them may refuse."""
    return st.integers(0, 99).flatmap(lambda n: st.just(common) if n < percent else odd)


valid_size = st.floats(min_value=0, max_value=MAX_FEATURE_CM, exclude_min=True)
size = st.one_of(valid_size, st.integers(min_value=1, max_value=100))
odd_size = st.one_of(
    st.booleans(),
    st.sampled_from(["5.1", None, [], {}, 0, -0.0, 100.0001, 1e-320, 2**63, 10**30]),
    st.integers(min_value=-2, max_value=102),
    st.floats(),
)
spellings = st.sampled_from(["{!r}", "{:.17e}", "{:.25g}", "{:.3f}", "{:E}"])


def spelled(value: Any, spelling: str) -> str:
    if type(value) is float and np.isfinite(value):
        return spelling.format(value)
    return json.dumps(value, allow_nan=True)


@st.composite
def data_text(draw: st.DrawFn, rows: int) -> str:
    count = rows * 4 + draw(usually(0, st.sampled_from([-1, 1, -4])))
    values = [spelled(draw(size), draw(spellings)) for _ in range(max(count, 0))]
    if values and draw(st.booleans()):  # one value that the models may refuse
        values[draw(st.integers(0, len(values) - 1))] = spelled(draw(odd_size), "{!r}")
    if draw(st.booleans()) and count % 4 == 0:
        nested = [values[i : i + 4] for i in range(0, len(values), 4)]
        return "[" + ",".join("[" + ",".join(row) + "]" for row in nested) + "]"
    return "[" + ",".join(values) + "]"


named_output = st.fixed_dictionaries({"name": st.sampled_from(OUTPUTS)})
odd_output = st.sampled_from(
    [
        {"name": "other"},
        {"name": 3},
        {"name": ["label"]},
        {"name": "label", "parameters": {"binary_data": False}},
        {"name": "label", "parameters": {"binary_data": True}},
        {"name": "label", "other": 1},
        {},
    ]
)
outputs = st.one_of(
    st.just(ABSENT),
    st.lists(named_output, min_size=1, max_size=3, unique_by=lambda output: output["name"]),
)
odd_outputs = st.one_of(st.none(), st.lists(st.one_of(named_output, odd_output), max_size=4))


@st.composite
def request(draw: st.DrawFn) -> tuple[bytes, str]:
    rows = draw(st.sampled_from([1, 1, 2, 3]))
    tensor = {
        "name": draw(usually("flowers", st.sampled_from(["other", 1]))),
        "datatype": draw(usually("FP32", st.sampled_from(["FP64", "FP64", "INT32", 1, ["FP32"]]))),
        "shape": draw(
            usually(
                [rows, 4],
                st.sampled_from([[0, 4], [rows, 3], [rows], [rows, 4.0], [True, 4], [rows, 4, 1]]),
            )
        ),
        "data": DATA,
        "parameters": draw(usually(ABSENT, st.sampled_from([None, {}, {"binary_data_size": 16}]))),
    }
    document: dict[str, Any] = {
        "id": draw(usually(ABSENT, st.one_of(st.text(max_size=8), st.integers(), st.none()), 70)),
        "model_name": draw(
            usually(ABSENT, st.sampled_from(["iris_classifier"] * 3 + ["other", None, 1]), 70)
        ),
        "parameters": draw(
            usually(ABSENT, st.sampled_from([None, {}, {"binary_data_output": False}]))
        ),
        "inputs": draw(usually([tensor], st.sampled_from([[], [tensor, tensor], tensor]))),
        "outputs": draw(st.integers(0, 99).flatmap(lambda n: outputs if n < 90 else odd_outputs)),
        "extra": draw(usually(ABSENT, st.integers(), 95)),
    }
    for fields in (document, tensor):
        for key in [key for key, value in fields.items() if value is ABSENT]:
            del fields[key]
    text = json.dumps(document).replace(json.dumps(DATA), draw(data_text(rows)))
    return text.encode(), text


def outcome(parse, body: bytes) -> tuple:
    """What a reading answers with: the request and features, or the refusal in full."""
    try:
        asked, features = parse(body, None)
    except ErrorAnswer as refusal:
        return ("refused", refusal.status, refusal.body(), refusal.headers)
    if type(features) is tuple:  # one row, read as the single-flower route reads a flower
        assert all(type(value) is float for value in features)
        features = np.array([features])
    assert features.dtype == np.float64
    return ("read", asked, features.shape, features.tolist())


def sent(document: dict) -> tuple[bytes, str]:
    text = json.dumps(document)
    return text.encode(), text


ONE = {"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


@settings(max_examples=1500, deadline=None)
@given(sent=request())
# Each a way a plain reading can go wrong, tried on every run.
@example(sent=sent({"inputs": [{**ONE, "data": [5.1, 3.5, 1.4, True]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, True]]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, True]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3], [4, 5, 6, 7, 8]]}]}))
@example(
    sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, False]]}]})
)
@example(sent=sent({"inputs": [ONE], "outputs": [{"name": "label"}, {"name": "label"}]}))
@example(
    sent=sent(
        {"inputs": [ONE], "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    )
)
@example(sent=sent({"inputs": [{**ONE, "data": [5.1, 0, 1.4, 0.2]}]}))
@example(sent=sent({"inputs": [{**ONE, "data": [5.1, "3.5", 1.4, 0.2]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [1, 4], "data": [[5.1, 3.5], [1.4, 0.2]]}]}))
# Many rows: values that are not numbers, in either layout, and integers past float64's range.
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3, 4], [5, "6", 7, 8]]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, None, 8]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, [7], 8]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, {}, 8]}]}))
@example(sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3, 4], "5678"]}]}))
@example(
    sent=sent(
        {"inputs": [{**ONE, "shape": [2, 4], "data": [[1, 2, 3, 4], dict.fromkeys("abcd", 5)]}]}
    )
)
@example(
    sent=sent({"inputs": [{**ONE, "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 2**64 - 1]}]})
)
def test_the_common_reading_answers_and_refuses_as_the_models_do(sent: tuple[bytes, str]) -> None:
    body, text = sent
    assert outcome(parse_request, body) == outcome(parse_strictly, body), text


def test_the_common_request_is_read_without_the_models() -> None:
    # The equivalence above holds trivially if the plain reading never answers: it must take
    # the shapes clients send, flat and nested, with or without an id and named outputs.
    flat = {
        "name": "flowers",
        "datatype": "FP32",
        "shape": [2, 4],
        "data": [5.1, 3.5, 1.4, 0.2] * 2,
    }
    nested = {**flat, "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]]}
    for document in (
        {"inputs": [flat]},
        {"id": "1", "model_name": "iris_classifier", "inputs": [nested]},
        {"inputs": [flat], "outputs": [{"name": "label"}, {"name": "probabilities"}]},
    ):
        assert read_common_request(json.dumps(document).encode()) is not None, document


def test_a_boolean_among_the_values_is_left_to_the_models() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, True]}
            ]
        }
    ).encode()
    assert read_common_request(body) is None


PREDICTOR = Predictor(
    SoftmaxClassifier(),
    TrainingRanges(FEATURE_NAMES, [4.0, 2.0, 1.0, 0.1], [6.0, 4.5, 7.0, 2.0]),
    ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="iris:v1", estimator="x"),
    "iris:v1",
    drift=DriftCounts(None, model_tag="iris:v1"),
)
PROTOCOL = InferenceProtocol(
    PREDICTOR, model_version="v1", server_version="0.1.0", parameters={"estimator": "x"}
)
flower_value = st.one_of(
    valid_size,
    st.integers(min_value=1, max_value=int(MAX_FEATURE_CM)),
    st.floats(min_value=0, max_value=MAX_FEATURE_CM, exclude_min=True, width=32),
)


@settings(max_examples=500, deadline=None)
@given(
    values=st.lists(flower_value, min_size=4, max_size=4),
    outputs=st.one_of(st.none(), st.lists(st.sampled_from(OUTPUTS), min_size=1, unique=True)),
    request_id=st.one_of(st.none(), st.text(max_size=8)),
)
@example(values=[5, 3, 1, 1], outputs=list(OUTPUTS), request_id=None)
@example(values=[MAX_FEATURE_CM, 1e-45, 6.1, 2.5], outputs=None, request_id="a")
# Every output, after an id, for a flower outside the training range in two features.
@example(values=[7.5, 3.0, 5.0, 2.5], outputs=list(reversed(OUTPUTS)), request_id='%b"')
def test_one_row_is_answered_as_the_general_path_answers_it(
    values: list[float], outputs: list[str] | None, request_id: str | None
) -> None:
    document: dict[str, Any] = {
        "inputs": [{"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": values}]
    }
    if request_id is not None:
        document["id"] = request_id
    if outputs is not None:
        document["outputs"] = [{"name": name} for name in outputs]
    body = orjson.dumps(document)
    read = read_common_request(body)
    assert read is not None, "the common reading was not taken"
    assert type(read[1]) is tuple, "one row was not read as floats"
    asked, features = parse_strictly(body, None)
    general = PROTOCOL._answer(asked, PREDICTOR.predict(features))
    assert PROTOCOL.infer(body, None) == general, body
    # Binary outputs come only from the models' reading, but the one-row answer writes them too.
    binary = Asked(request_id, None, tuple((name, True) for name in outputs or DEFAULT_OUTPUTS))
    one_row = PROTOCOL._answer(binary, PREDICTOR.predict(read[1]))
    assert one_row == PROTOCOL._answer(binary, PREDICTOR.predict(features)), body
