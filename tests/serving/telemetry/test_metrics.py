"""Model metrics: what one answer and one batch add, in process and on a live server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import prometheus_client
import pytest

from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from iris_classifier.serving.telemetry.metric_buffer import FLUSH_SECONDS, shared_buffer
from iris_classifier.serving.telemetry.metrics import ModelMetrics
from tests.conftest import SEED_FLOWER, serving

VIRGINICA = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value} from a Prometheus text exposition."""
    found = {}
    for line in text.splitlines():
        if match := SAMPLE.match(line):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            found[match["name"], labels] = float(match["value"])
    return found


def snapshot() -> dict[tuple[str, frozenset], float]:
    """What a scrape of this process reads: the buffered counts written, then exposed."""
    shared_buffer().flush()
    return samples(prometheus_client.generate_latest().decode())


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_a_batch_counts_as_its_rows_counted_one_by_one() -> None:
    metrics = ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="m:1", estimator="test")
    rng = np.random.default_rng(7)
    best = rng.integers(0, 3, size=200)
    # Values on bucket bounds included: a value equal to a bound belongs to that bucket.
    top = np.concatenate([rng.uniform(1 / 3, 1, size=190), [0.4, 0.5, 0.9, 0.99, 1.0] * 2])
    mask = rng.random((200, 4)) < 0.2
    names = [[n for n, flagged in zip(FEATURE_NAMES, row, strict=True) if flagged] for row in mask]

    start = snapshot()
    for index, probability, outside in zip(best.tolist(), top.tolist(), names, strict=True):
        metrics.record_one(index, probability, outside)
    one_by_one = snapshot()
    metrics.record_batch(best, top, mask)
    batched = snapshot()

    changed = {key for key in batched if key[0].startswith("iris_") and "batch_rows" not in key[0]}
    assert changed
    for name, labels in changed:
        by_one = delta(start, one_by_one, name, **dict(labels))
        by_batch = delta(one_by_one, batched, name, **dict(labels))
        assert by_batch == pytest.approx(by_one), (name, labels)
    assert delta(start, batched, "iris_predictions_total", **{"class": "setosa"}) == 2 * np.sum(
        best == 0
    )
    assert delta(one_by_one, batched, "iris_batch_rows_count") == 1
    assert delta(one_by_one, batched, "iris_batch_rows_sum") == 200


def test_model_info_names_only_the_current_model() -> None:
    ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="m:old", estimator="a")
    ModelMetrics(CLASS_NAMES, FEATURE_NAMES, model_tag="m:new", estimator="b")
    info = {key: value for key, value in snapshot().items() if key[0] == "iris_model_info"}
    assert info == {
        ("iris_model_info", frozenset({("model_version", "m:new"), ("estimator", "b")})): 1.0
    }


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        return samples(response.read().decode())


