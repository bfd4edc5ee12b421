"""The service through its ASGI app (Starlette TestClient) and called directly as a class."""

from __future__ import annotations

import json
import logging
import time

import pytest

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from tests.conftest import SEED_FLOWER
from tests.support.python_report import python_report

CLASSIFY = "/iris/classify_iris"
BATCH = "/iris/classify_batch"
JSON_HEADERS = {"Content-Type": "application/json"}


def with_value(field: str, raw_json_value: str) -> bytes:
    """The seed flower as JSON text with one field's value replaced by raw JSON text."""
    parts = [
        f'"{name}": {raw_json_value if name == field else json.dumps(value)}'
        for name, value in SEED_FLOWER.items()
    ]
    return ("{" + ", ".join(parts) + "}").encode()


def assert_refused(response, status: int, *, naming: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str)
    assert naming in body["error"], body
    assert isinstance(body["detail"], list)
    assert body["detail"]
    return body


def test_seed_request_gets_seed_answer(service_client) -> None:
    response = service_client.post(CLASSIFY, json=SEED_FLOWER)
    assert response.status_code == 200
    body = response.json()
    assert {"class": body["class"], "probability": body["probability"]} == {
        "class": "setosa",
        "probability": 0.99,
    }
    assert set(body["probabilities"]) == set(CLASS_NAMES)
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert body["model_version"].startswith("iris_classifier:")


def test_seed_request_names_its_features_outside_the_training_range(service_client) -> None:
    # No iris in the bundled data has a 2 cm sepal or a 4 cm petal width; 4 cm sepal width
    # and 2 cm petal length are within what it holds.
    body = service_client.post(CLASSIFY, json=SEED_FLOWER).json()
    assert body["out_of_range"] == ["sepal_length", "petal_width"]


def test_a_typical_flower_is_in_range(service_client) -> None:
    typical = {"sepal_length": 5.8, "sepal_width": 3.0, "petal_length": 4.35, "petal_width": 1.3}
    assert service_client.post(CLASSIFY, json=typical).json()["out_of_range"] == []


@pytest.mark.parametrize(
    ("flower", "flagged"),
    [
        # The bundled data's extremes are in range; a hair beyond them is not.
        ({"sepal_length": 4.3, "sepal_width": 2.0, "petal_length": 1.0, "petal_width": 0.1}, []),
        ({"sepal_length": 7.9, "sepal_width": 4.4, "petal_length": 6.9, "petal_width": 2.5}, []),
        (
            {"sepal_length": 4.29, "sepal_width": 4.41, "petal_length": 0.99, "petal_width": 2.51},
            ["sepal_length", "sepal_width", "petal_length", "petal_width"],
        ),
        (
            {"sepal_length": 5.0, "sepal_width": 1.9, "petal_length": 1.5, "petal_width": 0.2},
            ["sepal_width"],
        ),
    ],
)
def test_batch_rows_carry_their_own_out_of_range(service_client, flower, flagged) -> None:
    response = service_client.post(BATCH, json={"flowers": [SEED_FLOWER, flower]})
    rows = response.json()["predictions"]
    assert [row["out_of_range"] for row in rows] == [["sepal_length", "petal_width"], flagged]
    assert service_client.post(CLASSIFY, json=flower).json()["out_of_range"] == flagged


def test_every_response_names_the_replica(service_client) -> None:
    import socket

    expected = socket.gethostname()  # POD_NAME is unset in this process
    for response in (
        service_client.post(CLASSIFY, json=SEED_FLOWER),
        service_client.post(CLASSIFY, json={}),
        service_client.get("/healthcheck"),
        service_client.get("/readyz"),
        service_client.get("/no-such-page"),
    ):
        assert response.headers["x-served-by"] == expected
        assert len(response.headers["x-request-id"]) == 32


def test_healthcheck_keeps_seed_answer(service_client) -> None:
    response = service_client.get("/healthcheck")
    assert response.status_code == 200
    assert response.json() == "Iris classifier is ready!"


# /metrics needs the Prometheus multiprocess set-up of `bentoml serve`: see test_service_live.py.
@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_bentoml_operational_endpoints_answer(service_client, path: str) -> None:
    assert service_client.get(path).status_code == 200


def test_batch_answers_in_order(service_client) -> None:
    virginica = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    versicolor = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5}
    flowers = [SEED_FLOWER, virginica, versicolor, SEED_FLOWER]
    response = service_client.post(BATCH, json={"flowers": flowers})
    assert response.status_code == 200
    classes = [p["class"] for p in response.json()["predictions"]]
    assert classes == ["setosa", "virginica", "versicolor", "setosa"]
    singles = [service_client.post(CLASSIFY, json=f).json() for f in flowers]
    assert response.json()["predictions"] == [
        {"class": s["class"], "probability": s["probability"], "out_of_range": s["out_of_range"]}
        for s in singles
    ]


