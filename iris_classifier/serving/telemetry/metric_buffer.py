"""Prometheus series counted in process memory, written to prometheus_client in bulk.

Under `bentoml serve` prometheus_client runs in multiprocess mode, where every `inc` and
`observe` takes a lock and writes the process's memory-mapped file, several times per request
for BentoML's request metrics and the model metrics. A child bound to a `MetricBuffer`
keeps the series' running total in memory instead, added to exactly as prometheus_client adds
(so a histogram's sum is the same float), and `flush()` writes every total that changed.

A started buffer flushes every `seconds`, and `stop()` flushes a last time; the service also
flushes before it answers a scrape (request_metrics.py) and when a worker stops. So a scrape
misses no count older than `seconds`, and none at all of the worker that answers it.

A bound child writes totals, not increments: once bound, a series is written only through its
one buffer. `shared_buffer()` is that buffer for every series of the process:

    drifted = shared_buffer().counter(DRIFTED.labels(feature="petal_width"))  # once
    drifted.inc()  # per request: an addition in memory
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from iris_classifier.serving.seam import (
    StoredValue,
    histogram_values,
    stored_value,
)

logger = logging.getLogger("iris_classifier.metrics")

# How stale a scrape may be: the longest a count waits in memory before its flush.
FLUSH_SECONDS = 1.0


class BufferedTotal:
    """One stored value's running total, kept in memory and written when it changed."""

    __slots__ = ("_lock", "_total", "_value", "_written")

    def __init__(self, lock: threading.Lock, value: StoredValue) -> None:
        self._lock = lock
        self._value = value
        self._total = self._written = value.get()

    def _write(self) -> None:
        with self._lock:
            total = self._total
        if total != self._written:
            self._value.set(total)
            self._written = total


class BufferedCounter(BufferedTotal):
    """A Counter child's `inc`, counted in memory."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self._total += amount


class BufferedCounters:
    """Several bound counters added to at once, under one take of the lock: a batch's counts
    per class or per drift bin, in the order the counters were given."""

    __slots__ = ("_lock", "counters")

    def __init__(self, lock: threading.Lock, counters: Sequence[BufferedCounter]) -> None:
        self._lock = lock
        self.counters = tuple(counters)

    def add(self, counts: Sequence[int]) -> None:
        """`inc(count)` on each counter in turn; every count is checked before any is added."""
        if len(counts) != len(self.counters):
            raise ValueError(f"{len(counts)} counts for {len(self.counters)} counters")
        if min(counts, default=0) < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            for counter, count in zip(self.counters, counts, strict=True):
                if count:
                    counter._total += count

    def inc_at(self, positions: Iterable[int]) -> None:
        """`inc()` on the counter at each position (a position given twice counts twice)."""
        counters = self.counters
        with self._lock:
            for position in positions:
                counters[position]._total += 1


class BufferedGauge(BufferedTotal):
    """A Gauge child's `inc`, `dec` and `set`, kept in memory."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        with self._lock:
            self._total += amount

    def dec(self, amount: float = 1) -> None:
        with self._lock:
            self._total -= amount

    def set(self, value: float) -> None:
        with self._lock:
            self._total = float(value)


