"""The API page at `/` and the OpenAPI document at `/docs.json`, through the service's ASGI app."""

from __future__ import annotations

import base64
import hashlib
import re
from html import unescape

from iris_classifier.serving.config import PROJECT_NAME
from tests.support.project import project_version

# What BentoML writes into a service's document and page when nobody tells it otherwise.
BENTOML_BOILERPLATE = (
    "BentoML",
    "IrisClassifier:dev",
    "shields.io",
    "badgen.net",
    "docs.bentoml.com",
)


def test_document_names_this_service_and_its_version(service_client) -> None:
    info = service_client.get("/docs.json").json()["info"]
    assert info["title"] == PROJECT_NAME
    assert info["version"] == project_version()
    assert "contact" not in info


def test_document_describes_the_served_model(service_client, trained_model) -> None:
    document = service_client.get("/docs.json").json()
    description = document["info"]["description"]
    assert description.startswith("Classifies an iris flower as setosa, versicolor or virginica")
    assert f"Served model {trained_model}: logistic-regression" in description
    assert "holdout accuracy" in description
    assert document["info"]["x-model"]["estimator"] == "logistic-regression"
    assert "get" in document["paths"]["/iris/model"]


def test_document_carries_no_bentoml_boilerplate(service_client) -> None:
    document = service_client.get("/docs.json").json()
    described = [document["info"], document["tags"]]
    described += [
        operation.get("description", "")
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    text = str(described)
    assert [phrase for phrase in BENTOML_BOILERPLATE if phrase in text] == []


def shown_operations(page: str) -> list[str]:
    return [unescape(name) for name in re.findall(r'data-endpoint="([A-Z]+ [^"]+)"', page)]


def test_page_has_an_example_for_every_documented_operation(service_client) -> None:
    document = service_client.get("/docs.json").json()
    documented = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    ]
    page = service_client.get("/").text
    assert sorted(shown_operations(page)) == sorted(documented)
    assert page.count('<button type="button">Try it</button>') == len(documented) + 1


def test_page_names_the_service_the_version_and_the_model(service_client, trained_model) -> None:
    page = service_client.get("/").text
    assert f"<h1>{PROJECT_NAME} <span" in page
    assert f"version {project_version()}</span></h1>" in page
    assert f"<dd>{trained_model}</dd>" in page
    assert "<dd>logistic-regression</dd>" in page
    assert [phrase for phrase in BENTOML_BOILERPLATE if phrase in page] == []


def test_page_allows_only_its_own_inline_script_and_style(service_client) -> None:
    response = service_client.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    for tag in ("script", "style"):
        [inline] = re.findall(rf"<{tag}>(.*?)</{tag}>", response.text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy


def test_page_starts_with_one_flower_then_the_batch_then_the_model(service_client) -> None:
    shown = shown_operations(service_client.get("/").text)
    assert shown[:3] == ["POST /iris/classify_iris", "POST /iris/classify_batch", "GET /iris/model"]


def test_document_describes_every_route_the_service_answers(service_client) -> None:
    from iris_classifier.serving.seam import BENTOML_PATHS as BENTOML_ROUTES
    from service import routes

    documented = service_client.get("/docs.json").json()["paths"]
    version = routes.served.protocol.model_version
    answered = {*routes.routes, *BENTOML_ROUTES} - {"/", "/docs.json", "/schema.json"}
    for path in routes.model_routes:
        answered.add(
            path.replace(f"/versions/{version}", "/versions/{version}").replace(
                "/models/iris_classifier", "/models/{model}"
            )
        )
    assert answered - set(documented) == set()
    for path, methods in routes.routes.items():
        if path in documented:
            assert {method.lower() for method in methods} <= set(documented[path]), path


def test_document_schemas_are_the_models_that_read_and_describe_each_route(
    service_client,
) -> None:
    from iris_classifier.serving.protocols.contract import (
        BatchClassification,
        BatchRequest,
        Classification,
        IrisFeatures,
    )
    from iris_classifier.serving.protocols.v2 import InferenceRequest, InferenceResponse

    document = service_client.get("/docs.json").json()
    for path, request, answer in (
        ("/iris/classify_iris", IrisFeatures, Classification),
        ("/iris/classify_batch", BatchRequest, BatchClassification),
        ("/v2/models/{model}/infer", InferenceRequest, InferenceResponse),
        ("/v2/models/{model}/versions/{version}/infer", InferenceRequest, InferenceResponse),
    ):
        operation = document["paths"][path]["post"]
        sent = operation["requestBody"]["content"]["application/json"]["schema"]
        answered = operation["responses"]["200"]["content"]["application/json"]["schema"]
        refused = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert sent["title"] == request.__name__, path
        assert set(sent["properties"]) == set(request.model_json_schema()["properties"]), path
        assert answered["title"] == answer.__name__, path
        expected = answer.model_json_schema(mode="serialization")["properties"]
        assert set(answered["properties"]) == set(expected), path
        assert set(refused["properties"]) == {"error", "detail"}, path


def test_every_schema_the_document_refers_to_is_in_it(service_client) -> None:
    document = service_client.get("/docs.json").json()
    references: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            references.update(v for k, v in node.items() if k == "$ref" and isinstance(v, str))
            for child in node.values():
                collect(child)
        elif isinstance(node, list):
            for child in node:
                collect(child)

    collect(document)
    assert references, "nested models are shared components"
    defined = {f"#/components/schemas/{name}" for name in document["components"]["schemas"]}
    assert references - defined == set()