def test_batch_over_the_row_limit_says_the_limit(service_client) -> None:
    from iris_classifier.serving.config import MAX_BATCH_ROWS

    flowers = [SEED_FLOWER] * (MAX_BATCH_ROWS + 1)
    response = service_client.post(BATCH, json={"flowers": flowers})
    body = assert_refused(response, 400, naming="flowers")
    assert str(MAX_BATCH_ROWS) in body["error"]


def test_batch_at_the_row_limit_is_answered(service_client) -> None:
    from iris_classifier.serving.config import MAX_BATCH_ROWS

    flowers = [SEED_FLOWER] * MAX_BATCH_ROWS
    response = service_client.post(BATCH, json={"flowers": flowers})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == MAX_BATCH_ROWS


def test_empty_batch_is_refused(service_client) -> None:
    assert_refused(service_client.post(BATCH, json={"flowers": []}), 400, naming="flowers")


def test_bad_row_in_batch_names_its_index(service_client) -> None:
    flowers = [SEED_FLOWER, {**SEED_FLOWER, "petal_width": "wide"}]
    response = service_client.post(BATCH, json={"flowers": flowers})
    assert_refused(response, 400, naming="flowers.1.petal_width")


NOT_A_FINITE_NUMBER = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    '"nan"',
    '"NaN"',
    '"inf"',
    '"-inf"',
    '"Infinity"',
    '"-Infinity"',
    '"4"',
    '"four"',
    "true",
    "false",
    "null",
    "[]",
    "[4]",
    "{}",
    '{"value": 4}',
]
OUT_OF_RANGE = ["0", "-1", "-0.5", "100.5", "1000", "1e300"]


@pytest.mark.parametrize("raw_value", NOT_A_FINITE_NUMBER + OUT_OF_RANGE)
@pytest.mark.parametrize("field", list(SEED_FLOWER))
def test_bad_feature_value_is_refused_naming_the_field(
    service_client, field: str, raw_value: str
) -> None:
    response = service_client.post(
        CLASSIFY, content=with_value(field, raw_value), headers=JSON_HEADERS
    )
    body = assert_refused(response, 400, naming=field)
    assert [problem["field"] for problem in body["detail"]] == [field]


def test_largest_allowed_size_is_accepted(service_client) -> None:
    response = service_client.post(
        CLASSIFY, content=with_value("petal_width", "100"), headers=JSON_HEADERS
    )
    assert response.status_code == 200


@pytest.mark.parametrize("field", list(SEED_FLOWER))
def test_missing_field_is_refused(service_client, field: str) -> None:
    flower = {k: v for k, v in SEED_FLOWER.items() if k != field}
    assert_refused(service_client.post(CLASSIFY, json=flower), 400, naming=field)


def test_extra_field_is_refused(service_client) -> None:
    flower = {**SEED_FLOWER, "colour": 3}
    assert_refused(service_client.post(CLASSIFY, json=flower), 400, naming="colour")


def test_a_few_unknown_fields_are_each_named(service_client) -> None:
    flower = {**SEED_FLOWER, "colour": 3, "smell": 1, "origin": 2}
    body = assert_refused(service_client.post(CLASSIFY, json=flower), 400, naming="smell")
    assert [problem["field"] for problem in body["detail"]] == ["colour", "smell", "origin"]


def test_sixty_thousand_unknown_fields_are_one_small_refusal(service_client, caplog) -> None:
    """A refusal costs about what reading the request cost: one problem, not 60,000."""
    flower = dict(SEED_FLOWER, **{f"field{index}": 1 for index in range(60_000)})
    with caplog.at_level(logging.INFO):
        response = service_client.post(CLASSIFY, json=flower)
    body = assert_refused(response, 400, naming="60000 unknown fields")
    assert len(body["detail"]) == 1
    assert len(response.content) < 1024
    refusals = [r.getMessage() for r in caplog.records if "refused POST" in r.getMessage()]
    assert len(refusals) == 1
    assert len(refusals[0]) < 1024


def test_a_refusal_lists_five_problems_and_counts_the_rest(service_client, caplog) -> None:
    flowers = [{**SEED_FLOWER, "sepal_length": "x" * 10_000}] * 20
    with caplog.at_level(logging.INFO):
        response = service_client.post(BATCH, json={"flowers": flowers})
    body = assert_refused(response, 400, naming="and 15 more")
    assert len(body["detail"]) == 5
    assert len(response.content) < 4096
    (refusal,) = [r.getMessage() for r in caplog.records if "refused POST" in r.getMessage()]
    assert "and 15 more" in refusal
    assert len(refusal) < 2048