class BufferedHistogram:
    """A Histogram child's `observe`, counted in memory."""

    __slots__ = ("_buckets", "_counts", "_lock", "_sum", "_sum_value", "_written", "upper_bounds")

    def __init__(
        self,
        lock: threading.Lock,
        upper_bounds: tuple[float, ...],
        buckets: list[StoredValue],
        sum_value: StoredValue,
    ) -> None:
        self._lock = lock
        self.upper_bounds = upper_bounds  # ascending, the last +Inf
        self._buckets = buckets
        self._sum_value = sum_value
        self._counts = [bucket.get() for bucket in buckets]
        self._sum = sum_value.get()
        self._written = (list(self._counts), self._sum)

    def observe(self, amount: float) -> None:
        """As `Histogram.observe`: the first bucket whose bound is >= `amount`, and the sum."""
        index = bisect_left(self.upper_bounds, amount)
        with self._lock:
            self._sum += amount
            if amount <= self.upper_bounds[index]:  # NaN: in no bucket, as observe does
                self._counts[index] += 1

    def observe_counted(self, counts: Sequence[int], total: float) -> None:
        """Many observations at once: how many fell in each bucket (as `observe` places them,
        one count per upper bound) and their sum."""
        if len(counts) != len(self._counts):
            raise ValueError(f"{len(counts)} bucket counts for {len(self._counts)} buckets")
        with self._lock:
            self._sum += total
            for index, count in enumerate(counts):
                if count:
                    self._counts[index] += count

    def _write(self) -> None:
        with self._lock:
            counts, total = list(self._counts), self._sum
        written_counts, written_sum = self._written
        for bucket, count, written in zip(self._buckets, counts, written_counts, strict=True):
            if count != written:
                bucket.set(count)
        if total != written_sum:
            self._sum_value.set(total)
        self._written = (counts, total)


Buffered = BufferedCounter | BufferedGauge | BufferedHistogram


class MetricBuffer:
    """Bound children of prometheus_client series that count in memory; see the module."""

    def __init__(self, seconds: float = FLUSH_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()  # every total of every bound child
        # One flush at a time: an older total written after a newer one would read as a reset.
        self._flushing = threading.Lock()
        self._bound: dict[int, Buffered] = {}  # by id of the prometheus_client value, kept alive
        self._stopped: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._at_exit = False

    def counter(self, child: Any) -> BufferedCounter:
        """`child`: a Counter without labels, or the child `.labels(...)` returned."""
        value = stored_value(child)
        return self._bind(value, lambda: BufferedCounter(self._lock, value), BufferedCounter)

    def counters(self, children: Sequence[Any]) -> BufferedCounters:
        """`counter` for each of `children`, added to together."""
        return BufferedCounters(self._lock, [self.counter(child) for child in children])

    def gauge(self, child: Any) -> BufferedGauge:
        value = stored_value(child)
        return self._bind(value, lambda: BufferedGauge(self._lock, value), BufferedGauge)

    def histogram(self, child: Any) -> BufferedHistogram:
        bounds, buckets, sum_value = histogram_values(child)
        return self._bind(
            sum_value,
            lambda: BufferedHistogram(self._lock, bounds, buckets, sum_value),
            BufferedHistogram,
        )

    def _bind(self, value: StoredValue, make: Any, kind: type) -> Any:
        with self._lock:
            bound = self._bound.get(id(value))
            if bound is None:
                # Made under the lock: the totals start from what the series holds now.
                bound = self._bound[id(value)] = make()
        if not isinstance(bound, kind):
            raise TypeError(f"this series is bound as a {type(bound).__name__}")
        return bound

    def flush(self) -> None:
        """Write every total that changed since the last flush to prometheus_client."""
        with self._flushing:
            with self._lock:
                bound = list(self._bound.values())
            for child in bound:
                child._write()

    def start(self) -> None:
        """Flush every `seconds` from a thread of its own, and when the process exits."""
        if self._thread is not None:
            return
        if not self._at_exit:
            atexit.register(self.flush)
            self._at_exit = True
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._flush_until, args=(self._stopped,), name="metric-buffer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and flush what is left: the last counts of a stopping worker."""
        if self._thread is not None and self._stopped is not None:
            self._stopped.set()
            self._thread.join()
            self._thread = self._stopped = None
        self.flush()

    def _flush_until(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.seconds):
            try:
                self.flush()
            except Exception:  # the next tick tries again; the counts stay in memory
                logger.exception("could not write the metrics")


@functools.cache
def shared_buffer() -> MetricBuffer:
    """The process's buffer, which every series of the service is bound to."""
    return MetricBuffer()
