"""Property-based checks of the HTTP contract: any valid flower is answered, any bad value refused."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iris_classifier.flowers import FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.training.parity import TOLERANCE as PARITY_TOLERANCE
from tests.support.reference_model import reference_probabilities

CLASSIFY = "/iris/classify_iris"
BATCH = "/iris/classify_batch"
HEADERS = {"Content-Type": "application/json"}
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

valid_size = st.floats(min_value=0, max_value=MAX_FEATURE_CM, exclude_min=True, allow_nan=False)
valid_flower = st.fixed_dictionaries({name: valid_size for name in FEATURE_NAMES})


def is_valid_size(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_FEATURE_CM
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
bad_value = json_values.filter(lambda value: not is_valid_size(value))


def encode(document: object) -> bytes:
    # allow_nan: NaN and Infinity must reach the server as the bare tokens some clients send.
    return json.dumps(document, allow_nan=True).encode()


# The service runs the ONNX export of the stored pipeline, which train.py's parity gate holds
# to scikit-learn's probabilities within 1e-5; its answers then round to 4 places, and
# `probability` to 2.
FAST_PATH_TOLERANCE = PARITY_TOLERANCE


@SETTINGS
@given(flower=valid_flower)
def test_any_valid_flower_gets_the_models_answer(
    service_client, trained_model: str, flower: dict
) -> None:
    response = service_client.post(CLASSIFY, content=encode(flower), headers=HEADERS)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == trained_model
    (expected,) = reference_probabilities(trained_model, [flower])
    assert set(answer["probabilities"]) == set(expected)
    for name, probability in expected.items():
        assert abs(answer["probabilities"][name] - probability) <= 0.00005 + FAST_PATH_TOLERANCE
    # The most likely class of the stored model (either one, should two tie within tolerance).
    assert expected[answer["class"]] >= max(expected.values()) - FAST_PATH_TOLERANCE
    assert abs(answer["probability"] - expected[answer["class"]]) <= 0.005 + FAST_PATH_TOLERANCE


@SETTINGS
@given(flower=valid_flower, field=st.sampled_from(FEATURE_NAMES), value=bad_value)
def test_any_bad_value_is_refused_naming_its_field(
    service_client, flower: dict, field: str, value: object
) -> None:
    response = service_client.post(
        CLASSIFY, content=encode({**flower, field: value}), headers=HEADERS
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert [problem["field"] for problem in body["detail"]] == [field]
    assert field in body["error"]


@settings(max_examples=40, deadline=None)
@given(flowers=st.lists(valid_flower, min_size=1, max_size=50))
def test_batch_answers_match_single_answers(service_client, flowers: list[dict]) -> None:
    batch = service_client.post(BATCH, content=encode({"flowers": flowers}), headers=HEADERS)
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == len(flowers)
    for flower, prediction in zip(flowers, predictions, strict=True):
        single = service_client.post(CLASSIFY, content=encode(flower), headers=HEADERS).json()
        assert prediction == {
            "class": single["class"],
            "probability": single["probability"],
            "out_of_range": single["out_of_range"],
        }


@st.composite
def mutated_json(draw) -> bytes:
    """A valid request's JSON with one edit: a member dropped, added or given another value,
    the document wrapped or nested, or its text cut, spliced or a byte changed. Most stay
    JSON, so they reach the contract's checks rather than stopping at the parser."""
    flower = draw(valid_flower)
    document: object = draw(st.sampled_from([flower, {"flowers": [flower, flower]}]))
    edit = draw(
        st.sampled_from(["drop", "add", "replace", "wrap", "nest", "cut", "splice", "byte"])
    )
    members = dict(document) if isinstance(document, dict) else {}
    key = draw(st.sampled_from(sorted(members)))
    if edit == "drop":
        members.pop(key)
        return encode(members)
    if edit == "add":
        return encode({**members, draw(st.text(max_size=8)): draw(json_values)})
    if edit == "replace":
        return encode({**members, key: draw(json_values)})
    if edit == "wrap":
        return encode([document])
    if edit == "nest":
        return encode({key: document})
    text = encode(document)
    where = draw(st.integers(min_value=0, max_value=len(text)))
    if edit == "cut":
        return text[:where]
    if edit == "splice":
        return text[:where] + draw(st.binary(min_size=1, max_size=8)) + text[where:]
    changed = draw(st.integers(min_value=0, max_value=255))
    return text[:where] + bytes([changed]) + text[where + 1 :]


@SETTINGS
@given(body=mutated_json(), route=st.sampled_from([CLASSIFY, BATCH]))
def test_a_mutated_request_is_answered_or_refused_never_a_server_error(
    service_client, body: bytes, route: str
) -> None:
    response = service_client.post(route, content=body, headers=HEADERS)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert isinstance(response.json()["error"], str)
    else:
        answer = response.json()
        assert "class" in answer or "predictions" in answer
