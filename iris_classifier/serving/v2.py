"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor extension.

One model, `iris_classifier`, in the stored model's version. Input `flowers` is FP32 of shape
[rows, 4] (the contract's features, in centimetres; FP64 is accepted and converted); outputs
are `probabilities`, FP32 [rows, classes] in the order of the class names the metadata lists,
and `label`, BYTES [rows]. Requests are as strict as the rest of the API: every refusal is a
400 with `{"error": ...}` naming the tensor, the row and the reason.

Binary tensors (the extension Triton's clients use): the body starts with a JSON header of
`Inference-Header-Content-Length` bytes, and a tensor whose parameters hold `binary_data_size`
follows it as raw little-endian values, in the order of the inputs. An output asked for with
`"binary_data": true` (or every output, with the request parameter `binary_data_output`) comes
back the same way.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

import numpy as np
import orjson

from iris_classifier.serving.config import FEATURE_NAMES, MAX_FEATURE_CM, MODEL_NAME

INPUT = "flowers"
PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUTS = (PROBABILITIES, LABEL)
# 20,000 rows of binary FP32 are 320 KB, well inside the body limit; a JSON request that large
# meets the body limit first.
MAX_ROWS = 20_000
WIDTH = len(FEATURE_NAMES)
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)
DATATYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
NUMBER_TYPES = frozenset({int, float})


class Classifier(Protocol):
    class_names: tuple[str, ...]
    dtype: Any

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


class ProtocolError(Exception):
    """A request the protocol refuses: the HTTP status and the one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def refuse(message: str) -> ProtocolError:
    return ProtocolError(400, message)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferenceRequest:
    features: np.ndarray  # (rows, 4), float64, already checked
    outputs: tuple[RequestedOutput, ...]
    id: str | None
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class Answer:
    body: bytes
    header_length: int | None  # set when binary outputs follow the JSON header


class InferenceProtocol:
    """Metadata and inference for the one model this process serves."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        model_version: str,
        server_version: str,
        parameters: Mapping[str, Any],
    ) -> None:
        self.classifier = classifier
        self.model_version = model_version
        self.server_version = server_version
        self._label_array = np.array(classifier.class_names, dtype=object)
        self._label_bytes = [name.encode() for name in classifier.class_names]
        self._model_metadata = orjson.dumps(
            {
                "name": MODEL_NAME,
                "versions": [model_version],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, WIDTH]}],
                "outputs": [
                    {
                        "name": PROBABILITIES,
                        "datatype": "FP32",
                        "shape": [-1, len(classifier.class_names)],
                    },
                    {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
                ],
                "parameters": dict(parameters),
            }
        )

    def server_metadata(self) -> bytes:
        return orjson.dumps(
            {"name": "iris-classifier", "version": self.server_version, "extensions": EXTENSIONS}
        )

    def model_metadata(self) -> bytes:
        return self._model_metadata

    def check_model(self, name: str, version: str | None) -> None:
        if name != MODEL_NAME:
            raise ProtocolError(
                404, f"unknown model {name[:64]!r}: this server serves {MODEL_NAME!r}"
            )
        if version is not None and version != self.model_version:
            raise ProtocolError(
                404,
                f"unknown version {version[:64]!r} of {MODEL_NAME!r}: this server serves "
                f"{self.model_version!r}",
            )

    def infer(self, body: bytes, header_length: str | None) -> Answer:
        request = parse_request(body, header_length)
        probabilities = self.classifier.predict_proba(
            request.features.astype(self.classifier.dtype, copy=False)
        )
        return self._answer(request, probabilities)

    def _answer(self, request: InferenceRequest, probabilities: np.ndarray) -> Answer:
        rows = len(probabilities)
        outputs = []
        binary_parts: list[bytes] = []
        for output in request.outputs:
            if output.name == PROBABILITIES:
                tensor = probabilities.astype("<f4", copy=False)
                entry: dict[str, Any] = {
                    "name": PROBABILITIES,
                    "datatype": "FP32",
                    "shape": [rows, tensor.shape[1]],
                }
                if output.binary:
                    raw = tensor.tobytes()
                    binary_parts.append(raw)
                    entry["parameters"] = {"binary_data_size": len(raw)}
                else:
                    entry["data"] = tensor.ravel()
            else:
                best = probabilities.argmax(axis=1)
                entry = {"name": LABEL, "datatype": "BYTES", "shape": [rows]}
                if output.binary:
                    names = self._label_bytes
                    raw = b"".join(
                        struct.pack("<I", len(names[index])) + names[index]
                        for index in best.tolist()
                    )
                    binary_parts.append(raw)
                    entry["parameters"] = {"binary_data_size": len(raw)}
                else:
                    entry["data"] = self._label_array[best].tolist()
            outputs.append(entry)
        document: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": self.model_version}
        if request.id is not None:
            document["id"] = request.id
        if request.parameters is not None:
            document["parameters"] = request.parameters
        document["outputs"] = outputs
        header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        if not binary_parts:
            return Answer(header, None)
        return Answer(header + b"".join(binary_parts), len(header))


