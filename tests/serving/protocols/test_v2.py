"""The Open Inference Protocol's request parsing and answers, without a server."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.config import MAX_TENSOR_ROWS as MAX_ROWS
from iris_classifier.serving.http.errors import ErrorAnswer
from iris_classifier.serving.model.drift import DriftCounts
from iris_classifier.serving.model.prediction import Predictor
from iris_classifier.serving.protocols.v2 import HEADER_LENGTH, InferenceProtocol, parse_request
from iris_classifier.serving.telemetry.metrics import ModelMetrics
from tests.support.softmax_classifier import OneRowJson

FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
FLAT = [value for row in FLOWERS for value in row]


class FixedClassifier(OneRowJson):
    """Probabilities that depend on the first feature only, so answers are easy to predict."""

    class_names = CLASS_NAMES
    dtype = np.float32

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        setosa = (features[:, 0] < 6).astype(np.float32)
        return np.column_stack(
            [setosa * 0.9 + 0.05, np.full(len(features), 0.05), (1 - setosa) * 0.9 + 0.05]
        ).astype(np.float32)

    def predict_proba_one(self, features: list[float]) -> list[float]:
        return self.predict_proba(np.asarray([features])).tolist()[0]


# Training ranges that flag a sepal_length above 6 and a petal_width above 2.
RANGES = TrainingRanges(FEATURE_NAMES, [4.0, 2.0, 1.0, 0.1], [6.0, 4.5, 7.0, 2.0])
PROTOCOL = InferenceProtocol(
    Predictor(
        FixedClassifier(),
        RANGES,
        ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="iris:v1", estimator="x"),
        "iris:v1",
        drift=DriftCounts(None, model_tag="iris:v1"),
    ),
    model_version="v1",
    server_version="0.1.0",
    parameters={"estimator": "x"},
)


def request(**overrides) -> dict:
    tensor = {"name": "flowers", "datatype": "FP32", "shape": [2, 4], "data": FLOWERS}
    tensor.update(overrides.pop("tensor", {}))
    return {"inputs": [tensor], **overrides}


def body(document: dict) -> bytes:
    return orjson.dumps(document)


def refusal(raw: bytes, header_length: str | None = None) -> str:
    """The one-line error of a refusal the service words itself."""
    return refused(raw, header_length).error


def features(raw: bytes, header_length: str | None = None) -> np.ndarray:
    return parse_request(raw, header_length)[1]


def test_nested_and_flat_data_read_the_same_rows() -> None:
    assert features(body(request())).tolist() == FLOWERS
    assert features(body(request(tensor={"data": FLAT}))).tolist() == FLOWERS


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
    parsed = features(header + raw, str(len(header)))
    np.testing.assert_array_equal(parsed, np.asarray(FLOWERS, dtype=np.float32))


def test_fp64_is_accepted() -> None:
    assert features(body(request(tensor={"datatype": "FP64"}))).tolist() == FLOWERS


def refused(raw: bytes, header_length: str | None = None) -> ErrorAnswer:
    with pytest.raises(ErrorAnswer) as caught:
        parse_request(raw, header_length)
    assert caught.value.status == 400
    return caught.value


def problems(refusal: ErrorAnswer) -> list[tuple[str, str]]:
    """Each problem of a refusal as (field, type): what a client reads to tell them apart."""
    return [(item["field"], item["type"]) for item in refusal.detail]


ROW = "input 'flowers' row"


# The field and the type of each problem, not the validation library's wording of it; the
# service's own words (`says`) where the service writes them.
@pytest.mark.parametrize(
    ("document", "field", "kind", "says"),
    [
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, True]]}),
            f"{ROW} 1: petal_width",
            "float_type",
            None,
        ),
        (
            request(tensor={"data": [[5.1, "3.5", 1.4, 0.2], FLOWERS[1]]}),
            f"{ROW} 0: sepal_width",
            "float_type",
            None,
        ),
        (
            request(tensor={"data": [[5.1, None, 1.4, 0.2], FLOWERS[1]]}),
            f"{ROW} 0: sepal_width",
            "float_type",
            None,
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 0, 2.3]]}),
            f"{ROW} 1: petal_length",
            "greater_than",
            None,
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 100.5]]}),
            f"{ROW} 1: petal_width",
            "less_than_equal",
            None,
        ),
        (
            request(tensor={"data": [[-1, 3.5, 1.4, 0.2], FLOWERS[1]]}),
            f"{ROW} 0: sepal_length",
            "greater_than",
            None,
        ),
        (
            request(tensor={"data": FLAT[:7]}),
            "inputs[0]",
            "bad_request",
            "holds 7 values, but shape [2, 4] needs 8",
        ),
        (
            request(tensor={"data": [[5.1, 3.5, 1.4], [6.7, 3.0, 5.2]]}),
            "input 'flowers'",
            "row_length",
            "row 0 holds 3 values; a row is the 4 features",
        ),
        (
            request(tensor={"data": [FLOWERS[0], 6.7, 3.0, 5.2, 2.3]}),
            f"{ROW} 0: sepal_length",
            "float_type",
            None,
        ),
        (
            request(tensor={"shape": [2, 3]}),
            "inputs[0]",
            "bad_request",
            "each row must hold the 4 features",
        ),
        (request(tensor={"shape": [8]}), "inputs[0].shape", "too_short", None),
        (request(tensor={"shape": [2, 4.0]}), "inputs[0].shape[1]", "int_type", None),
        (
            request(tensor={"shape": [0, 4], "data": []}),
            "inputs[0]",
            "bad_request",
            "a request holds 1 to 20,000 rows",
        ),
        (
            request(tensor={"shape": [MAX_ROWS + 1, 4], "data": []}),
            "inputs[0]",
            "bad_request",
            f"{MAX_ROWS + 1} rows; a request holds 1 to 20,000 rows",
        ),
        (request(tensor={"datatype": "INT32"}), "inputs[0].datatype", "literal_error", None),
        (request(tensor={"datatype": "BYTES"}), "inputs[0].datatype", "literal_error", None),
        (request(tensor={"name": "petals"}), "inputs[0].name", "literal_error", None),
        (
            {
                "inputs": [
                    request()["inputs"][0],
                    {"name": "petals", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
                ]
            },
            "inputs[1].name",
            "literal_error",
            None,
        ),
        ({"inputs": []}, "inputs", "too_short", None),
        ({}, "inputs", "missing", None),
        (request(outputs=[{"name": "species"}]), "outputs[0].name", "literal_error", None),
        (
            request(outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}]),
            "outputs[0].parameters.binary_data",
            "bool_type",
            None,
        ),
        (request(id=7), "id", "string_type", None),
        (request(parameters=[1]), "parameters", "model_type", None),
        (
            request(tensor={"data": None}),
            "inputs[0]",
            "bad_request",
            "no 'data', and no binary_data_size parameter",
        ),
        (request(tensor={"extra": 1}), "inputs[0].extra", "extra_forbidden", "unknown field"),
        (request(shape=1), "shape", "extra_forbidden", "unknown field"),
    ],
)
def test_bad_tensor_is_refused_naming_the_tensor_row_and_reason(
    document: dict, field: str, kind: str, says: str | None
) -> None:
    refusal = refused(body(document))
    assert problems(refusal) == [(field, kind)]
    # The one-line error leads with the field, so a person reading it sees the same name.
    assert refusal.error.startswith(f"{field}: ") or refusal.error == refusal.detail[0]["reason"]
    if says is not None:
        assert says in refusal.detail[0]["reason"]


@pytest.mark.parametrize(
    ("raw", "field", "kind"),
    [
        (b"", "the request", "json_invalid"),
        (b"{", "the request", "json_invalid"),
        (b"[1, 2]", "the request", "model_type"),
        (b'{"inputs": NaN}', "inputs", "list_type"),
        (b'{"inputs": [{"data": [Infinity]}]}', f"{ROW} 0: sepal_length", "finite_number"),
        (b"\xff\xfe", "the request", "json_invalid"),
    ],
)
def test_malformed_json_is_refused_saying_so(raw: bytes, field: str, kind: str) -> None:
    assert (field, kind) in problems(refused(raw))


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
    assert "after the JSON header is 16 bytes" in refusal(*binary_request(raw[:16], 32))
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
    answered = PROTOCOL.infer(body(document), header_length)
    if answered.media_type == b"application/json":
        return orjson.loads(answered.body), b""
    json_length = int(dict(answered.headers)[HEADER_LENGTH.encode()])
    return orjson.loads(answered.body[:json_length]), answered.body[json_length:]


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
        with pytest.raises(ErrorAnswer) as caught:
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


def test_kserve_clients_model_name_is_accepted_when_it_names_this_model() -> None:
    document, _ = answer(request(model_name="iris_classifier", id="k-1"))
    assert document["id"] == "k-1"
    assert [output["name"] for output in document["outputs"]] == ["probabilities", "label"]


def test_a_model_name_naming_another_model_is_refused() -> None:
    assert "names model 'sklearn-iris'; this route serves 'iris_classifier'" in refusal(
        body(request(model_name="sklearn-iris"))
    )


def test_an_unknown_top_level_field_is_refused_naming_it() -> None:
    assert refusal(body(request(model_version="v1"))) == "model_version: unknown field"


def test_out_of_range_comes_back_only_when_asked_for() -> None:
    flowers = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]  # row 1: sepal_length, petal_width
    plain, _ = answer(request(tensor={"data": flowers}))
    assert "out_of_range" not in [output["name"] for output in plain["outputs"]]
    asked, _ = answer(request(tensor={"data": flowers}, outputs=[{"name": "out_of_range"}]))
    assert asked["outputs"] == [
        {
            "name": "out_of_range",
            "datatype": "BYTES",
            "shape": [2],
            "data": ["", "sepal_length,petal_width"],
        }
    ]


def test_binary_out_of_range_is_length_prefixed_like_any_bytes_tensor() -> None:
    flowers = [[6.7, 3.0, 5.2, 2.3]]
    document, rest = answer(
        request(
            tensor={"data": flowers, "shape": [1, 4]},
            outputs=[{"name": "out_of_range", "parameters": {"binary_data": True}}],
        )
    )
    expected = b"sepal_length,petal_width"
    assert rest == struct.pack("<I", len(expected)) + expected
    assert document["outputs"][0]["parameters"] == {"binary_data_size": len(rest)}


def test_metadata_lists_the_out_of_range_output() -> None:
    outputs = orjson.loads(PROTOCOL.model_metadata())["outputs"]
    assert {"name": "out_of_range", "datatype": "BYTES", "shape": [-1]} in outputs


@pytest.mark.parametrize("rows", [1, 3])
def test_tensor_answers_are_counted_in_the_model_metrics(rows: int) -> None:
    from tests.serving.telemetry.test_metrics import delta, snapshot

    flowers = [[6.7, 3.0, 5.2, 2.3]] * rows  # virginica, two features out of range
    before = snapshot()
    answer(request(tensor={"data": flowers, "shape": [rows, 4]}))
    after = snapshot()
    assert delta(before, after, "iris_predictions_total", **{"class": "virginica"}) == rows
    assert delta(before, after, "iris_out_of_range_flowers_total") == rows
    for feature in ("sepal_length", "petal_width"):
        assert delta(before, after, "iris_out_of_range_features_total", feature=feature) == rows
    assert delta(before, after, "iris_prediction_top_probability_count") == rows
    assert delta(before, after, "iris_batch_rows_count") == 1
    assert delta(before, after, "iris_batch_rows_sum") == rows
