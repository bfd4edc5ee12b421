"""The service through its ASGI app (Starlette TestClient) and called directly as a class."""

from __future__ import annotations

from tests.conftest import SEED_FLOWER

CLASSIFY = "/iris/classify_iris"
BATCH = "/iris/classify_batch"


def test_seed_request_gets_seed_answer(service_client) -> None:
    response = service_client.post(CLASSIFY, json=SEED_FLOWER)
    assert response.status_code == 200
    body = response.json()
    assert {"class": body["class"], "probability": body["probability"]} == {
        "class": "setosa",
        "probability": 0.99,
    }
    assert set(body["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert body["model_version"].startswith("iris_classifier:")
