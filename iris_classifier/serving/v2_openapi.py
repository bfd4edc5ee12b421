"""The Open Inference Protocol's routes in the OpenAPI document (BentoML documents only its own
APIs): what the API page shows and what schema-based clients and fuzzers read."""

from __future__ import annotations

from typing import Any

from iris_classifier.flowers import MODEL_NAME
from iris_classifier.serving.config import MAX_TENSOR_ROWS
from iris_classifier.serving.refusals import REFUSAL_SCHEMA
from iris_classifier.serving.v2 import INPUT, OUTPUTS

TAG = "Open Inference Protocol (KServe V2)"
STRING, OBJECT, ANY_LIST = {"type": "string"}, {"type": "object"}, {"type": "array", "items": {}}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _object(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


TENSOR = ("name", "datatype", "shape")
TENSOR_METADATA = _object(TENSOR, name=STRING, datatype=STRING, shape=_array({"type": "integer"}))
READY = _object(("ready",), ready={"type": "boolean"})
INFER_REQUEST = {
    **_object(
        ("inputs",),
        id=STRING,
        model_name={"type": "string", "enum": [MODEL_NAME]},
        parameters=OBJECT,
        inputs=_array(
            _object(
                TENSOR,
                name={"type": "string", "enum": [INPUT]},
                datatype={"type": "string", "enum": ["FP32", "FP64"]},
                shape=_array({"type": "integer"}),
                parameters=OBJECT,
                data=ANY_LIST,
            )
        ),
        outputs=_array(
            _object(("name",), name={"type": "string", "enum": list(OUTPUTS)}, parameters=OBJECT)
        ),
    ),
    "example": {
        "id": "example-1",
        "inputs": [
            {
                "name": INPUT,
                "datatype": "FP32",
                "shape": [2, 4],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
            }
        ],
        "outputs": [{"name": name} for name in OUTPUTS],
    },
}
INFER_RESPONSE = _object(
    ("model_name", "outputs"),
    model_name=STRING,
    model_version=STRING,
    id=STRING,
    parameters=OBJECT,
    outputs=_array(
        _object(TENSOR, **TENSOR_METADATA["properties"], parameters=OBJECT, data=ANY_LIST)
    ),
)
SERVER = _object(
    ("name", "version", "extensions"), name=STRING, version=STRING, extensions=_array(STRING)
)
MODEL = _object(
    ("name", "platform", "inputs", "outputs"),
    name=STRING,
    versions=_array(STRING),
    platform=STRING,
    inputs=_array(TENSOR_METADATA),
    outputs=_array(TENSOR_METADATA),
    parameters=OBJECT,
)
LIVE = _object(("live",), live={"type": "boolean"})
NOT_LOADED = _json(REFUSAL_SCHEMA, "The model is not loaded yet")
NOT_READY = {"503": _json(READY, "Not ready: while the model loads or the replica drains")}
UNKNOWN = {"404": _json(REFUSAL_SCHEMA, "Unknown model or version")}
KNOWN = {**UNKNOWN, "503": NOT_LOADED}
INFER_DESCRIPTION = (
    f"Classify flowers: input {INPUT!r}, FP32 [rows, 4] in the contract's feature order, 1 to "
    f"{MAX_TENSOR_ROWS:,} rows; outputs 'probabilities' (FP32 [rows, classes]) and 'label' "
    "(BYTES [rows]), and when asked for, 'out_of_range' (BYTES [rows]: each row's features "
    "outside the training range, joined by commas). Binary tensors (Triton's extension) are "
    "sent as application/octet-stream with an Inference-Header-Content-Length header."
)


def get_operation(
    description: str, ok: dict[str, Any], tags: list[str] | None = None, **others: dict[str, Any]
) -> dict[str, Any]:
    responses = {"200": _json(ok, "OK"), **others}
    return {"get": {"tags": tags or [TAG], "description": description, "responses": responses}}


def v2_paths(model_version: str) -> dict[str, Any]:
    """The V2 routes; `model_version` is the served one ("" before a model is loaded)."""
    ready = '{"ready": true} once the model is loaded; 503 with {"ready": false} while it loads'
    paths: dict[str, Any] = {
        "/v2": get_operation(
            "Server metadata: name, version, extensions.", SERVER, **{"503": NOT_LOADED}
        ),
        "/v2/health/live": get_operation('{"live": true} while the process runs.', LIVE),
        "/v2/health/ready": get_operation(
            f"{ready} and once the replica drains.", READY, **NOT_READY
        ),
    }
    model = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {**STRING, "example": MODEL_NAME},
    }
    version = {"name": "version", "in": "path", "required": True, "schema": STRING}
    for prefix, parameters in (
        ("/v2/models/{model}", [model]),
        ("/v2/models/{model}/versions/{version}", [model, version]),
    ):
        paths[prefix] = get_operation(
            "Model metadata: its tensors and class names.", MODEL, **KNOWN
        )
        paths[f"{prefix}/ready"] = get_operation(
            "The model's readiness.", READY, **NOT_READY, **UNKNOWN
        )
        paths[f"{prefix}/infer"] = {
            "post": {
                "tags": [TAG],
                "description": INFER_DESCRIPTION,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": INFER_REQUEST}},
                },
                "responses": {
                    "200": _json(INFER_RESPONSE, "Inference response"),
                    "400": _json(
                        REFUSAL_SCHEMA, "Refused: names the tensor, the row and the reason"
                    ),
                    **KNOWN,
                },
            }
        }
        for operations in (paths[prefix], paths[f"{prefix}/ready"], paths[f"{prefix}/infer"]):
            for operation in operations.values():
                operation["parameters"] = parameters
    return paths
