"""BentoML's OpenAPI document (`/docs.json`) corrected to say what this service is and does.

BentoML's document names the class (`IrisClassifier`), version "None" outside a Bento, BentoML's
team as the contact and, in a Bento, BentoML's badges and help links as the description. It
claims OpenAPI 3.0 but carries JSON Schema 2020-12 bounds (`exclusiveMinimum: 0`), marks no
request body as required, describes 400 answers with a string `detail`, and leaves out the
routes mounted beside BentoML's APIs. The
corrected document is both what tools read and what the API page is built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.model_format import version_of
from iris_classifier.serving.card import summary
from iris_classifier.serving.config import MAX_BATCH_ROWS, PROJECT_NAME
from iris_classifier.serving.refusals import REFUSAL_SCHEMA
from iris_classifier.serving.v2_openapi import TAG as V2_TAG
from iris_classifier.serving.v2_openapi import get_operation, v2_paths

SERVICE_TAG = "Service APIs"
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

EXTRA_REFUSALS = {
    "413": "Request body over the size limit",
    "415": "Request body not sent as application/json",
}

# Answered by the route table beside BentoML's APIs, so BentoML does not document them.
HEALTHCHECK_OPERATION = get_operation(
    "Seed-compatible health check: 200 once the service answers.",
    {"type": "string", "example": "Iris classifier is ready!"},
    tags=[INFRA_TAG],
)
MODEL_OPERATION = get_operation(
    "The served model: estimator, hyper-parameters, hold-out and cross-validation metrics, "
    "classes, features, ONNX precision and opset.",
    {"type": "object"},
    tags=[SERVICE_TAG],
)


def describe_service(
    document: dict[str, Any], version: str, served: Mapping[str, Any]
) -> dict[str, Any]:
    """BentoML's OpenAPI document corrected to what this service is, accepts and answers;
    `served` is the card of the served model (empty before one is loaded)."""
    _to_openapi_30_bounds(document)
    paths = document.setdefault("paths", {})
    paths.setdefault("/healthcheck", HEALTHCHECK_OPERATION)
    paths.setdefault("/iris/model", MODEL_OPERATION)
    model_version = version_of(str(served.get("model_version", "")))
    for path, operations in v2_paths(model_version).items():
        paths.setdefault(path, operations)
    for path, description in INFRA_DESCRIPTIONS.items():
        for operation in paths.get(path, {}).values():
            operation["description"] = description
    document["tags"] = TAGS
    document["info"] = {"title": PROJECT_NAME, "version": version}
    document["info"]["description"] = (
        f"{SERVICE_DESCRIPTION}\n\n{summary(served)}" if served else SERVICE_DESCRIPTION
    )
    if served:
        document["info"]["x-model"] = dict(served)
    document.setdefault("components", {}).setdefault("schemas", {})["InvalidArgument"] = {
        **REFUSAL_SCHEMA,
        "title": "InvalidArgument",
        "description": "Bad Request",
    }
    for operations in paths.values():
        for operation in operations.values():
            if "requestBody" not in operation:
                continue
            operation["requestBody"]["required"] = True
            for status, description in EXTRA_REFUSALS.items():
                operation["responses"][status] = {
                    "description": description,
                    "content": {"application/json": {"schema": REFUSAL_SCHEMA}},
                }
    return document


def _to_openapi_30_bounds(node: Any) -> None:
    """`exclusiveMinimum: 0` (JSON Schema 2020-12) as `minimum: 0, exclusiveMinimum: true`."""
    if isinstance(node, dict):
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            value = node.get(flag)
            if isinstance(value, int | float) and not isinstance(value, bool):
                node[bound] = value
                node[flag] = True
        for child in node.values():
            _to_openapi_30_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _to_openapi_30_bounds(child)
