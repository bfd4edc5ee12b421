"""The private parts of prometheus_client and BentoML that the metrics rely on, all here.

Everything else reaches them through these functions; tests/serving/test_metrics_internals.py
fails with one line naming the part when an installed version moves one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import ASGIApp


class StoredValue(Protocol):
    """What prometheus_client keeps one sample in: `MutexValue`, or `MmapedValue` (one slot of
    the process's memory-mapped file) in multiprocess mode."""

    def get(self) -> float: ...

    def set(self, value: float, timestamp: float | None = None) -> None: ...


def stored_value(child: Any) -> StoredValue:
    """The value behind a Counter's or a Gauge's child (`_value` since prometheus_client 0.4)."""
    return child._value


def histogram_values(child: Any) -> tuple[tuple[float, ...], list[StoredValue], StoredValue]:
    """A Histogram child's upper bounds (`_upper_bounds`, the last +Inf), one value per bucket
    counting the observations that fell in it and no lower one (`_buckets`), and the sum
    (`_sum`). `observe` adds 1 to the first bucket whose bound is >= the value, and the value
    to the sum; the exposition derives the cumulative buckets and `_count` from these."""
    return tuple(child._upper_bounds), child._buckets, child._sum


@dataclass(frozen=True)
class BentoRequestMetrics:
    """BentoML's request metrics layer in a service's stack, and the collectors it made."""

    parent: Any  # the layer whose `.app` it is
    layer: Any
    total: Any  # Counter: endpoint, service_name, service_version, http_response_code, runner_name
    duration: Any  # Histogram: the same labels
    in_progress: Any  # Gauge (livesum): endpoint, service_name, service_version, runner_name
    last_request: Any  # Gauge: service_name, service_version, runner_name
    skip_paths: tuple[str, ...]  # no last-request time for these prefixes


def bentoml_request_metrics(stack: ASGIApp) -> BentoRequestMetrics | None:
    """BentoML's request metrics layer (`RunnerTrafficMetricsMiddleware`, found through each
    layer's `.app`) with its collectors, made as BentoML makes them (`_setup()`, which also adds
    the zero series of each route); None if the stack has no such layer."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    parent: Any = stack
    while (layer := getattr(parent, "app", None)) is not None:
        if isinstance(layer, RunnerTrafficMetricsMiddleware):
            if not layer._is_setup:
                layer._setup()
            return BentoRequestMetrics(
                parent=parent,
                layer=layer,
                total=layer.metrics_request_total,
                duration=layer.metrics_request_duration,
                in_progress=layer.metrics_request_in_progress,
                last_request=layer.metrics_last_request_timestamp,
                skip_paths=tuple(layer.skip_paths),
            )
        parent = layer
    return None
