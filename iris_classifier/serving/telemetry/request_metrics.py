"""BentoML's request metrics, the same series counted in memory (metric_buffer.py).

BentoML's own layer looks up four label children and writes prometheus_client's
memory-mapped file six times per request. `RequestMetrics` takes its place in the stack and
records the same series, names, labels and values as that layer (request count and duration by
route and status for an answer whose last body part left, the requests in progress, the time
of the last request off the probe paths) through bound children resolved once per route and
status. It flushes the buffer before it passes a scrape on, so `/metrics` holds every count of
the worker that answers it. Websockets, lifespan and `/metrics` go to BentoML's layer as before.

One thing differs: BentoML labels a request with its path whatever the path, so each path a
scanner tries would add a count, a histogram and an in-progress gauge to the replica's metrics
for the rest of its life. Here the service's routes keep their path as `endpoint`, and so do the
first MAX_UNROUTED_PATHS other paths a worker sees (a client's typo, a wrong model version);
every path past those is counted under the one label UNROUTED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import bentoml
from starlette.types import ASGIApp, Receive, Scope, Send

from iris_classifier.serving.http.responder import Responder
from iris_classifier.serving.seam import (
    METRICS_PATH,
    BentoRequestMetrics,
    bentoml_request_metrics,
)
from iris_classifier.serving.telemetry.metric_buffer import (
    BufferedCounter,
    BufferedHistogram,
    MetricBuffer,
)

# Paths that no route answers, each labelled as itself, per worker: enough to tell a few
# misconfigured clients apart, few enough that a scan adds a bounded number of series.
MAX_UNROUTED_PATHS = 32
UNROUTED = "unrouted"  # not a path: it cannot be mistaken for one


class RouteSeries:
    """One route's bound children: in progress, and count and duration by status."""

    def __init__(self, metrics: BentoRequestMetrics, buffer: MetricBuffer, endpoint: str) -> None:
        self._metrics = metrics
        self._buffer = buffer
        self._labels = route_labels(endpoint)
        self.in_progress = buffer.gauge(metrics.in_progress.labels(**self._labels))
        self._by_status: dict[int, tuple[BufferedCounter, BufferedHistogram]] = {}

    def answered(self, status: int) -> tuple[BufferedCounter, BufferedHistogram]:
        found = self._by_status.get(status)
        if found is None:
            labels = {**self._labels, "http_response_code": status}
            found = self._by_status[status] = (
                self._buffer.counter(self._metrics.total.labels(**labels)),
                self._buffer.histogram(self._metrics.duration.labels(**labels)),
            )
        return found


def route_labels(endpoint: str) -> dict[str, Any]:
    """The labels BentoML's layer gives a route's series (read per process: they are fixed
    once the worker has started)."""
    return {
        "endpoint": endpoint,
        "service_name": bentoml.server_context.bento_name,
        "service_version": bentoml.server_context.bento_version,
        "runner_name": bentoml.server_context.service_name,
    }


class RequestMetrics:
    """In BentoML's request metrics layer's place: the same series, bound and buffered."""

    def __init__(
        self,
        app: ASGIApp,
        bentoml_layer: ASGIApp,
        metrics: BentoRequestMetrics,
        buffer: MetricBuffer,
        routed: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        # Whether the service routes a path; without it, every path counts as unrouted.
        self.routed = routed
        self.bentoml_layer = bentoml_layer
        self.metrics = metrics
        self.buffer = buffer
        self.last_request = buffer.gauge(
            metrics.last_request.labels(
                service_name=bentoml.server_context.bento_name,
                service_version=bentoml.server_context.bento_version,
                runner_name=bentoml.server_context.service_name,
            )
        )
        self.skip_paths = metrics.skip_paths
        self._routes: dict[str, RouteSeries] = {}
        self._unrouted_left = MAX_UNROUTED_PATHS
        self._unrouted: RouteSeries | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            if scope["type"] == "http":
                self.buffer.flush()
            await self.bentoml_layer(scope, receive, send)
            return
        endpoint = scope["path"]
        series = self._routes.get(endpoint) or self._new_series(endpoint)
        if not endpoint.startswith(self.skip_paths):
            self.last_request.set(time.time())
        responder = Responder.around(send)
        started = time.perf_counter()
        series.in_progress.inc()
        try:
            await self.app(scope, receive, responder)
        finally:
            # Counted once the application is done rather than in a send wrapper of its own; an
            # answer counts as in BentoML's layer, once its last body part has come.
            if responder.finished:
                total, duration = series.answered(responder.status)
                total.inc()
                duration.observe(max(time.perf_counter() - started, 0))
            series.in_progress.dec()

    def _new_series(self, path: str) -> RouteSeries:
        """The series of a path seen for the first time, or of one past the unrouted paths
        that keep their own label."""
        if self.routed is None or not self.routed(path):
            if self._unrouted_left <= 0:
                if self._unrouted is None:
                    self._unrouted = RouteSeries(self.metrics, self.buffer, UNROUTED)
                return self._unrouted
            self._unrouted_left -= 1
        series = self._routes[path] = RouteSeries(self.metrics, self.buffer, path)
        return series


def replace_request_metrics(
    stack: ASGIApp, buffer: MetricBuffer, routed: Callable[[str], bool] | None = None
) -> bool:
    """Put a `RequestMetrics` where BentoML's request metrics layer is; False if there is none
    (metrics turned off, or a BentoML that moved it). `routed` says which paths the service
    routes: those keep their own `endpoint` label however many other paths come."""
    found = bentoml_request_metrics(stack)
    if found is None:
        return False
    found.parent.app = RequestMetrics(found.layer.app, found.layer, found, buffer, routed)
    return True
