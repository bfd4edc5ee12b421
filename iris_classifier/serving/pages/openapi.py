"""The OpenAPI document at `/docs.json`, which the API page is also built from
(iris_classifier/serving/README.md#the-api-page-and-the-openapi-document). BentoML's own document
is kept only for the routes BentoML answers; the schemas pydantic writes in JSON Schema 2020-12
are rewritten in OpenAPI 3.0's dialect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from iris_classifier.flowers import CLASS_NAMES, MODEL_NAME
from iris_classifier.serving.config import MAX_BATCH_ROWS, MAX_TENSOR_ROWS, PROJECT_NAME
from iris_classifier.serving.http.errors import ErrorBody
from iris_classifier.serving.model.card import summary
from iris_classifier.serving.protocols import contract, v2

SERVICE_TAG = "Service APIs"
V2_TAG = "Open Inference Protocol (KServe V2)"
INFRA_TAG = "Infrastructure"
TAGS = [
    {"name": SERVICE_TAG, "description": "Classify flowers, and describe the model that does."},
    {"name": V2_TAG, "description": "The same model for KServe, Triton and MLServer clients."},
    {"name": INFRA_TAG, "description": "Health checks for probes and balancers, and metrics."},
]
SERVICE_DESCRIPTION = (
    f"Classifies an iris flower as {', '.join(CLASS_NAMES[:-1])} or {CLASS_NAMES[-1]} from four "
    "measurements in centimetres: one flower, a batch of up to "
    f"{MAX_BATCH_ROWS:,}, or tensors in the Open Inference Protocol (KServe V2)."
)
# BentoML's own descriptions of its routes are about BentoML; these say what they mean here.
INFRA_DESCRIPTIONS = {
    "/healthz": "200 while the process runs (an older name of /livez).",
    "/livez": "200 while the process runs: the Kubernetes liveness probe.",
    "/readyz": "200 once the model is loaded; 503 while it loads and once the replica drains "
    "after SIGTERM, so that balancers stop sending it requests.",
    "/metrics": "Prometheus metrics: requests and latency per route, and the model's own "
    "(iris_predictions by class, iris_out_of_range_features, iris_model_info).",
}
INFER_DESCRIPTION = (
    f"Classify flowers: input {v2.INPUT!r}, FP32 [rows, 4] in the contract's feature order, 1 "
    f"to {MAX_TENSOR_ROWS:,} rows; outputs 'probabilities' (FP32 [rows, classes]) and 'label' "
    "(BYTES [rows]), and when asked for, 'out_of_range' (BYTES [rows]: each row's features "
    "outside the training range, joined by commas). Binary tensors (Triton's extension) are "
    "sent as application/octet-stream with an Inference-Header-Content-Length header."
)
READY = '{"ready": true} once the model is loaded; 503 with {"ready": false} while it loads'
MODEL_DESCRIPTION = (
    "The served model: estimator, hyper-parameters, hold-out and cross-validation metrics, "
    "classes, features, ONNX precision and opset."
)
NOT_LOADED = {"503": "The model is not loaded yet"}
UNKNOWN = {"404": "Unknown model or version", **NOT_LOADED}
NOT_READY = {"503": "Not ready: while the model loads or the replica drains"}
BODY_REFUSALS = {
    "400": "The request breaks the contract: each field and reason is named",
    "413": "Request body over the size limit",
    "415": "Request body not sent as application/json",
}


def describe_service(
    document: dict[str, Any], version: str, served: Mapping[str, Any]
) -> dict[str, Any]:
    """BentoML's document of its own routes, completed with every route of the route table;
    `served` is the card of the served model (empty before one is loaded)."""
    paths = document.setdefault("paths", {})
    for path, description in INFRA_DESCRIPTIONS.items():
        for operation in paths.get(path, {}).values():
            operation["description"] = description
    schemas: dict[str, Any] = {}
    paths |= _routes(schemas)
    document["components"] = {"schemas": schemas}
    document["tags"] = TAGS
    description = f"{SERVICE_DESCRIPTION}\n\n{summary(served)}" if served else SERVICE_DESCRIPTION
    document["info"] = {"title": PROJECT_NAME, "version": version, "description": description}
    if served:
        document["info"]["x-model"] = dict(served)
    _to_openapi_30(document)
    return document


def _routes(schemas: dict[str, Any]) -> dict[str, Any]:
    """The route table's routes; the models their schemas refer to are added to `schemas`."""

    def schema(model: type[BaseModel], mode: JsonSchemaMode = "serialization") -> dict[str, Any]:
        # Inline, as the API page reads a request's example there; nested models are shared.
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        schemas.update(schema.pop("$defs", {}))
        return schema

    def operation(
        description: str,
        answer: dict[str, Any],
        refusals: Mapping[str, str] = {},
        request: type[BaseModel] | None = None,
        tag: str = V2_TAG,
    ) -> dict[str, Any]:
        described: dict[str, Any] = {"tags": [tag], "description": description}
        if request is not None:
            body = {"application/json": {"schema": schema(request, "validation")}}
            described["requestBody"] = {"required": True, "content": body}
            refusals = {**BODY_REFUSALS, **refusals}
        described["responses"] = {"200": _json("OK", answer)} | {
            status: _json(why, readiness if status in NOT_READY else refusal)
            for status, why in refusals.items()
        }
        return described

    readiness, refusal = schema(v2.Readiness), schema(ErrorBody)
    seed = {"tag": SERVICE_TAG, "refusals": NOT_LOADED}
    paths: dict[str, Any] = {
        "/iris/classify_iris": {
            "post": operation(
                "Classify one flower: the most likely species and its probability.",
                schema(contract.Classification),
                request=contract.IrisFeatures,
                **seed,
            )
        },
        "/iris/classify_batch": {
            "post": operation(
                f"Classify up to {MAX_BATCH_ROWS:,} flowers in one request; answers come in "
                "the order sent.",
                schema(contract.BatchClassification),
                request=contract.BatchRequest,
                **seed,
            )
        },
        "/iris/model": {"get": operation(MODEL_DESCRIPTION, {"type": "object"}, **seed)},
        "/healthcheck": {
            "get": operation(
                "Seed-compatible health check: 200 once the service answers.",
                {"type": "string", "example": "Iris classifier is ready!"},
                tag=INFRA_TAG,
            )
        },
        "/v2": {
            "get": operation(
                "Server metadata: name, version, extensions.",
                schema(v2.ServerMetadata),
                NOT_LOADED,
            )
        },
        "/v2/health/live": {
            "get": operation('{"live": true} while the process runs.', schema(v2.Liveness))
        },
        "/v2/health/ready": {
            "get": operation(f"{READY} and once the replica drains.", readiness, NOT_READY)
        },
    }
    model, version = _path_parameter("model", example=MODEL_NAME), _path_parameter("version")
    for prefix, parameters in (
        ("/v2/models/{model}", [model]),
        ("/v2/models/{model}/versions/{version}", [model, version]),
    ):
        routes = {
            prefix: {
                "get": operation(
                    "Model metadata: its tensors and class names.",
                    schema(v2.ModelMetadata),
                    UNKNOWN,
                )
            },
            f"{prefix}/ready": {
                "get": operation("The model's readiness.", readiness, {**UNKNOWN, **NOT_READY})
            },
            f"{prefix}/infer": {
                "post": operation(
                    INFER_DESCRIPTION,
                    schema(v2.InferenceResponse),
                    UNKNOWN,
                    request=v2.InferenceRequest,
                )
            },
        }
        # Outputs asked for as binary data come back as Triton's binary tensors.
        routes[f"{prefix}/infer"]["post"]["responses"]["200"]["content"][
            "application/octet-stream"
        ] = {"schema": {"type": "string", "format": "binary"}}
        for operations in routes.values():
            for described in operations.values():
                described["parameters"] = parameters
        paths |= routes
    return paths


def _path_parameter(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _to_openapi_30(node: Any) -> None:
    """JSON Schema 2020-12 as OpenAPI 3.0 says it: `exclusiveMinimum: 0` as `minimum: 0,
    exclusiveMinimum: true`, `const` as a one-value `enum`, and `anyOf` with `{"type": "null"}`
    as `nullable`."""
    if isinstance(node, dict):
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            value = node.get(flag)
            if isinstance(value, int | float) and not isinstance(value, bool):
                node[bound] = value
                node[flag] = True
        if "const" in node:
            node["enum"] = [node.pop("const")]
        choices = node.get("anyOf")
        if isinstance(choices, list) and {"type": "null"} in choices:
            others = [choice for choice in choices if choice != {"type": "null"}]
            del node["anyOf"]
            node["nullable"] = True
            if len(others) > 1:
                node["anyOf"] = others
            elif "$ref" in others[0]:
                node["allOf"] = others
            else:
                node.update(others[0])
        for child in node.values():
            _to_openapi_30(child)
    elif isinstance(node, list):
        for child in node:
            _to_openapi_30(child)
