"""The prediction routes' own reading of requests, and their answers against the contract's models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from iris_classifier.flowers import FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.serving.protocols.contract import (
    BatchClassification,
    BatchRequest,
    Classification,
    features_of,
    parse_batch,
    read_flower,
)

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
