"""The Open Inference Protocol's request parsing and answers, without a server."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from iris_classifier.serving.config import CLASS_NAMES
from iris_classifier.serving.v2 import (
    HEADER_LENGTH,
    MAX_ROWS,
    InferenceProtocol,
    ProtocolError,
    parse_request,
)

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FLAT = [value for row in FLOWERS for value in row]


class FixedClassifier:
    """Probabilities that depend on the first feature only, so answers are easy to predict."""

    class_names = CLASS_NAMES
    dtype = np.float32

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        assert features.dtype == np.float32
        setosa = (features[:, 0] < 6).astype(np.float32)
        return np.column_stack(
            [setosa * 0.9 + 0.05, np.full(len(features), 0.05), (1 - setosa) * 0.9 + 0.05]
        ).astype(np.float32)


PROTOCOL = InferenceProtocol(
    FixedClassifier(), model_version="v1", server_version="0.1.0", parameters={"estimator": "x"}
)


def request(**overrides) -> dict:
    tensor = {"name": "flowers", "datatype": "FP32", "shape": [2, 4], "data": FLOWERS}
    tensor.update(overrides.pop("tensor", {}))
    return {"inputs": [tensor], **overrides}


def body(document: dict) -> bytes:
    return orjson.dumps(document)


def refusal(raw: bytes, header_length: str | None = None) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_request(raw, header_length)
    assert caught.value.status == 400
    return caught.value.message


def test_nested_and_flat_data_read_the_same_rows() -> None:
    nested = parse_request(body(request()), None)
    flat = parse_request(body(request(tensor={"data": FLAT})), None)
    assert nested.features.tolist() == FLOWERS
    assert flat.features.tolist() == FLOWERS


def test_binary_input_reads_little_endian_floats() -> None:
    raw = np.asarray(FLOWERS, dtype="<f4").tobytes()
    header = body(
        {
            "inputs": [
                {
                    "name": "flowers",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    parsed = parse_request(header + raw, str(len(header)))
    np.testing.assert_array_equal(parsed.features, np.asarray(FLOWERS, dtype=np.float32))


def test_fp64_is_accepted() -> None:
    parsed = parse_request(body(request(tensor={"datatype": "FP64"})), None)
    assert parsed.features.tolist() == FLOWERS


@pytest.mark.parametrize(
    ("document", "naming"),
    [
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, True]]}),
            "row 1: petal_width is 'True', not a number",
        ),
        (
            request(tensor={"data": [[5.1, "3.5", 1.4, 0.2], FLOWERS[1]]}),
            "row 0: sepal_width is '3.5', not a number",
        ),
        (
            request(tensor={"data": [[5.1, None, 1.4, 0.2], FLOWERS[1]]}),
            "row 0: sepal_width is 'None'",
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 0, 2.3]]}),
            "row 1: petal_length is 0 cm",
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 100.5]]}),
            "row 1: petal_width is 100.5 cm",
        ),
        (
            request(tensor={"data": [[-1, 3.5, 1.4, 0.2], FLOWERS[1]]}),
            "row 0: sepal_length is -1 cm",
        ),
        (
            request(tensor={"data": FLAT[:7]}),
            "holds 7 values, but shape [2, 4] needs 8",
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4], [6.7, 3.0, 5.2]]}),
            "row 0: must be a list of the 4 features",
        ),
        (request(tensor={"shape": [2, 3]}), "each row must hold the 4 features"),
        (request(tensor={"shape": [8]}), "shape must be [rows, 4]"),
        (request(tensor={"shape": [2, 4.0]}), "shape must be [rows, 4]"),
        (request(tensor={"shape": [0, 4], "data": []}), "a request holds 1 to 20,000 rows"),
        (
            request(tensor={"shape": [MAX_ROWS + 1, 4], "data": []}),
            f"{MAX_ROWS + 1} rows; a request holds 1 to 20,000 rows",
        ),
        (request(tensor={"datatype": "INT32"}), "datatype 'INT32' is not accepted; send FP32"),
        (request(tensor={"datatype": "BYTES"}), "datatype 'BYTES' is not accepted"),
        (request(tensor={"name": "petals"}), "missing input 'flowers'"),
        (
            {
                "inputs": [
                    request()["inputs"][0],
                    {"name": "petals", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
            "unknown input(s) 'petals'",
        ),
        ({"inputs": []}, "'inputs' must be a list"),
        ({}, "'inputs' must be a list"),
        (request(outputs=[{"name": "species"}]), "unknown output 'species'"),
        (
            request(outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}]),
            "binary_data must be true or false",
        ),
        (request(id=7), "'id' must be a string"),
        (request(parameters=[1]), "'parameters' of the request must be an object"),
        (request(tensor={"data": None}), "'data' must be a list"),
        (request(tensor={"extra": 1}), "unknown field(s) 'extra'"),
        (request(shape=1), "unknown request field(s) 'shape'"),
    ],
)
def test_bad_tensor_is_refused_naming_the_tensor_row_and_reason(
    document: dict, naming: str
) -> None:
    message = refusal(body(document))
    assert naming in message
    if "row" in naming and "rows" not in naming:
        assert "input 'flowers'" in message


NOT_JSON = "the request is not valid JSON"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", NOT_JSON),
        (b"{", NOT_JSON),
        (b"[1, 2]", "the request must be a JSON object with an 'inputs' list"),
        (b'{"inputs": NaN}', NOT_JSON),
        (b'{"inputs": [{"data": [Infinity]}]}', NOT_JSON),
        (b"\xff\xfe", NOT_JSON),
    ],
)
def test_malformed_json_is_refused_saying_so(raw: bytes, says: str) -> None:
    assert refusal(raw).startswith(says)


def binary_request(
    raw: bytes, declared: int, *, rows: int = 2, datatype: str = "FP32"
) -> tuple[bytes, str]:
    header = body(
        {
            "inputs": [
                {
                    "name": "flowers",
                    "datatype": datatype,
                    "shape": [rows, 4],
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    )
    return header + raw, str(len(header))


def test_binary_sizes_that_do_not_add_up_are_refused() -> None:
    raw = np.asarray(FLOWERS, dtype="<f4").tobytes()
    assert "but 2 rows of 4 FP32 values are 32 bytes" in refusal(*binary_request(raw, 30))
    assert "only 16 bytes follow" in refusal(*binary_request(raw[:16], 32))
    assert "the inputs declare 32 bytes" in refusal(*binary_request(raw + b"\0" * 4, 32))
    assert "but 2 rows of 4 FP64 values are 64 bytes" in refusal(
        *binary_request(raw, 32, datatype="FP64")
    )


@pytest.mark.parametrize("length", ["abc", "0", "-3", "100000"])
def test_bad_header_length_is_refused(length: str) -> None:
    assert "Inference-Header-Content-Length" in refusal(body(request()), length)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 0.0, 101.0])
def test_binary_values_are_as_strict_as_json_ones(value: float) -> None:
    flowers = np.asarray(FLOWERS, dtype="<f4")
    flowers[1, 2] = value
    raw = flowers.tobytes()
    assert "row 1: petal_length is" in refusal(*binary_request(raw, 32))


def answer(document: dict, header_length: str | None = None) -> tuple[dict, bytes]:
    result = PROTOCOL.infer(body(document), header_length)
    if result.header_length is None:
        return orjson.loads(result.body), b""
    return orjson.loads(result.body[: result.header_length]), result.body[result.header_length :]


def test_json_answer_holds_both_outputs_and_echoes_id_and_parameters() -> None:
    document, rest = answer(request(id="abc", parameters={"trace": "yes"}))
    assert rest == b""
    assert document["model_name"] == "iris_classifier"
    assert document["model_version"] == "v1"
    assert document["id"] == "abc"
    assert document["parameters"] == {"trace": "yes"}
    outputs = {output["name"]: output for output in document["outputs"]}
    assert outputs["probabilities"]["datatype"] == "FP32"
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert outputs["probabilities"]["data"] == pytest.approx([0.95, 0.05, 0.05, 0.05, 0.05, 0.95])
    assert outputs["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }


def test_only_the_requested_outputs_come_back() -> None:
    document, _ = answer(request(outputs=[{"name": "label"}]))
    assert [output["name"] for output in document["outputs"]] == ["label"]


def test_binary_outputs_follow_the_json_header() -> None:
    document, rest = answer(
        request(
            outputs=[
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "label", "parameters": {"binary_data": True}},
            ]
        )
    )
    probabilities, label = document["outputs"]
    size = probabilities["parameters"]["binary_data_size"]
    assert "data" not in probabilities
    np.testing.assert_allclose(
        np.frombuffer(rest[:size], "<f4").reshape(2, 3),
        [[0.95, 0.05, 0.05], [0.05, 0.05, 0.95]],
        rtol=1e-6,
    )
    labels, raw = [], rest[size:]
    assert len(raw) == label["parameters"]["binary_data_size"]
    while raw:
        (length,) = struct.unpack("<I", raw[:4])
        labels.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    assert labels == ["setosa", "virginica"]


def test_binary_data_output_makes_every_output_binary() -> None:
    document, rest = answer(request(parameters={"binary_data_output": True}))
    assert all("binary_data_size" in output["parameters"] for output in document["outputs"])
    assert len(rest) == sum(
        output["parameters"]["binary_data_size"] for output in document["outputs"]
    )


def test_unknown_model_or_version_is_a_404() -> None:
    for name, version in (("other", None), ("iris_classifier", "v0")):
        with pytest.raises(ProtocolError) as caught:
            PROTOCOL.check_model(name, version)
        assert caught.value.status == 404
    PROTOCOL.check_model("iris_classifier", "v1")
    PROTOCOL.check_model("iris_classifier", None)


def test_model_metadata_describes_the_tensors_and_the_class_order() -> None:
    metadata = orjson.loads(PROTOCOL.model_metadata())
    assert metadata["name"] == "iris_classifier"
    assert metadata["versions"] == ["v1"]
    assert metadata["inputs"] == [{"name": "flowers", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    assert orjson.loads(PROTOCOL.server_metadata())["extensions"] == ["binary_tensor_data"]
    assert HEADER_LENGTH == "inference-header-content-length"


def test_server_version_comes_from_the_bentos_label_where_the_project_is_not_installed(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    from iris_classifier.serving import config

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    assert config.installed_version() == importlib.metadata.version("iris-classifier")
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setenv("BENTO_PATH", str(tmp_path))
    assert config.installed_version() == "unknown"
    (tmp_path / "bento.yaml").write_text("labels:\n  project: iris-classifier\n  version: 9.9.9\n")
    assert config.installed_version() == "9.9.9"
