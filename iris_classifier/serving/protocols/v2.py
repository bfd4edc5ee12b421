"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor extension.

One model, `iris_classifier`, in the stored model's version. Input `flowers`: FP32 [rows, 4],
the contract's features in centimetres (FP64 is converted). Outputs: `probabilities`, FP32
[rows, classes] in the metadata's class order; `label`, BYTES [rows]; and only when asked for,
`out_of_range`, BYTES [rows], each row's features outside the training range joined by commas.
Answers come from the service's one `Predictor`, so the model metrics count them.

The request's JSON is read by the strict pydantic models below: unknown fields are refused,
except `model_name`, which KServe's client always sends (it must name this model). Every
refusal is a 400 naming the tensor, the row and the reason. The shape nearly every client
sends (one JSON tensor, outputs asked for by name) is first read by a plain JSON reading that
only accepts what the models accept; anything else, and every refusal, is the models'.

Binary tensors (Triton's extension): a JSON header of `Inference-Header-Content-Length` bytes,
then each input with `binary_data_size` as raw little-endian values. An output asked for with
`"binary_data": true` (or all, with the parameter `binary_data_output`) comes back the same way.
"""

from __future__ import annotations

import functools
import operator
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain, permutations
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from iris_classifier.flowers import (
    FEATURE_NAMES,
    MAX_FEATURE_CM,
    MODEL_NAME,
    SIZE_RULE,
    breaks_size_rule,
)
from iris_classifier.serving.config import MAX_TENSOR_ROWS
from iris_classifier.serving.http.errors import Answer, ErrorAnswer, problem, validation_refusal
from iris_classifier.serving.http.limits import HEADER_LENGTH
from iris_classifier.serving.model.prediction import Predictions, Predictor, RowPrediction
from iris_classifier.serving.protocols.contract import BATCH_EXAMPLE, Centimetres

INPUT = "flowers"
PROBABILITIES = "probabilities"
LABEL = "label"
OUT_OF_RANGE = "out_of_range"
OUTPUTS = (PROBABILITIES, LABEL, OUT_OF_RANGE)
DEFAULT_OUTPUTS = (PROBABILITIES, LABEL)
WIDTH = len(FEATURE_NAMES)
HEADER_LENGTH_BYTES = HEADER_LENGTH.encode()
EXTENSIONS = ("binary_tensor_data",)
FP32 = np.dtype("<f4")
DATATYPES = {"FP32": FP32, "FP64": np.dtype("<f8")}

# The request the OpenAPI document shows: two flowers, nested one row per flower.
EXAMPLE = {
    "id": "example-1",
    "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [2, WIDTH], "data": BATCH_EXAMPLE}],
    "outputs": [{"name": name} for name in OUTPUTS],
}
STRICT = ConfigDict(strict=True, extra="forbid", cache_strings=False)
# Parameters are the protocol's open-ended map: the keys read here are typed, others are kept.
OPEN = ConfigDict(strict=True, extra="allow", cache_strings=False)


class TensorParameters(BaseModel):
    model_config = OPEN
    binary_data_size: Annotated[int, Field(ge=0)] | None = None


def flattened(data: Any) -> Any:
    """Data sent nested (one list of 4 per row), as the protocol allows, read row after row."""
    if not isinstance(data, list) or not data or not all(type(row) is list for row in data):
        return data
    for index, row in enumerate(data):
        if len(row) != WIDTH:
            raise PydanticCustomError(
                "row_length",
                "row {row} holds {count} values; a row is the 4 features",
                {"row": index, "count": len(row)},
            )
    return list(chain.from_iterable(data))


class InputTensor(BaseModel):
    model_config = STRICT
    name: Literal["flowers"]
    datatype: Literal["FP32", "FP64"]
    shape: Annotated[list[int], Field(min_length=2, max_length=2)]
    parameters: TensorParameters | None = None
    data: (
        Annotated[
            list[Centimetres],
            BeforeValidator(
                flattened, json_schema_input_type=list[Centimetres] | list[list[Centimetres]]
            ),
        ]
        | None
    ) = None


class OutputParameters(BaseModel):
    model_config = OPEN
    binary_data: bool | None = None


class RequestedOutput(BaseModel):
    model_config = STRICT
    name: Literal["probabilities", "label", "out_of_range"]
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    model_config = OPEN
    binary_data_output: bool = False


class InferenceRequest(BaseModel):
    model_config = STRICT | ConfigDict(json_schema_extra={"example": EXAMPLE})
    id: str | None = None
    model_name: str | None = None
    parameters: RequestParameters | None = None
    inputs: Annotated[list[InputTensor], Field(min_length=1)]
    outputs: Annotated[list[RequestedOutput], Field(min_length=1)] | None = None


# The answers' shapes, for the OpenAPI document; the answers themselves are written as bytes.
class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class OutputTensor(TensorMetadata):
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


# Not frozen, as Answer is not: a frozen dataclass sets each field through
# object.__setattr__, on every V2 request.
@dataclass(slots=True)
class Asked:
    """What an answer repeats from its request, and the outputs it holds, however it was read."""

    id: str | None
    parameters: dict[str, Any] | None  # as sent: the keys the request set
    outputs: tuple[tuple[str, bool], ...]  # (name, as binary) in the order asked


def refuse(message: str, field: str = "inputs[0]") -> ErrorAnswer:
    return ErrorAnswer(400, message, field=field)


class InferenceProtocol:
    """Metadata and inference for the one model this process serves."""

    def __init__(
        self, predictor: Predictor, *, model_version: str, server_version: str, parameters: Mapping
    ) -> None:
        self.predictor = predictor
        self.model_version = model_version
        class_names = predictor.model.class_names
        self._class_names = list(class_names)
        self._label_array = np.array(class_names, dtype=object)
        self._server_metadata = orjson.dumps(
            {"name": "iris-classifier", "version": server_version, "extensions": EXTENSIONS}
        )
        self._model_metadata = orjson.dumps(
            {
                "name": MODEL_NAME,
                "versions": [model_version],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, WIDTH]}],
                "outputs": [
                    {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(class_names)]},
                    {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
                    {"name": OUT_OF_RANGE, "datatype": "BYTES", "shape": [-1]},
                ],
                "parameters": dict(parameters),
            }
        )
        # The text every one-row answer of JSON outputs shares (see `_one_row_json`).
        self._answer_start = orjson.dumps(
            {"model_name": MODEL_NAME, "model_version": model_version}
        )[:-1]
        width = len(class_names)
        self._one_probabilities = _text_before_data(
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [1, width]}
        )
        self._one_labels = [
            orjson.dumps({"name": LABEL, "datatype": "BYTES", "shape": [1], "data": [name]})
            for name in class_names
        ]
        self._one_out_of_range = _text_before_data(
            {"name": OUT_OF_RANGE, "datatype": "BYTES", "shape": [1]}
        )
        # Each list of JSON outputs a one-row answer may hold: the outputs in order, and the
        # text before, between and after their values, with the answer's start before them
        # for an answer with no id (see `_one_row_json`).
        around = {
            PROBABILITIES: (self._one_probabilities, b"}"),
            LABEL: (b"", b""),
            OUT_OF_RANGE: (self._one_out_of_range, b"}"),
        }
        self._one_row_texts: dict[tuple[tuple[str, bool], ...], OneRowText] = {}
        for outputs in (asked.outputs for asked in ASKED_BY_TEXT.values()):
            names = tuple(name for name, _ in outputs)
            texts = [b',"outputs":[']
            for name in names:
                before, after = around[name]
                texts[-1] += (b"," if len(texts) > 1 else b"") + before
                texts.append(after)
            texts[-1] += b"]}"
            self._one_row_texts[outputs] = OneRowText(
                names, self._answer_start + texts[0], tuple(texts)
            )

    def server_metadata(self) -> bytes:
        return self._server_metadata

    def model_metadata(self) -> bytes:
        return self._model_metadata

    def check_model(self, name: str, version: str | None) -> None:
        if name != MODEL_NAME:
            unknown, field = f"model {name[:64]!r}", "model"
        elif version is not None and version != self.model_version:
            unknown, field = f"version {version[:64]!r} of {MODEL_NAME!r}", "version"
        else:
            return
        serves = f"{MODEL_NAME!r} {self.model_version!r}"
        raise ErrorAnswer(404, f"unknown {unknown}: this server serves {serves}", field=field)

    def infer(self, body: bytes, header_length: str | None) -> Answer:
        """The inference answer; binary outputs follow a JSON header whose length it names."""
        asked, features = parse_request(body, header_length)
        return self._answer(asked, self.predictor.predict(features))

    def _answer(self, asked: Asked, predictions: Predictions | RowPrediction) -> Answer:
        # One flower read as floats stays in Python lists, as the single-flower route keeps it.
        one = type(predictions) is RowPrediction
        if one and asked.parameters is None:
            body = self._one_row_json(asked, predictions)
            if body is not None:
                return Answer(body)
        rows = 1 if one else len(predictions.probabilities)
        outputs = []
        binary_parts: list[bytes] = []
        for name, binary in asked.outputs:
            if name == PROBABILITIES:
                # An array either way, for orjson to write single precision's shortest digits.
                if one:
                    tensor = np.array(predictions.probabilities, "<f4")
                    width, data = len(tensor), tensor
                else:
                    tensor = predictions.probabilities.astype("<f4", copy=False)
                    width, data = tensor.shape[1], tensor.ravel()
                entry: dict[str, Any] = {
                    "name": name,
                    "datatype": "FP32",
                    "shape": [rows, width],
                }
                raw = tensor.tobytes() if binary else None
            else:
                entry = {"name": name, "datatype": "BYTES", "shape": [rows]}
                if name == LABEL:
                    data = (
                        [self._class_names[predictions.best]]
                        if one
                        else self._label_array[predictions.best_indices].tolist()
                    )
                else:
                    outside = [predictions.out_of_range] if one else predictions.out_of_range
                    data = [",".join(names) for names in outside]
                raw = (
                    b"".join(struct.pack("<I", len(text)) + text for text in map(str.encode, data))
                    if binary
                    else None
                )
            if raw is None:
                entry["data"] = data
            else:
                binary_parts.append(raw)
                entry["parameters"] = {"binary_data_size": len(raw)}
            outputs.append(entry)
        document: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": self.model_version}
        if asked.id is not None:
            document["id"] = asked.id
        if asked.parameters is not None:
            document["parameters"] = asked.parameters
        document["outputs"] = outputs
        header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
        if not binary_parts:
            return Answer(header)
        return Answer(
            header + b"".join(binary_parts),
            b"application/octet-stream",
            ((HEADER_LENGTH_BYTES, str(len(header)).encode()),),
        )

    def _one_row_json(self, asked: Asked, row: RowPrediction) -> bytes | None:
        """The answer `_answer` writes for one row, with no document built for orjson to walk:
        the text around its values is the same in every such answer. None when an output is
        asked for as binary."""
        text = self._one_row_texts.get(asked.outputs)
        if text is None:
            return None
        names, texts = text.names, text.texts
        if asked.id is None:
            parts = [text.start_and_first]
        else:
            parts = [self._answer_start, b',"id":', orjson.dumps(asked.id), texts[0]]
        if len(names) == 1:  # a loop's setup costs more than the rest of such an answer
            parts += (self._one_row_value(names[0], row), texts[1])
        else:
            for index, name in enumerate(names, 1):
                parts += (self._one_row_value(name, row), texts[index])
        return b"".join(parts)

    def _one_row_value(self, name: str, row: RowPrediction) -> bytes:
        if name == PROBABILITIES:
            return row.probabilities_json
        if name == LABEL:
            return self._one_labels[row.best]
        return orjson.dumps([",".join(row.out_of_range)])


class OneRowText(NamedTuple):
    """The text of a one-row answer around its values, for one list of outputs."""

    names: tuple[str, ...]
    start_and_first: bytes  # the answer's start and `texts[0]`, for an answer with no id
    texts: tuple[bytes, ...]  # before the first value, between each two, after the last


def _text_before_data(entry: dict[str, Any]) -> bytes:
    """An output's JSON as an answer writes it, up to its data."""
    return orjson.dumps({**entry, "data": None})[: -len(b"null}")]


def requested_outputs(
    outputs: list[RequestedOutput] | None, all_binary: bool
) -> list[tuple[str, bool]]:
    if outputs is None:
        return [(name, all_binary) for name in DEFAULT_OUTPUTS]
    requested = [
        (
            output.name,
            all_binary
            if output.parameters is None or output.parameters.binary_data is None
            else output.parameters.binary_data,
        )
        for output in outputs
    ]
    if len({name for name, _ in requested}) != len(requested):
        raise refuse("an output is asked for twice", "outputs")
    return requested


def parse_request(
    body: bytes, header_length: str | None
) -> tuple[Asked, np.ndarray | tuple[float, ...]]:
    """The checked request and its (rows, 4) float64 features, or a 400 `ErrorAnswer` naming what
    is wrong with it. The common request of one row gives that row as a tuple of 4 floats, as
    the single-flower route reads a flower; `Predictor.predict` takes either."""
    if header_length is None and (common := read_common_request(body)) is not None:
        return common
    return parse_strictly(body, header_length)


# The fields of the common request: one tensor of JSON data, outputs named and nothing more.
COMMON_REQUEST_FIELDS = frozenset({"id", "model_name", "inputs", "outputs"})
# What a common request with no id asks, for each outputs it may name, made once and shared
# by every such request (nothing changes an `Asked`).
DEFAULT_ASKED = Asked(None, None, tuple((name, False) for name in DEFAULT_OUTPUTS))
# Every list of distinct outputs asked for by name alone, in any order, as orjson writes it: one
# look-up both reads and checks a request's list, which is written otherwise if it holds anything
# else (an output with another key, a name that is not one of these strings).
ASKED_BY_TEXT = {
    orjson.dumps([{"name": name} for name in names]): Asked(
        None, None, tuple((name, False) for name in names)
    )
    for count in range(1, len(OUTPUTS) + 1)
    for names in permutations(OUTPUTS, count)
}


def read_common_request(body: bytes) -> tuple[Asked, np.ndarray | tuple[float, ...]] | None:
    """`parse_strictly`'s reading of a request of the common shape that it accepts, read with
    orjson, and with NumPy beyond one row (one row is a tuple of floats), in a fraction of the
    time the models take; None for any other request, which the models then read (and refuse
    where they do)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    # The tensor first, and each field read once: its checks are most of this reading's cost.
    if type(document) is not dict or not document.keys() <= COMMON_REQUEST_FIELDS:
        return None
    inputs = document.get("inputs")
    if type(inputs) is not list or len(inputs) != 1:
        return None
    tensor = inputs[0]
    # Its four fields and no other: four look-ups cost less than comparing its keys with a set.
    if type(tensor) is not dict or len(tensor) != 4:
        return None
    try:
        name, datatype = tensor["name"], tensor["datatype"]
        shape, data = tensor["shape"], tensor["data"]
    except KeyError:
        return None
    if (
        name != INPUT
        or type(datatype) is not str
        or datatype not in DATATYPES
        or type(shape) is not list
        or len(shape) != 2
        or type(data) is not list
    ):
        return None
    rows, width = shape
    if (
        type(rows) is not int
        or type(width) is not int
        or width != WIDTH
        or not 1 <= rows <= MAX_TENSOR_ROWS
    ):
        return None
    request_id = document.get("id")
    if (request_id is not None and type(request_id) is not str) or (
        "model_name" in document and document["model_name"] != MODEL_NAME
    ):
        return None
    asked = _named_outputs(document.get("outputs"))
    if asked is None:
        return None
    features = _one_row(data) if rows == 1 else _many_rows(data, rows)
    if features is None:
        return None
    if request_id is not None:
        asked = Asked(request_id, None, asked.outputs)
    return asked, features


def _named_outputs(outputs: Any) -> Asked | None:
    if outputs is None:
        return DEFAULT_ASKED
    try:
        return ASKED_BY_TEXT.get(orjson.dumps(outputs))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return None


def _one_row(data: list) -> tuple[float, ...] | None:
    row = data[0] if len(data) == 1 and type(data[0]) is list else data
    if len(row) != WIDTH:
        return None
    all_floats = True
    for value in row:
        # bool is a subclass of int, not the type int; orjson never gives NaN or infinity.
        if type(value) is not float:
            if type(value) is not int:
                return None
            all_floats = False
        if not 0 < value <= MAX_FEATURE_CM:
            return None
    # Integers become the floats an array of them would hold, for the model and the log alike.
    return tuple(row) if all_floats else tuple(map(float, row))


def _many_rows(data: list, rows: int) -> np.ndarray | None:
    if data and type(data[0]) is list:
        # The models flatten rows only when every row is a list of four; a row of another kind
        # (a string, an object) yields no number here, so the array below is not one of numbers.
        try:
            if list(map(len, data)).count(WIDTH) != len(data):
                return None
        except TypeError:  # a number among the rows
            return None
        # Each row added to one list in place, in C: cheaper than chaining them into a new one.
        values = functools.reduce(operator.iconcat, data, [])
    else:
        values = data
    if len(values) != rows * WIDTH:
        return None
    # One pass in C over a flat list, straight to doubles: a string, a null, a list or an object
    # among the values is an error, where NumPy would first look at every value for a type;
    # struct packs the arguments faster than array('d') reads the list.
    try:
        packed = struct.pack(f"{len(values)}d", *values)
    except struct.error:
        return None
    features = np.frombuffer(packed, np.float64).reshape(rows, WIDTH)
    if breaks_size_rule(features).any():
        return None
    # struct reads a boolean among numbers as 1 or 0, where the models refuse it; 0 breaks the
    # size rule above, and each 1 is looked at in the request.
    if any(type(values[at]) is bool for at in np.flatnonzero(features == 1).tolist()):
        return None
    return features


def parse_strictly(body: bytes, header_length: str | None) -> tuple[Asked, np.ndarray]:
    """Any request, read by the pydantic models: the one reading for binary tensors and the
    one source of every refusal."""
    json_part, binary_part = split_body(body, header_length)
    try:
        request = InferenceRequest.model_validate_json(json_part)
    except ValidationError as error:
        raise validation_refusal(error, "", tensor_problem) from None
    if request.model_name is not None and request.model_name != MODEL_NAME:
        raise refuse(
            f"the request names model {request.model_name[:64]!r}; this route serves {MODEL_NAME!r}",
            "model_name",
        )
    if len(request.inputs) != 1:
        raise refuse(f"input {INPUT!r} is sent {len(request.inputs)} times; send it once", "inputs")
    tensor = request.inputs[0]
    where = f"input {INPUT!r}"
    rows, width = tensor.shape
    if width != WIDTH:
        raise refuse(
            f"{where}: each row must hold the {WIDTH} features {', '.join(FEATURE_NAMES)}; "
            f"shape says {width}"
        )
    if not 1 <= rows <= MAX_TENSOR_ROWS:
        raise refuse(f"{where}: {rows} rows; a request holds 1 to {MAX_TENSOR_ROWS:,} rows")
    binary_size = tensor.parameters.binary_data_size if tensor.parameters else None
    if binary_size is not None:
        features = _binary_features(tensor, rows, binary_size, binary_part)
    elif tensor.data is None:
        raise refuse(f"{where}: no 'data', and no binary_data_size parameter")
    elif binary_part:
        raise refuse(
            f"{where}: {len(binary_part)} bytes follow the JSON header, but no input declares binary_data_size"
        )
    else:
        features = _json_features(tensor.data, rows)
    all_binary = request.parameters is not None and request.parameters.binary_data_output
    asked = Asked(
        request.id,
        None if request.parameters is None else request.parameters.model_dump(exclude_unset=True),
        tuple(requested_outputs(request.outputs, all_binary)),
    )
    return asked, features


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise refuse(
            f"Inference-Header-Content-Length is {header_length[:32]!r}, but the body is "
            f"{len(body)} bytes",
            "inference-header-content-length",
        )
    return body[: int(header_length)], body[int(header_length) :]


def _binary_features(
    tensor: InputTensor, rows: int, binary_size: int, binary_part: bytes
) -> np.ndarray:
    where = f"input {INPUT!r}"
    if tensor.data is not None:
        raise refuse(f"{where}: has both 'data' and binary_data_size")
    dtype = DATATYPES[tensor.datatype]
    expected = rows * WIDTH * dtype.itemsize
    if binary_size != expected:
        raise refuse(
            f"{where}: binary_data_size is {binary_size}, but {rows} rows of {WIDTH} "
            f"{tensor.datatype} values are {expected} bytes"
        )
    if len(binary_part) != binary_size:
        raise refuse(
            f"the binary data after the JSON header is {len(binary_part)} bytes, but the inputs "
            f"declare {binary_size} bytes (binary_data_size)"
        )
    features = np.frombuffer(binary_part, dtype).astype(np.float64).reshape(rows, WIDTH)
    bad = breaks_size_rule(features)
    if bad.any():
        row, column = divmod(int(bad.argmax()), WIDTH)
        value = features[row, column]
        shown = f"{value:g} cm" if np.isfinite(value) else "not a finite number"
        raise refuse(f"{where} row {row}: {FEATURE_NAMES[column]} is {shown}; {SIZE_RULE}")
    return features


def _json_features(data: list[float], rows: int) -> np.ndarray:
    if len(data) != rows * WIDTH:
        raise refuse(
            f"input {INPUT!r}: 'data' holds {len(data)} values, but shape [{rows}, {WIDTH}] "
            f"needs {rows * WIDTH}"
        )
    return np.array(data, dtype=np.float64).reshape(rows, WIDTH)


def tensor_problem(item: dict[str, Any]) -> dict[str, str]:
    """A refused request's problem named by its tensor and row."""
    location = item["loc"]
    if location[:1] == ("inputs",) and location[2:3] == ("data",):
        field = f"input {INPUT!r}"
        if len(location) == 4:
            row, column = divmod(location[3], WIDTH)
            field += f" row {row}: {FEATURE_NAMES[column]}"
    else:
        text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
        field = text.lstrip(".") or "the request"
    reason = item["msg"]
    if item["type"] == "extra_forbidden":
        reason = "unknown field"
    elif item["type"] == "json_invalid":
        reason = f"not valid JSON (NaN and Infinity are not JSON): {reason}"
    return problem(field, reason, item["type"])
