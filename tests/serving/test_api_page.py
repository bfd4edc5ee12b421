"""The API page at `/` and the OpenAPI document at `/docs.json`, through the service's ASGI app."""

from __future__ import annotations

from iris_classifier.config import PROJECT_NAME, installed_version

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
    assert info["version"] == installed_version() != "unknown"
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