@pytest.mark.parametrize(
    ("body", "naming"),
    [
        (b"", "sepal_length"),  # an empty body is an empty object: every field is missing
        (b"{", "Invalid JSON"),
        (b'{"sepal_length": 2,}', "Invalid JSON"),
        (b"\xff\xfe\x00{", "Invalid JSON"),
        (b'{"sepal_length": "\xff"}', "Invalid JSON"),
        (b"[1, 2, 3, 4]", "object"),
        (b'"setosa"', "object"),
        (b"4", "object"),
        (b"null", "object"),
    ],
)
def test_malformed_body_is_refused(service_client, body: bytes, naming: str) -> None:
    response = service_client.post(CLASSIFY, content=body, headers=JSON_HEADERS)
    assert_refused(response, 400, naming=naming)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
def test_non_json_body_is_refused_with_415(service_client, content_type: str) -> None:
    response = service_client.post(
        CLASSIFY, content=json.dumps(SEED_FLOWER), headers={"Content-Type": content_type}
    )
    assert_refused(response, 415, naming="application/json")


def test_declared_oversized_body_is_refused_with_413(service_client) -> None:
    from iris_classifier.serving.config import MAX_BODY_BYTES

    body = b" " * (MAX_BODY_BYTES + 1)
    response = service_client.post(CLASSIFY, content=body, headers=JSON_HEADERS)
    assert_refused(response, 413, naming=str(MAX_BODY_BYTES))


