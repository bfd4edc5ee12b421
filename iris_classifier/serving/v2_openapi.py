"""The Open Inference Protocol's routes in the OpenAPI document (BentoML documents only its own
APIs): what the API page shows and what schema-based clients and fuzzers read."""

from __future__ import annotations

from typing import Any

from iris_classifier.flowers import MODEL_NAME
from iris_classifier.serving.config import MAX_TENSOR_ROWS
from iris_classifier.serving.refusals import REFUSAL_SCHEMA
from iris_classifier.serving.v2 import INPUT, OUTPUTS

TAG = "Open Inference Protocol (KServe V2)"
ERROR = REFUSAL_SCHEMA
LIVE = {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}
READY = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}
TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
REQUEST_EXAMPLE = {
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
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "model_name": {"type": "string", "enum": [MODEL_NAME]},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string", "enum": [INPUT]},
                    "datatype": {"type": "string", "enum": ["FP32", "FP64"]},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": {}},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": list(OUTPUTS)},
                    "parameters": {"type": "object"},
                },
            },
        },
    },
    "example": REQUEST_EXAMPLE,
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {
            "type": "array",
            "items": {
                **TENSOR_METADATA,
                "properties": {
                    **TENSOR_METADATA["properties"],
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": {}},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


UNKNOWN = _json(ERROR, "Unknown model or version")


def _get(description: str, schema: dict[str, Any], *, may_be_unknown: bool) -> dict:
    responses: dict[str, Any] = {
        "200": _json(schema, "OK"),
        "503": _json(
            READY if schema is READY else ERROR,
            "The model is not loaded yet, or the replica is stopping",
        ),
    }
    if may_be_unknown:
        responses["404"] = UNKNOWN
    return {"get": {"tags": [TAG], "description": description, "responses": responses}}


def _parameters(versioned: bool) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "example": MODEL_NAME},
        }
    ]
    if versioned:
        parameters.append(
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    return parameters


def v2_paths(model_version: str) -> dict[str, Any]:
    """The V2 routes; `model_version` is the served one ("" before a model is loaded)."""
    server = {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    }
    model = {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": TENSOR_METADATA},
            "outputs": {"type": "array", "items": TENSOR_METADATA},
            "parameters": {"type": "object"},
        },
    }
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata: name, version, extensions.", server, may_be_unknown=False),
        "/v2/health/live": _get(
            '{"live": true} while the process runs.', LIVE, may_be_unknown=False
        ),
        "/v2/health/ready": _get(
            '{"ready": true} once the model is loaded; 503 with {"ready": false} while it loads '
            "and once the replica drains.",
            READY,
            may_be_unknown=False,
        ),
    }
    for prefix, version in (
        ("/v2/models/{model}", None),
        ("/v2/models/{model}/versions/{version}", model_version),
    ):
        parameters = _parameters(version)
        paths[prefix] = _get(
            "Model metadata: its tensors and class names.", model, may_be_unknown=True
        )
        paths[f"{prefix}/ready"] = _get(
            'The model\'s readiness: {"ready": true}, or 503 with {"ready": false}.',
            READY,
            may_be_unknown=True,
        )
        paths[f"{prefix}/infer"] = {
            "post": {
                "tags": [TAG],
                "description": (
                    f"Classify flowers: input {INPUT!r}, FP32 [rows, 4] in the contract's feature "
                    f"order, 1 to {MAX_TENSOR_ROWS:,} rows; outputs 'probabilities' (FP32 [rows, "
                    "classes]) and 'label' (BYTES [rows]), and when asked for, 'out_of_range' "
                    "(BYTES [rows]: each row's features outside the training range, joined by "
                    "commas). Binary tensors (Triton's extension) are sent as "
                    "application/octet-stream with an Inference-Header-Content-Length header."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": INFER_REQUEST}},
                },
                "responses": {
                    "200": _json(INFER_RESPONSE, "Inference response"),
                    "400": _json(ERROR, "Refused: names the tensor, the row and the reason"),
                    "404": UNKNOWN,
                    "503": _json(ERROR, "The model is not loaded yet"),
                },
            }
        }
        for operations in (paths[prefix], paths[f"{prefix}/ready"], paths[f"{prefix}/infer"]):
            for operation in operations.values():
                operation["parameters"] = parameters
    return paths
