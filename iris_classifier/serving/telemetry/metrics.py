"""What the model sees, as Prometheus metrics beside BentoML's own on `/metrics`.

Every label value is bounded: class names come from the model, feature names from the
contract, and the model-info gauge carries the one model a process serves. The metrics are
made when the service starts, inside the worker, because BentoML points prometheus_client at
its multiprocess directory only then; `/metrics` sums the counts of every worker. Each series
is counted in memory and written in bulk by the process's metric buffer (metric_buffer.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import prometheus_client

from iris_classifier.serving.telemetry.metric_buffer import MetricBuffer, shared_buffer

# The top probability of three classes is at least 1/3; the buckets resolve the confident end.
TOP_PROBABILITY_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_ROWS_BUCKETS = (1, 10, 50, 100, 500, 1_000, 2_000, 5_000)


@dataclass(frozen=True)
class Collectors:
    predictions: prometheus_client.Counter
    top_probability: prometheus_client.Histogram
    out_of_range_features: prometheus_client.Counter
    out_of_range_flowers: prometheus_client.Counter
    batch_rows: prometheus_client.Histogram
    model_info: prometheus_client.Gauge
    connections_dropped: prometheus_client.Counter
    open_connections: prometheus_client.Gauge


@functools.cache
def collectors() -> Collectors:
    """The process's collectors, registered once however often a service is instantiated."""
    return Collectors(
        predictions=prometheus_client.Counter(
            "iris_predictions", "Flowers classified, by predicted class.", ["class"]
        ),
        top_probability=prometheus_client.Histogram(
            "iris_prediction_top_probability",
            "Probability of the predicted class, one observation per flower.",
            buckets=TOP_PROBABILITY_BUCKETS,
        ),
        out_of_range_features=prometheus_client.Counter(
            "iris_out_of_range_features",
            "Flowers with this feature outside the range seen in training.",
            ["feature"],
        ),
        out_of_range_flowers=prometheus_client.Counter(
            "iris_out_of_range_flowers",
            "Flowers with at least one feature outside the range seen in training.",
        ),
        batch_rows=prometheus_client.Histogram(
            "iris_batch_rows", "Flowers per batch request.", buckets=BATCH_ROWS_BUCKETS
        ),
        model_info=prometheus_client.Gauge(
            "iris_model_info",
            "1 for the model this replica serves.",
            ["model_version", "estimator"],
            multiprocess_mode="max",
        ),
        connections_dropped=prometheus_client.Counter(
            "iris_connections_dropped",
            "Connections closed before a request: head_timeout (no whole request head within "
            "IRIS_HEAD_TIMEOUT_SECONDS) or over_limit (refused past IRIS_MAX_CONNECTIONS).",
            ["reason"],
        ),
        open_connections=prometheus_client.Gauge(
            "iris_open_connections",
            "Client connections open, the ones counted against IRIS_MAX_CONNECTIONS.",
            multiprocess_mode="livesum",
        ),
    )


class ModelMetrics:
    """Records each answer; bound to one model's classes and features."""

    def __init__(
        self,
        class_names: Sequence[str],
        feature_names: Sequence[str],
        *,
        model_tag: str,
        estimator: str,
        buffer: MetricBuffer | None = None,
    ) -> None:
        metrics = collectors()
        buffer = buffer or shared_buffer()
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # One process, several services in turn (tests): only the last one's model is
            # served. prometheus_client cannot clear in multiprocess mode, where each worker
            # loads its model once anyway.
            metrics.model_info.clear()
        metrics.model_info.labels(model_version=model_tag, estimator=estimator).set(1)
        # Children resolved once: a label lookup per request would cost more than the count.
        # Each group is added to together for a batch, and looked up one by one for a flower.
        self._classes = buffer.counters([metrics.predictions.labels(name) for name in class_names])
        self._features = buffer.counters(
            [metrics.out_of_range_features.labels(name) for name in feature_names]
        )
        self._by_class = self._classes.counters
        self._by_feature = dict(zip(feature_names, self._features.counters, strict=True))
        self._out_of_range_flowers = buffer.counter(metrics.out_of_range_flowers)
        self._batch_rows = buffer.histogram(metrics.batch_rows)
        self._top_probability = buffer.histogram(metrics.top_probability)
        self._upper_bounds = np.asarray(self._top_probability.upper_bounds)

    def record_one(
        self, best: int, probability: float, outside: Sequence[str], *, rows_observed: bool = False
    ) -> None:
        """One flower; `rows_observed` when it came as a request of many (a one-row tensor)."""
        if rows_observed:
            self._batch_rows.observe(1)
        self._by_class[best].inc()
        self._top_probability.observe(probability)
        if outside:
            self._out_of_range_flowers.inc()
            for name in outside:
                self._by_feature[name].inc()

    def record_batch(
        self, best: np.ndarray, top_probabilities: np.ndarray, outside_mask: np.ndarray
    ) -> None:
        self._batch_rows.observe(len(best))
        self._classes.add(np.bincount(best, minlength=len(self._by_class)).tolist())
        # Most batches hold no flower outside the training range: one look says so.
        if outside_mask.any():
            self._features.add(outside_mask.sum(axis=0).tolist())
            self._out_of_range_flowers.inc(int(outside_mask.any(axis=1).sum()))
        self._observe_all(top_probabilities)

    def _observe_all(self, values: np.ndarray) -> None:
        """`observe` for many values at once, so that a batch pays one call and not one per
        flower (benchmarks/README.md#history-what-made-it-fast). Bucketed as `observe` buckets;
        the sum is NumPy's."""
        # observe() counts a value in the first bucket whose upper bound is >= the value.
        positions = np.searchsorted(self._upper_bounds, values, side="left")
        counts = np.bincount(positions, minlength=len(self._upper_bounds)).tolist()
        self._top_probability.observe_counted(counts, float(values.sum()))
