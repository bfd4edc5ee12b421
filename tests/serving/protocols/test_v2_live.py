"""The Open Inference Protocol against a real `bentoml serve`, through Triton's own client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from iris_classifier.flowers import CLASS_NAMES
from tests.conftest import under_ci

try:
    import tritonclient.http as tritonclient_http
    from tritonclient.utils import InferenceServerException
except ImportError:
    # A dev dependency: skipped where it is missing, but under CI a missing one is a failure.
    if under_ci():
        raise
    pytest.skip("tritonclient is not installed (make install)", allow_module_level=True)

MODEL = "iris_classifier"
FLOWERS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [2, 4, 2, 4]],
    dtype=np.float32,
)
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(live_server: str):
    client = tritonclient_http.InferenceServerClient(url=live_server.removeprefix("http://"))
    yield client
    client.close()


def infer(client, flowers: np.ndarray, *, binary: bool, outputs=("probabilities", "label")):
    tensor = tritonclient_http.InferInput("flowers", list(flowers.shape), "FP32")
    tensor.set_data_from_numpy(flowers, binary_data=binary)
    requested = [
        tritonclient_http.InferRequestedOutput(name, binary_data=binary) for name in outputs
    ]
    return client.infer(MODEL, [tensor], outputs=requested, request_id="req-1")


def single_answers(live_server: str, flowers: np.ndarray) -> list[dict]:
    answers = []
    for row in flowers.tolist():
        body = json.dumps(
            dict(
                zip(
                    ("sepal_length", "sepal_width", "petal_length", "petal_width"), row, strict=True
                )
            )
        )
        request = urllib.request.Request(
            f"{live_server}/iris/classify_iris", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append(json.load(response))
    return answers


def test_health_and_readiness(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    version = client.get_model_metadata(MODEL)["versions"][0]
    assert client.is_model_ready(MODEL, model_version=version)
    assert not client.is_model_ready(MODEL, model_version="no-such-version")


def test_metadata_describes_the_served_model(client, trained_model: str) -> None:
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["versions"] == [trained_model.split(":")[1]]
    assert model["inputs"] == [{"name": "flowers", "datatype": "FP32", "shape": [-1, 4]}]
    assert {output["name"]: output["datatype"] for output in model["outputs"]} == {
        "probabilities": "FP32",
        "label": "BYTES",
        "out_of_range": "BYTES",
    }
    assert model["parameters"]["class_names"] == list(CLASS_NAMES)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_probabilities_equal_the_single_flower_endpoints(
    client, live_server: str, binary: bool
) -> None:
    result = infer(client, FLOWERS, binary=binary)
    probabilities = result.as_numpy("probabilities")
    # Binary BYTES come back as bytes, JSON ones as str.
    labels = [
        label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")
    ]
    assert result.get_response()["id"] == "req-1"
    classes = client.get_model_metadata(MODEL)["parameters"]["class_names"]
    for row, single in enumerate(single_answers(live_server, FLOWERS)):
        assert labels[row] == single["class"]
        # The single-flower endpoint rounds to 4 places.
        np.testing.assert_allclose(
            probabilities[row], [single["probabilities"][name] for name in classes], atol=5.1e-5
        )


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_out_of_range_comes_back_when_asked_for(client, live_server: str, binary: bool) -> None:
    result = infer(client, FLOWERS, binary=binary, outputs=("out_of_range",))
    flagged = [
        value.decode() if isinstance(value, bytes) else value
        for value in result.as_numpy("out_of_range")
    ]
    assert flagged == [
        ",".join(single["out_of_range"]) for single in single_answers(live_server, FLOWERS)
    ]
    assert flagged[3] != ""  # the sample flower lies outside the training ranges


def test_only_requested_outputs_come_back(client) -> None:
    result = infer(client, FLOWERS, binary=True, outputs=("label",))
    assert result.as_numpy("probabilities") is None
    assert len(result.as_numpy("label")) == len(FLOWERS)


def test_ten_thousand_rows_in_binary(client) -> None:
    rng = np.random.default_rng(3)
    flowers = rng.uniform(0.1, 8.0, size=(10_000, 4)).astype(np.float32)
    result = infer(client, flowers, binary=True)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (10_000, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    sample = rng.choice(10_000, size=5, replace=False)
    json_result = infer(client, flowers[sample], binary=False)
    np.testing.assert_allclose(
        json_result.as_numpy("probabilities"), probabilities[sample], atol=1e-6
    )


def refused(client, name: str, flowers: np.ndarray, datatype: str, *, binary: bool = True) -> str:
    tensor = tritonclient_http.InferInput(name, list(flowers.shape), datatype)
    tensor.set_data_from_numpy(flowers, binary_data=binary)
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor])
    assert caught.value.status() == "400", caught.value
    return caught.value.message()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bad_tensors_from_the_client_are_refused(client, binary: bool) -> None:
    nan = FLOWERS.copy()
    nan[2, 1] = np.nan
    # JSON has no NaN: the client cannot even send one that way.
    if binary:
        assert "row 2: sepal_width is not a finite number" in refused(
            client, "flowers", nan, "FP32"
        )
    big = FLOWERS.copy()
    big[1, 3] = 250
    assert "input 'flowers' row 1: petal_width" in refused(
        client, "flowers", big, "FP32", binary=binary
    )
    assert "each row must hold the 4 features" in refused(
        client, "flowers", FLOWERS[:, :3].copy(), "FP32", binary=binary
    )
    # The client hands over the one-line error only: it leads with the field refused.
    assert refused(client, "flowers", FLOWERS.astype(np.int32), "INT32", binary=binary).startswith(
        "inputs[0].datatype: "
    )
    assert refused(client, "petals", FLOWERS, "FP32", binary=binary).startswith("inputs[0].name: ")
    assert client.is_server_ready()


def test_fp64_is_accepted_and_converted(client) -> None:
    tensor = tritonclient_http.InferInput("flowers", list(FLOWERS.shape), "FP64")
    tensor.set_data_from_numpy(FLOWERS.astype(np.float64), binary_data=True)
    result = client.infer(MODEL, [tensor])
    expected = infer(client, FLOWERS, binary=True).as_numpy("probabilities")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "flowers",
                "datatype": "FP32",
                "shape": [1, 4],
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
).encode()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


BAD_DATA = (
    b'{"inputs": [{"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, %s, 4]}]}'
)


# Each refusal's problem as (field, type), and the service's own words where it writes them.
@pytest.mark.parametrize(
    ("body", "headers", "problem", "says"),
    [
        (b'{"inputs": [', {}, ("the request", "json_invalid"), "not valid JSON"),
        (BAD_DATA % b'"3"', {}, ("input 'flowers' row 0: petal_length", "float_type"), None),
        (BAD_DATA % b"false", {}, ("input 'flowers' row 0: petal_length", "float_type"), None),
        (
            b'{"inputs": [{"name": "flowers", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}]}',
            {},
            ("inputs[0]", "bad_request"),
            "holds 4 values",
        ),
        (
            BINARY_HEADER + b"\0" * 8,
            {"Inference-Header-Content-Length": str(len(BINARY_HEADER))},
            ("inputs[0]", "bad_request"),
            "after the JSON header is 8 bytes",
        ),
        (
            b"{}",
            {"Inference-Header-Content-Length": "9"},
            ("inference-header-content-length", "bad_request"),
            "Inference-Header-Content-Length is '9'",
        ),
    ],
)
def test_malformed_requests_get_a_400_naming_the_problem(
    live_server: str, body: bytes, headers: dict, problem: tuple[str, str], says: str | None
) -> None:
    status, answer = post(
        f"{live_server}/v2/models/{MODEL}/infer",
        body,
        {"Content-Type": "application/json", **headers},
    )
    assert status == 400, answer
    assert [(item["field"], item["type"]) for item in answer["detail"]] == [problem], answer
    if says is not None:
        assert says in answer["error"]


def test_unknown_model_or_version_is_a_404(live_server: str) -> None:
    for path in ("/v2/models/other", f"/v2/models/{MODEL}/versions/nope", "/v2/models/other/ready"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{live_server}{path}", timeout=10).close()
        with caught.value as error:
            assert error.code == 404, path
            assert "unknown" in json.load(error)["error"]
    status, answer = post(
        f"{live_server}/v2/models/other/infer", b"{}", {"Content-Type": "application/json"}
    )
    assert (status, "unknown model 'other'" in answer["error"]) == (404, True)
