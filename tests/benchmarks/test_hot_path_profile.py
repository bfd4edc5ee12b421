"""The profile's layers, from py-spy's collapsed stacks: each sample counted once, in the layer
of its innermost frame."""

from __future__ import annotations

import pytest

from benchmarks.hot_path_profile import OTHER, layer_of, render, self_time_by_layer

SITE = "/app/.venv/lib/python3.11/site-packages"
COLLAPSED = [
    f"<module> (/usr/lib/python3.11/asyncio/runners.py:190);inc ({SITE}/prometheus_client/values.py:36) 30\n",
    "run (/srv/iris_classifier/serving/http/edge.py:90);emit (/usr/lib/python3.11/logging/__init__.py:1113) 20\n",
    "run (/srv/iris_classifier/serving/http/edge.py:90);inc (/srv/iris_classifier/serving/telemetry/metric_buffer.py:55) 10\n",
    "dispatch (/srv/iris_classifier/serving/http/routes.py:120) 15\n",
    f"run ({SITE}/onnxruntime/capi/onnxruntime_inference_collection.py:266) 15\n",
    f"send ({SITE}/uvicorn/protocols/http/httptools_impl.py:500) 10\n",
    "_worker (threading.py:331) 0\n",
    "a line that is not a sample\n",
]


def test_each_sample_counts_once_in_the_layer_of_its_innermost_frame() -> None:
    layers, frames = self_time_by_layer(COLLAPSED)
    assert sum(layers.values()) == 100
    assert layers == {
        "metrics: prometheus_client": 30,
        "logging and the access line": 20,
        "metrics: the service's": 10,
        "the service's edge, routes and predictor": 15,
        "the model: ONNX Runtime": 15,
        "HTTP server: uvicorn, uvloop, httptools, socket writes": 10,
    }
    assert frames[f"inc ({SITE}/prometheus_client/values.py:36)"] == 30


@pytest.mark.parametrize(
    ("frame", "layer"),
    [
        (
            "flush (/srv/iris_classifier/serving/telemetry/line_writer.py:80)",
            "logging and the access line",
        ),
        (
            "log_one (/srv/iris_classifier/serving/model/prediction_log.py:9)",
            "logging and the access line",
        ),
        ("record_one (/srv/iris_classifier/serving/model/drift.py:80)", "metrics: the service's"),
        (f"__call__ ({SITE}/starlette/routing.py:700)", "BentoML, Starlette and OpenTelemetry"),
        (
            f"__call__ ({SITE}/opentelemetry/instrumentation/asgi/__init__.py:725)",
            "BentoML, Starlette and OpenTelemetry",
        ),
        (
            "write (/srv/iris_classifier/serving/http/joined_writes.py:39)",
            "HTTP server: uvicorn, uvloop, httptools, socket writes",
        ),
        (f"validate ({SITE}/pydantic/main.py:600)", "pydantic"),
        ("select (/usr/lib/python3.11/selectors.py:468)", OTHER),
    ],
)
def test_the_services_own_modules_go_to_the_layer_of_their_job(frame: str, layer: str) -> None:
    assert layer_of(frame) == layer


def test_the_report_gives_shares_and_where_the_service_was_loaded_from() -> None:
    layers, frames = self_time_by_layer(COLLAPSED)
    report = render(layers, frames, "title", requests_per_second=10_000)
    assert "| metrics: prometheus_client | 30.0% | 30.0 |" in report
    assert "(100 us each)" in report
    assert "loaded from /srv/." in report


def test_a_profile_without_samples_is_an_error() -> None:
    layers, frames = self_time_by_layer(["_worker (threading.py:331) 0\n"])
    with pytest.raises(ValueError, match="no sample"):
        render(layers, frames, "title", requests_per_second=1)