def parse_request(body: bytes, header_length: str | None) -> InferenceRequest:
    """The checked request, or `ProtocolError` naming what is wrong with it."""
    json_part, binary_part = split_body(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise refuse(
            f"the request is not valid JSON (NaN and Infinity are not JSON): {exc}"
        ) from None
    if not isinstance(document, dict):
        raise refuse("the request must be a JSON object with an 'inputs' list")
    unknown = set(document) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise refuse(f"unknown request field(s) {', '.join(sorted(repr(k[:64]) for k in unknown))}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise refuse("'id' must be a string")
    parameters = _parameters(document.get("parameters"), "the request")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise refuse(f"'inputs' must be a list holding the input {INPUT!r}")
    names = [item.get("name") if isinstance(item, dict) else None for item in inputs]
    if INPUT not in names:
        raise refuse(f"missing input {INPUT!r}: this model takes one input, {INPUT!r}")
    extra = [name for name in names if name != INPUT]
    if extra or len(names) != 1:
        shown = ", ".join(repr(str(name)[:64]) for name in extra) or f"{INPUT!r} twice"
        raise refuse(f"unknown input(s) {shown}: this model takes one input, {INPUT!r}")
    features, used = _features(inputs[0], binary_part)
    if used != len(binary_part):
        raise refuse(
            f"the binary data after the JSON header is {len(binary_part)} bytes, but the inputs "
            f"declare {used} bytes (binary_data_size)"
        )
    all_binary = bool((parameters or {}).get("binary_data_output", False))
    return InferenceRequest(
        features, _requested_outputs(document.get("outputs"), all_binary), request_id, parameters
    )


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise refuse(
            f"Inference-Header-Content-Length is not a number: {header_length[:32]!r}"
        ) from None
    if not 0 < length <= len(body):
        raise refuse(
            f"Inference-Header-Content-Length is {length}, but the body is {len(body)} bytes"
        )
    return body[:length], body[length:]


def _parameters(value: Any, owner: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise refuse(f"'parameters' of {owner} must be an object")
    return value


def _features(tensor: dict[str, Any], binary_part: bytes) -> tuple[np.ndarray, int]:
    """The (rows, 4) float64 features of input `flowers`, and the binary bytes it used."""
    where = f"input {INPUT!r}"
    unknown = set(tensor) - {"name", "shape", "datatype", "parameters", "data"}
    if unknown:
        raise refuse(
            f"{where}: unknown field(s) {', '.join(sorted(repr(k[:64]) for k in unknown))}"
        )
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise refuse(
            f"{where}: datatype {str(datatype)[:16]!r} is not accepted; send FP32 (FP64 is "
            "converted to the model's precision)"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(size) is int for size in shape)
    ):
        raise refuse(f"{where}: shape must be [rows, {WIDTH}], got {str(shape)[:64]}")
    rows, width = shape
    if width != WIDTH:
        raise refuse(
            f"{where}: each row must hold the {WIDTH} features {', '.join(FEATURE_NAMES)}; "
            f"shape says {width}"
        )
    if not 1 <= rows <= MAX_ROWS:
        raise refuse(f"{where}: {rows} rows; a request holds 1 to {MAX_ROWS:,} rows")
    parameters = _parameters(tensor.get("parameters"), where) or {}
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if "data" in tensor:
            raise refuse(f"{where}: has both 'data' and binary_data_size")
        expected = rows * WIDTH * DATATYPES[datatype].itemsize
        if type(binary_size) is not int or binary_size != expected:
            raise refuse(
                f"{where}: binary_data_size is {str(binary_size)[:32]}, but {rows} rows of "
                f"{WIDTH} {datatype} values are {expected} bytes"
            )
        if len(binary_part) < binary_size:
            raise refuse(
                f"{where}: binary_data_size is {binary_size} bytes, but only "
                f"{len(binary_part)} bytes follow the JSON header"
            )
        values = np.frombuffer(binary_part, DATATYPES[datatype], count=rows * WIDTH)
        features = values.astype(np.float64).reshape(rows, WIDTH)
        used = binary_size
    else:
        if "data" not in tensor:
            raise refuse(f"{where}: no 'data', and no binary_data_size parameter")
        features = _json_values(tensor["data"], rows, where)
        used = 0
    _check_sizes(features, where)
    return features, used


def _json_values(data: Any, rows: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise refuse(f"{where}: 'data' must be a list of numbers")
    if data and type(data[0]) is list:
        # Nested, one list per row: each must be a list of exactly 4 values.
        for row, values in enumerate(data):
            if type(values) is not list or len(values) != WIDTH:
                raise refuse(
                    f"{where} row {row}: must be a list of the {WIDTH} features, got "
                    f"{str(values)[:64]}"
                )
        flat = list(chain.from_iterable(data))
    else:
        flat = data
    if len(flat) != rows * WIDTH:
        raise refuse(
            f"{where}: 'data' holds {len(flat)} values, but shape [{rows}, {WIDTH}] needs "
            f"{rows * WIDTH}"
        )
    if not set(map(type, flat)) <= NUMBER_TYPES:
        index = next(i for i, value in enumerate(flat) if type(value) not in NUMBER_TYPES)
        raise refuse(
            f"{where} row {index // WIDTH}: {FEATURE_NAMES[index % WIDTH]} is "
            f"{str(flat[index])[:32]!r}, not a number"
        )
    try:
        return np.array(flat, dtype=np.float64).reshape(rows, WIDTH)
    except OverflowError:
        raise refuse(f"{where}: a value is too large for a floating-point number") from None


def _check_sizes(features: np.ndarray, where: str) -> None:
    bad = ~((features > 0) & (features <= MAX_FEATURE_CM))  # NaN fails both comparisons
    if bad.any():
        row, column = divmod(int(bad.argmax()), WIDTH)
        value = features[row, column]
        reason = "not a finite number" if not np.isfinite(value) else f"{value:g} cm"
        raise refuse(
            f"{where} row {row}: {FEATURE_NAMES[column]} is {reason}; sizes must be above 0 "
            f"and at most {MAX_FEATURE_CM:g} cm"
        )


def _requested_outputs(value: Any, all_binary: bool) -> tuple[RequestedOutput, ...]:
    if value is None:
        return tuple(RequestedOutput(name, all_binary) for name in OUTPUTS)
    if not isinstance(value, list) or not value:
        raise refuse("'outputs' must be a non-empty list of {\"name\": ...} objects")
    requested = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise refuse(
                f"unknown output {str(name)[:64]!r}: this model has {', '.join(map(repr, OUTPUTS))}"
            )
        parameters = _parameters(item.get("parameters"), f"output {name!r}") or {}
        binary = parameters.get("binary_data", all_binary)
        if type(binary) is not bool:
            raise refuse(f"output {name!r}: binary_data must be true or false")
        requested.append(RequestedOutput(name, binary))
    if len({output.name for output in requested}) != len(requested):
        raise refuse("an output is asked for twice")
    return tuple(requested)
