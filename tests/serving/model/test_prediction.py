"""The prediction routes' own reading of requests, and their answers against the contract's models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from iris_classifier.drift_bins import DriftBins, FeatureBins
from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.model.drift import DriftCounts
from iris_classifier.serving.model.prediction import Predictor
from iris_classifier.serving.protocols.contract import (
    BatchClassification,
    BatchRequest,
    Classification,
    features_of,
    parse_batch,
    read_flower,
)
from iris_classifier.serving.telemetry.metrics import ModelMetrics
from tests.serving.telemetry.test_metrics import delta, snapshot
from tests.support.softmax_classifier import SoftmaxClassifier

HEADERS = {"Content-Type": "application/json"}

size = st.one_of(
    st.floats(min_value=0, max_value=MAX_FEATURE_CM, exclude_min=True),
    st.integers(min_value=-2, max_value=102),
    st.sampled_from([0, -1.5, 100, 100.0001, float("nan"), float("inf"), "5.1", None, True]),
)
row = st.one_of(
    st.dictionaries(
        st.sampled_from([*FEATURE_NAMES, "species", "Id", "sepal_length "]), size, max_size=7
    ),
    st.fixed_dictionaries({name: size for name in FEATURE_NAMES}),
    st.sampled_from([None, [], 1, "flower"]),
)
batch = st.one_of(
    st.fixed_dictionaries({"flowers": st.lists(row, max_size=6)}),
    st.fixed_dictionaries({"flowers": st.lists(row, max_size=3), "extra": st.integers()}),
    st.sampled_from([{}, [], {"flowers": None}, {"flowers": {}}]),
)


def reading(parse, body: bytes) -> np.ndarray | list:
    """The batch's features as `parse` reads them, or the errors it refuses it with."""
    try:
        return parse(body)
    except ValidationError as error:
        return error.errors(include_url=False, include_input=False)


def by_contract(body: bytes) -> np.ndarray:
    return features_of(BatchRequest.model_validate_json(body).flowers, read_flower)


@settings(max_examples=400, deadline=None)
@given(document=batch)
def test_batch_reading_accepts_and_refuses_exactly_what_the_contract_does(document) -> None:
    body = json.dumps(document, allow_nan=True).encode()
    expected, got = reading(by_contract, body), reading(parse_batch, body)
    if isinstance(expected, list):
        assert got == expected
    else:
        assert isinstance(got, np.ndarray), f"refused what the contract accepts: {got}"
        np.testing.assert_array_equal(got, expected)


def test_a_row_with_unknown_fields_is_refused_by_the_contract_with_its_bounded_error() -> None:
    flower = dict.fromkeys(FEATURE_NAMES, 1.0) | {f"x{index}": 1 for index in range(1000)}
    with pytest.raises(ValidationError) as refused:
        parse_batch(json.dumps({"flowers": [flower]}).encode())
    (problem,) = refused.value.errors()
    assert problem["loc"] == ("flowers", 0)
    assert problem["msg"].startswith("1000 unknown fields")


def test_http_answers_are_the_contracts_answers(service_client) -> None:
    flowers = [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
        {"sepal_length": 90.0, "sepal_width": 0.1, "petal_length": 4.0, "petal_width": 1.3},
    ]
    for flower in flowers:
        over_http = service_client.post("/iris/classify_iris", json=flower, headers=HEADERS)
        assert over_http.status_code == 200
        typed = Classification.model_validate_json(over_http.content)
        assert over_http.json() == typed.model_dump(mode="json", by_alias=True)
    over_http = service_client.post("/iris/classify_batch", json={"flowers": flowers})
    typed_batch = BatchClassification.model_validate_json(over_http.content)
    assert over_http.json() == typed_batch.model_dump(mode="json", by_alias=True)


LOW, HIGH = (4.3, 2.0, 1.0, 0.1), (7.9, 4.4, 6.9, 2.5)
EDGES = (1.6, 3.0, 4.4, 5.1, 5.8)


def beside(value: float) -> list[float]:
    """The value and its float32 neighbours: where a check in another precision goes wrong."""
    single = np.float32(value)
    return [value, *(float(np.nextafter(single, np.float32(side))) for side in (0, 9))]


def test_a_batch_counts_and_flags_as_its_rows_predicted_one_by_one() -> None:
    """Metrics, drift bins and the range check of a many-row request against the one-row path,
    with values on and beside every bound and edge."""
    predictor = Predictor(
        SoftmaxClassifier(),
        TrainingRanges(FEATURE_NAMES, LOW, HIGH),
        ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="batch:1", estimator="x"),
        "batch:1",
        drift=DriftCounts(
            DriftBins(
                dict.fromkeys(
                    FEATURE_NAMES, FeatureBins(EDGES, (0.25, 0.25, 0.125, 0.125, 0.125, 0.125))
                ),
                FEATURE_NAMES,
            ),
            model_tag="batch:1",
        ),
    )
    sizes = sorted({size for value in (*LOW, *HIGH, *EDGES) for size in beside(value)})
    rng = np.random.default_rng(3)
    features = rng.choice(sizes, size=(300, len(FEATURE_NAMES)))

    start = snapshot()
    rows = [predictor.predict(tuple(row)) for row in features.tolist()]
    one_by_one = snapshot()
    batch = predictor.predict(features)
    batched = snapshot()

    assert batch.out_of_range == [row.out_of_range for row in rows]
    assert any(batch.out_of_range)
    assert not all(batch.out_of_range)
    changed = {key for key in batched if key[0].startswith("iris_") and "batch_rows" not in key[0]}
    assert any(name.startswith("iris_drift") for name, _ in changed)
    for name, labels in changed:
        by_one = delta(start, one_by_one, name, **dict(labels))
        assert delta(one_by_one, batched, name, **dict(labels)) == pytest.approx(by_one), name


class FixedProbabilities:
    """A classifier that answers every flower with the probabilities it was given."""

    class_names = CLASS_NAMES

    def __init__(self, probabilities: list[float], dtype: type) -> None:
        self.dtype = dtype
        self.probabilities = probabilities

    def predict_proba_one(self, features) -> list[float]:
        return self.probabilities


@settings(max_examples=300, deadline=None)
@given(
    single=st.lists(
        st.floats(min_value=0, max_value=1, width=32), min_size=len(CLASS_NAMES), max_size=3
    ),
    double=st.lists(st.floats(min_value=0, max_value=1), min_size=len(CLASS_NAMES), max_size=3),
)
@example(single=[0.5, 0.25, 0.125], double=[0.00025, 0.12345, 0.99995])
def test_single_flower_probabilities_are_rounded_to_4_digits_as_round_does(single, double) -> None:
    """Either precision's answer holds round(p, 4) of the model's values, a double's ties
    included (0.00025 is a little above the tie, and 2.5 once scaled by 10,000)."""
    for values, dtype in ((single, np.float32), (double, np.float64)):
        predictor = Predictor(
            FixedProbabilities(values, dtype),
            TrainingRanges(FEATURE_NAMES, LOW, HIGH),
            ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="round:1", estimator="x"),
            "round:1",
            drift=DriftCounts(None, model_tag="round:1"),
        )
        answer = predictor.classify([5.1, 3.5, 1.4, 0.2])
        assert list(answer["probabilities"].values()) == [round(p, 4) for p in values], dtype
