"""Drift as Prometheus metrics: every served value counted in its feature's drift bin
(iris_classifier/drift_bins.py), beside the share of the training rows in that bin. The
recording rules of the servicemonitor component compare the two per feature
(docs/monitoring.md).

Both carry the model version, so a new model, with bins of its own, starts from no counts
rather than from the previous model's. A model stored without bins exports neither.
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import prometheus_client

from iris_classifier.drift_bins import DriftBins
from iris_classifier.serving.telemetry.metric_buffer import shared_buffer

logger = logging.getLogger("iris_classifier.drift")


@dataclass(frozen=True)
class DriftCollectors:
    values: prometheus_client.Counter
    expected_share: prometheus_client.Gauge


@functools.cache
def collectors() -> DriftCollectors:
    """The process's collectors, registered once however often a service is instantiated."""
    labels = ["model_version", "feature", "bin"]
    return DriftCollectors(
        values=prometheus_client.Counter(
            "iris_drift_values",
            "Values served, by feature and the drift bin of the training data they fall in.",
            labels,
        ),
        expected_share=prometheus_client.Gauge(
            "iris_drift_expected_share",
            "Share of the training rows in this drift bin of this feature.",
            labels,
            # Every worker of a replica sets the same share: not to be added up.
            multiprocess_mode="max",
        ),
    )


class DriftCounts:
    """Counts served values per feature and drift bin; counts nothing without bins."""

    def __init__(self, bins: DriftBins | None, *, model_tag: str) -> None:
        metrics = collectors()
        buffer = shared_buffer()
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # One process, several services in turn (tests): only the last model's shares.
            metrics.expected_share.clear()
        self._bins = bins
        if bins is None:
            logger.warning(
                "model %s was stored without drift bins: drift is not measured and /metrics "
                "exports no iris_drift_* series; retrain it with train.py to measure drift",
                model_tag,
            )
            return
        # Children resolved once, every feature's bins in turn: a batch adds to all of them at
        # once, a flower to one bin of each feature, found from where the feature's bins start.
        labelled = []
        self._bin_counts: list[int] = []
        for name, feature in zip(bins.feature_names, bins.features, strict=True):
            for index, share in enumerate(feature.shares):
                labels = {"model_version": model_tag, "feature": name, "bin": str(index)}
                metrics.expected_share.labels(**labels).set(share)
                labelled.append(metrics.values.labels(**labels))
            self._bin_counts.append(len(feature.shares))
        self._all_children = buffer.counters(labelled)
        self._offsets = list(itertools.accumulate(self._bin_counts[:-1], initial=0))

    def record_one(self, values: Sequence[float]) -> None:
        if self._bins is None:
            return
        self._all_children.inc_at(map(operator.add, self._offsets, self._bins.row_bins(values)))

    def record_batch(self, features: np.ndarray) -> None:
        if self._bins is None:
            return
        counts: list[int] = []
        for indices, bins in zip(self._bins.column_bins(features), self._bin_counts, strict=True):
            counts += np.bincount(indices, minlength=bins).tolist()
        self._all_children.add(counts)
