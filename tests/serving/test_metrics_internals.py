"""The private parts of prometheus_client and BentoML that metrics_internals.py reads are
still where it reads them: each test fails with one line naming the part that moved."""

from __future__ import annotations

import prometheus_client
import pytest

from iris_classifier.serving import metrics_internals


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


def test_a_counter_and_a_gauge_keep_their_value_in_value(registry) -> None:
    counter = prometheus_client.Counter("c", "c", registry=registry)
    gauge = prometheus_client.Gauge("g", "g", registry=registry)
    counter.inc(2)
    gauge.set(5)
    for child, expected in ((counter, 2), (gauge, 5)):
        assert hasattr(child, "_value"), f"prometheus_client {child} has no _value any more"
        value = metrics_internals.stored_value(child)
        assert value.get() == expected, "_value.get() no longer reads the child's value"
        value.set(expected + 1)
    assert (counter._value.get(), gauge._value.get()) == (3, 6), "_value.set() does not set"


def test_a_histogram_keeps_bounds_buckets_and_sum(registry) -> None:
    histogram = prometheus_client.Histogram("h", "h", buckets=(1, 2), registry=registry)
    for name in ("_upper_bounds", "_buckets", "_sum"):
        assert hasattr(histogram, name), f"prometheus_client Histogram has no {name} any more"
    histogram.observe(1.5)
    bounds, buckets, total = metrics_internals.histogram_values(histogram)
    assert bounds == (1, 2, float("inf")), "_upper_bounds is not the bounds and +Inf"
    assert [bucket.get() for bucket in buckets] == [0, 1, 0], "_buckets are not per bucket"
    assert total.get() == 1.5, "_sum is not the sum"


class Outer:
    """A layer in front of BentoML's, as the layers of a service's stack hold one another."""

    def __init__(self, app) -> None:
        self.app = app


def test_bentoml_request_metrics_layer_is_found_with_the_series_it_makes() -> None:
    """BentoML's layer in a stack of its own (a namespace of its own, so its series stay apart
    from the service's in this process), found, its collectors made, and replaced."""
    from bentoml._internal.server.http import instruments

    from iris_classifier.serving.metric_buffer import MetricBuffer
    from iris_classifier.serving.request_metrics import RequestMetrics, replace_request_metrics

    layer_class = getattr(instruments, "RunnerTrafficMetricsMiddleware", None)
    assert layer_class is not None, "bentoml moved RunnerTrafficMetricsMiddleware"

    async def inner(scope, receive, send) -> None:
        pass

    stack = Outer(layer_class(inner, namespace="iris_internals_test", skip_paths=["/livez"]))
    found = metrics_internals.bentoml_request_metrics(stack)
    assert found is not None, "RunnerTrafficMetricsMiddleware is not found through .app"
    assert found.skip_paths == ("/livez",), "its skip_paths are not what it was given"
    assert found.total._labelnames == (
        "endpoint",
        "service_name",
        "service_version",
        "http_response_code",
        "runner_name",
    ), "BentoML's request count has other labels"
    assert found.duration._labelnames == found.total._labelnames, "its duration: other labels"
    assert found.in_progress._labelnames == (
        "endpoint",
        "service_name",
        "service_version",
        "runner_name",
    ), "BentoML's requests in progress have other labels"
    assert found.last_request._labelnames == ("service_name", "service_version", "runner_name")
    assert found.total._name == "iris_internals_test_request"  # exposed with _total

    assert replace_request_metrics(stack, MetricBuffer())
    assert isinstance(stack.app, RequestMetrics), "not replaced in its parent's .app"
    assert stack.app.app is inner, "the replacement does not call what BentoML's layer called"
    assert metrics_internals.bentoml_request_metrics(stack) is None