def test_chunked_oversized_body_is_refused_with_413(service_client) -> None:
    """No Content-Length: the limit is counted as chunks arrive (the live-server test shows
    that the refusal comes before the client has sent everything)."""
    from iris_classifier.serving.config import MAX_BODY_BYTES

    chunk = b" " * 65536

    def stream():
        for _ in range(2 * MAX_BODY_BYTES // len(chunk)):
            yield chunk

    response = service_client.post(CLASSIFY, content=stream(), headers=JSON_HEADERS)
    assert "content-length" not in response.request.headers
    assert_refused(response, 413, naming=str(MAX_BODY_BYTES))


def test_refusal_is_logged_as_one_line_without_traceback(service_client, caplog) -> None:
    with caplog.at_level(logging.INFO):
        service_client.post(
            CLASSIFY, content=with_value("sepal_width", "NaN"), headers=JSON_HEADERS
        )
    refusals = [r for r in caplog.records if "refused POST /iris/classify_iris" in r.getMessage()]
    assert len(refusals) == 1
    record = refusals[0]
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "sepal_width" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_service_stays_healthy_after_bad_inputs(service_client) -> None:
    for raw_value in NOT_A_FINITE_NUMBER:
        service_client.post(
            CLASSIFY, content=with_value("sepal_length", raw_value), headers=JSON_HEADERS
        )
    service_client.post(CLASSIFY, content=b"\xff" * 100, headers=JSON_HEADERS)
    assert service_client.get("/readyz").status_code == 200
    assert service_client.post(CLASSIFY, json=SEED_FLOWER).json()["class"] == "setosa"


def test_service_class_called_directly(service_class) -> None:
    from iris_classifier.serving.protocols.contract import parse_batch, parse_flower

    service = service_class()
    single = service.predictor.classify(parse_flower(json.dumps(SEED_FLOWER).encode()))
    assert (single["class"], single["probability"]) == ("setosa", 0.99)
    batch = service.predictor.classify_many(
        parse_batch(json.dumps({"flowers": [SEED_FLOWER]}).encode())
    )
    assert [(p["class"], p["probability"]) for p in batch["predictions"]] == [("setosa", 0.99)]


def test_response_uses_the_seed_field_name_class(service_class) -> None:
    from iris_classifier.serving.protocols.contract import Classification, parse_flower

    service = service_class()
    answer = service.predictor.classify(parse_flower(json.dumps(SEED_FLOWER).encode()))
    dumped = json.loads(Classification.model_validate(answer).model_dump_json())
    assert "class" in dumped
    assert "species" not in dumped


def test_model_endpoint_names_the_estimator_and_its_metrics(service_client, trained_model) -> None:
    response = service_client.get("/iris/model")
    assert response.status_code == 200
    card = response.json()
    assert card["model_version"] == trained_model
    assert card["estimator"] == "logistic-regression"
    assert card["format"] == "onnx"
    assert 0.9 <= card["metrics"]["holdout_accuracy"] <= 1
    assert card["class_names"] == list(CLASS_NAMES)


# One error shape for every 4xx and 5xx, whatever route or layer refuses.
V2_MODEL = "/v2/models/iris_classifier"
V2_INFER = f"{V2_MODEL}/infer"
VIRGINICA_TENSOR = {
    "inputs": [
        {
            "name": "flowers",
            "datatype": "FP32",
            "shape": [2, 4],
            "data": [[6.7, 3.0, 5.2, 2.3], [6.9, 3.1, 5.4, 2.1]],
        }
    ]
}


def assert_one_shape(response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["detail"]
    for problem in body["detail"]:
        assert {"field", "reason"} <= set(problem)
        assert all(isinstance(value, str) for value in problem.values())
    if field is not None:
        assert body["detail"][0]["field"] == field
    return body


def big_body() -> bytes:
    from iris_classifier.serving.config import MAX_BODY_BYTES

    return b" " * (MAX_BODY_BYTES + 1)


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "status", "field"),
    [
        ("GET", "/no/such/route", {}, 404, "path"),
        ("POST", "/iris/classify", {"json": SEED_FLOWER}, 404, "path"),
        ("GET", "/v2/models/other", {}, 404, "model"),
        ("POST", "/v2/models/other/infer", {"json": VIRGINICA_TENSOR}, 404, "model"),
        ("GET", f"{V2_MODEL}/versions/nope/ready", {}, 404, "version"),
        ("GET", CLASSIFY, {}, 405, "method"),
        ("PUT", BATCH, {"json": {}}, 405, "method"),
        ("POST", "/v2/health/ready", {}, 405, "method"),
        ("GET", V2_INFER, {}, 405, "method"),
        ("POST", "/readyz", {"json": {}}, 405, None),
        (
            "POST",
            CLASSIFY,
            {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
            415,
            "content-type",
        ),
        (
            "POST",
            V2_INFER,
            {"content": b"{}", "headers": {"Content-Type": "text/csv"}},
            415,
            "content-type",
        ),
        ("POST", CLASSIFY, {"content": big_body(), "headers": JSON_HEADERS}, 413, "body"),
        ("POST", V2_INFER, {"content": big_body(), "headers": JSON_HEADERS}, 413, "body"),
        ("POST", CLASSIFY, {"json": {**SEED_FLOWER, "sepal_length": -1}}, 400, "sepal_length"),
        ("POST", BATCH, {"json": {"flowers": []}}, 400, "flowers"),
        ("POST", V2_INFER, {"json": {"inputs": []}}, 400, "inputs"),
        (
            "POST",
            V2_INFER,
            {"json": {**VIRGINICA_TENSOR, "model_name": "other"}},
            400,
            "model_name",
        ),
    ],
)
def test_every_refusal_has_the_one_shape(
    service_client, method: str, path: str, request_kwargs: dict, status: int, field: str
) -> None:
    response = service_client.request(method, path, **request_kwargs)
    assert_one_shape(response, status, field)
    if status == 405:
        assert method not in response.headers["allow"]


def test_a_wrong_method_is_told_the_allowed_ones(service_client) -> None:
    response = service_client.get(CLASSIFY)
    assert response.headers["allow"] == "POST"
    assert (
        response.json()["error"] == "method GET is not allowed on '/iris/classify_iris': use POST"
    )


def test_health_answers_carry_the_kserve_json_bodies(service_client) -> None:
    from service import routes

    version = routes.served.protocol.model_version
    assert service_client.get("/v2/health/live").json() == {"live": True}
    for path in ("/v2/health/ready", f"{V2_MODEL}/ready", f"{V2_MODEL}/versions/{version}/ready"):
        response = service_client.get(path)
        assert (response.status_code, response.json()) == (200, {"ready": True}), path


def test_seed_answers_name_the_model_tag_and_v2_its_version(
    service_client, trained_model: str
) -> None:
    """The seed routes and the model card answer the store's full tag, as the seed contract
    always has; the Open Inference Protocol names the version alone, and serves under it."""
    tag = service_client.post(CLASSIFY, json=SEED_FLOWER).json()["model_version"]
    assert tag == trained_model
    assert service_client.get("/iris/model").json()["model_version"] == tag
    version = tag.split(":")[1]
    assert service_client.get(V2_MODEL).json()["versions"] == [version]
    response = service_client.get(f"{V2_MODEL}/versions/{version}")
    assert (response.status_code, response.json()["name"]) == (200, "iris_classifier")


def test_readiness_is_false_while_draining(service_client) -> None:
    from service import drain

    drain.started_at = time.monotonic()  # as the SIGTERM handler starts it
    try:
        for path in ("/v2/health/ready", f"{V2_MODEL}/ready"):
            response = service_client.get(path)
            assert (response.status_code, response.json()) == (503, {"ready": False}), path
        assert service_client.get("/v2/health/live").json() == {"live": True}
    finally:
        drain.started_at = None
    assert service_client.get("/v2/health/ready").json() == {"ready": True}


def test_kserve_clients_model_name_naming_this_model_is_accepted(service_client) -> None:
    request = {**VIRGINICA_TENSOR, "id": "k-7", "model_name": "iris_classifier"}
    response = service_client.post(V2_INFER, json=request)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "k-7"


def test_a_binary_tensor_is_read_by_the_last_header_length_it_sends(service_client) -> None:
    import numpy as np

    raw = np.array([[6.7, 3.0, 5.2, 2.3]], "<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "flowers",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "label"}],
        }
    ).encode()
    # Sent twice, the header counts as a dict of the request's headers holds it: the last one.
    lengths = [
        ("inference-header-content-length", length) for length in ("99999", str(len(header)))
    ]
    headers = [("content-type", "application/octet-stream"), *lengths]
    response = service_client.post(V2_INFER, content=header + raw, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == ["virginica"]
    refused = service_client.post(
        V2_INFER, content=header + raw, headers=headers[:1] + lengths[::-1]
    )
    assert_one_shape(refused, 400, "inference-header-content-length")


def test_tensor_answers_are_counted_in_the_model_metrics(service_client) -> None:
    from tests.serving.telemetry.test_metrics import delta, snapshot

    # Two flowers inside the training ranges and one past the largest sepal length and petal
    # width of the whole iris data set, so the out-of-range counters must move by one row.
    outlier = [8.4, 3.0, 5.8, 2.9]
    flowers = [*VIRGINICA_TENSOR["inputs"][0]["data"], outlier]
    request = {
        "inputs": [{"name": "flowers", "datatype": "FP32", "shape": [3, 4], "data": flowers}],
        "outputs": [{"name": "label"}, {"name": "out_of_range"}],
    }
    before = snapshot()
    answer = service_client.post(V2_INFER, json=request).json()
    after = snapshot()
    labels, flagged = (output["data"] for output in answer["outputs"])
    assert labels[:2] == ["virginica", "virginica"]
    assert flagged == ["", "", "sepal_length,petal_width"]
    for name in CLASS_NAMES:
        counted = delta(before, after, "iris_predictions_total", **{"class": name})
        assert counted == labels.count(name), name
    assert delta(before, after, "iris_prediction_top_probability_count") == 3
    assert delta(before, after, "iris_batch_rows_count") == 1
    assert delta(before, after, "iris_batch_rows_sum") == 3
    assert delta(before, after, "iris_out_of_range_flowers_total") == 1
    per_feature = {
        name: delta(before, after, "iris_out_of_range_features_total", feature=name)
        for name in FEATURE_NAMES
    }
    assert per_feature == {
        "sepal_length": 1,
        "sepal_width": 0,
        "petal_length": 0,
        "petal_width": 1,
    }
    single = service_client.post(CLASSIFY, json=dict(zip(FEATURE_NAMES, outlier, strict=True)))
    assert ",".join(single.json()["out_of_range"]) == flagged[2]


def test_typed_apis_and_every_route_share_one_predictor(service_class) -> None:
    from service import routes

    service = service_class()
    assert routes.served is not None
    assert routes.served.predictor is service.predictor
    assert routes.served.protocol.predictor is service.predictor


def test_the_arbiter_counts_gpus_without_pynvml_where_nvml_cannot_be_loaded(
    trained_model: str,
) -> None:
    """`bentoml serve`'s main process imports the service, then counts GPUs as it starts the
    workers: pynvml, which would stay in it for good, is imported only where NVML loads."""
    code = (
        "import ctypes, json, sys\n"
        "import service\n"
        "from _bentoml_impl.server.allocator import ResourceAllocator\n"
        "gpus = ResourceAllocator().system_resources['nvidia.com/gpu']\n"
        "try:\n"
        "    ctypes.CDLL(service.seam.NVML_LIBRARY)\n"
        "    loadable = True\n"
        "except OSError:\n"
        "    loadable = False\n"
        "print(json.dumps({'pynvml': 'pynvml' in sys.modules, 'loadable': loadable}))\n"
    )
    report = python_report(code)
    assert report["pynvml"] == report["loadable"], report