@pytest.fixture(scope="module")
def two_worker_server(
    trained_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`bentoml serve` with two worker processes, whose counts /metrics must add up."""
    workers = {"BENTOML_CONFIG_OPTIONS": "services.IrisClassifier.workers=2"}
    with serving(tmp_path_factory, "two-workers", workers) as url:
        yield url


@pytest.mark.integration
def test_live_metrics_count_every_answer_across_workers(
    two_worker_server: str, trained_model: str
) -> None:
    before = scrape(two_worker_server)
    for _ in range(30):
        post(f"{two_worker_server}/iris/classify_iris", SEED_FLOWER)
    post(f"{two_worker_server}/iris/classify_batch", {"flowers": [SEED_FLOWER, VIRGINICA] * 50})
    # The worker that answers the scrape writes its own counts then; the other one's timer has
    # written its counts by now (FLUSH_SECONDS, with room for a busy machine).
    time.sleep(FLUSH_SECONDS * 4)
    after = scrape(two_worker_server)

    assert delta(before, after, "iris_predictions_total", **{"class": "setosa"}) == 80
    assert delta(before, after, "iris_predictions_total", **{"class": "virginica"}) == 50
    assert delta(before, after, "iris_out_of_range_flowers_total") == 80
    for feature, flagged in zip(FEATURE_NAMES, (80, 0, 0, 80), strict=True):
        assert delta(before, after, "iris_out_of_range_features_total", feature=feature) == flagged
    assert delta(before, after, "iris_prediction_top_probability_count") == 130
    assert delta(before, after, "iris_batch_rows_count") == 1
    assert delta(before, after, "iris_batch_rows_bucket", le="100.0") == 1
    info = [labels for name, labels in after if name == "iris_model_info"]
    assert info == [
        frozenset({("model_version", trained_model), ("estimator", "logistic-regression")})
    ]


@pytest.mark.integration
def test_a_stopped_server_has_written_every_count(
    trained_model: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Requests, then SIGTERM at once, before the flush timer: the files the next scrape of
    the replica's directory would read hold every one of them."""
    from prometheus_client.multiprocess import MultiProcessCollector

    from harness.processes import (
        bentoml_serve_command,
        private_bentoml_home,
        running_on_free_port,
        stop_tree,
    )
    from tests.conftest import REPO_ROOT

    log = tmp_path_factory.mktemp("stopped") / "serve.log"
    home = private_bentoml_home(log.with_name("bentoml-home"))
    with running_on_free_port(
        bentoml_serve_command,
        env={"BENTOML_HOME": str(home)},
        log_path=log,
        cwd=REPO_ROOT,
        timeout=90,
    ) as (process, url):
        for _ in range(25):
            post(f"{url}/iris/classify_iris", SEED_FLOWER)
        stop_tree(process.pid, grace=30)
        process.wait(timeout=10)

    registry = prometheus_client.CollectorRegistry()
    MultiProcessCollector(registry, path=str(home / "prometheus_multiproc_dir"))
    written = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }
    assert written[("iris_predictions_total", frozenset({("class", "setosa")}))] == 25
    requests = {
        labels: value
        for (name, labels), value in written.items()
        if name == "bentoml_service_request_total"
        and ("endpoint", "/iris/classify_iris") in labels
        and ("http_response_code", "200") in labels
    }
    assert list(requests.values()) == [25]


@pytest.mark.integration
def test_a_scrape_holds_every_request_its_worker_answered_before_it(live_server: str) -> None:
    """No wait for the flush timer: the worker that answers `/metrics` writes its counts first."""
    route = {"endpoint": "/iris/classify_iris", "http_response_code": "200"}
    before = scrape(live_server)
    for _ in range(5):
        post(f"{live_server}/iris/classify_iris", SEED_FLOWER)
    after = scrape(live_server)

    assert delta(before, after, "iris_predictions_total", **{"class": "setosa"}) == 5
    assert delta(before, after, "iris_prediction_top_probability_count") == 5
    answered = [
        after[key] - before.get(key, 0.0)
        for key in after
        if key[0] == "bentoml_service_request_total" and set(route.items()) <= key[1]
    ]
    assert answered == [5]
    timed = [
        after[key] - before.get(key, 0.0)
        for key in after
        if key[0] == "bentoml_service_request_duration_seconds_count"
        and set(route.items()) <= key[1]
    ]
    assert timed == [5]


@pytest.mark.integration
def test_a_scan_of_many_paths_adds_a_bounded_number_of_request_series(live_server: str) -> None:
    """Past the unrouted paths that keep their own label, a scan's paths are counted under one
    label, and a route of the service asked for after the scan still has its own."""
    from iris_classifier.serving.telemetry.request_metrics import MAX_UNROUTED_PATHS, UNROUTED

    def answered(scraped: dict, endpoint: str) -> float:
        return sum(
            value
            for (name, labels), value in scraped.items()
            if name == "bentoml_service_request_total" and ("endpoint", endpoint) in labels
        )

    before = scrape(live_server)
    scanned = [
        f"/scan-{time.monotonic_ns()}-{index}.php" for index in range(MAX_UNROUTED_PATHS + 5)
    ]
    for path in scanned:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{live_server}{path}", timeout=10)
        refused.value.close()  # the error holds the answer's connection open
        assert refused.value.code == 404
    with urllib.request.urlopen(f"{live_server}/v2/health/live", timeout=10) as response:
        assert response.status == 200
    after = scrape(live_server)

    own_labels = sum(1 for path in scanned if answered(after, path))
    assert own_labels <= MAX_UNROUTED_PATHS
    assert answered(after, UNROUTED) - answered(before, UNROUTED) >= 5
    assert answered(after, "/v2/health/live") - answered(before, "/v2/health/live") == 1
