"""The metric buffer: what a flush writes is what prometheus_client's own calls would have
written, in multiprocess mode as `bentoml serve` runs it."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector

from iris_classifier.serving.telemetry.metric_buffer import MetricBuffer

BUCKETS = (0.005, 0.01, 0.1, 0.5, 1.0, 2.5, 10.0)


@pytest.fixture
def multiprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Metrics made in the test write memory-mapped files in a directory of their own."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    return tmp_path


def exposed(directory: Path) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value} as a scrape under `bentoml serve` reads the files."""
    registry = prometheus_client.CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def pair(name: str, kind: type, **options) -> tuple:
    """The same metric twice, under two names: one written directly, one through a buffer."""
    registry = prometheus_client.CollectorRegistry()
    direct = kind(f"direct_{name}", "written directly", registry=registry, **options)
    buffered = kind(f"buffered_{name}", "written through a buffer", registry=registry, **options)
    return direct, buffered


def same_series(directory: Path, name: str) -> tuple[dict, dict]:
    """The direct and the buffered metric's samples, keyed without their name prefix."""
    found = exposed(directory)
    direct = {
        (n.removeprefix("direct_"), labels): v
        for (n, labels), v in found.items()
        if n.startswith(f"direct_{name}")
    }
    buffered = {
        (n.removeprefix("buffered_"), labels): v
        for (n, labels), v in found.items()
        if n.startswith(f"buffered_{name}")
    }
    return direct, buffered


def test_counter_and_gauge_totals_are_folded_in_exactly(multiprocess: Path) -> None:
    direct_counter, buffered_counter = pair(
        "requests", prometheus_client.Counter, labelnames=["route"]
    )
    direct_gauge, buffered_gauge = pair(
        "in_progress", prometheus_client.Gauge, labelnames=["route"], multiprocess_mode="livesum"
    )
    buffer = MetricBuffer()
    counts = {route: buffer.counter(buffered_counter.labels(route)) for route in ("a", "b")}
    gauge = buffer.gauge(buffered_gauge.labels("a"))
    amounts = random.Random(3)
    for _ in range(2_000):
        route, amount = amounts.choice("ab"), amounts.choice([1, 1, 2, 0.1, 0.7])
        direct_counter.labels(route).inc(amount)
        counts[route].inc(amount)
        direct_gauge.labels("a").inc(amount)
        gauge.inc(amount)
        direct_gauge.labels("a").dec(1)
        gauge.dec(1)

    before_flush = same_series(multiprocess, "requests")[1]
    assert all(value == 0 for value in before_flush.values()), "counted in memory until a flush"
    buffer.flush()
    for name in ("requests", "in_progress"):
        direct, buffered = same_series(multiprocess, name)
        assert direct, name
        assert buffered == direct, name


def test_histogram_buckets_and_sum_are_what_observe_gives(multiprocess: Path) -> None:
    direct, buffered = pair("seconds", prometheus_client.Histogram, buckets=BUCKETS)
    buffer = MetricBuffer()
    histogram = buffer.histogram(buffered)
    draws = random.Random(11)
    # Every bound itself, just above it, below the first, above the last, a negative.
    observations = [
        *BUCKETS,
        *(math.nextafter(b, math.inf) for b in BUCKETS),
        -1.0,
        0.0,
        99.0,
        *(draws.expovariate(3) for _ in range(5_000)),
    ]
    for index, amount in enumerate(observations):
        direct.observe(amount)
        histogram.observe(amount)
        if index % 997 == 0:
            buffer.flush()  # folds of what came since the last, not only one at the end
    buffer.flush()
    expected, got = same_series(multiprocess, "seconds")
    assert len(expected) == len(BUCKETS) + 3  # every bucket and +Inf, _count, _sum
    assert got == expected  # the sum too: the same float, not one near it


def test_a_histogram_counts_infinity_in_the_last_bucket_and_nan_in_none(multiprocess: Path) -> None:
    direct, buffered = pair("nan", prometheus_client.Histogram, buckets=BUCKETS)
    buffer = MetricBuffer()
    for amount in (0.2, math.inf, math.nan, 3.0):
        direct.observe(amount)
        buffer.histogram(buffered).observe(amount)
    buffer.flush()
    expected, got = same_series(multiprocess, "nan")
    assert {key: value for key, value in got.items() if not math.isnan(value)} == {
        key: value for key, value in expected.items() if not math.isnan(value)
    }
    assert [key for key, value in got.items() if math.isnan(value)] == [("nan_sum", frozenset())]


def test_stop_writes_what_the_timer_had_not(multiprocess: Path) -> None:
    _, buffered = pair("stopping", prometheus_client.Counter)
    buffer = MetricBuffer(seconds=3600)
    buffer.start()
    buffer.counter(buffered).inc(7)
    buffer.stop()
    assert exposed(multiprocess)[("buffered_stopping_total", frozenset())] == 7


def test_a_started_buffer_writes_on_its_own(multiprocess: Path) -> None:
    _, buffered = pair("timer", prometheus_client.Counter)
    buffer = MetricBuffer(seconds=0.05)
    buffer.start()
    try:
        buffer.counter(buffered).inc(3)
        deadline = time.monotonic() + 30  # a generous bound on a busy machine, not a timing
        while exposed(multiprocess).get(("buffered_timer_total", frozenset())) != 3:
            assert time.monotonic() < deadline, "the timer never wrote the count"
            time.sleep(0.02)
    finally:
        buffer.stop()


def test_a_series_bound_twice_is_one_child_counting_from_its_value(multiprocess: Path) -> None:
    _, buffered = pair("bound", prometheus_client.Counter, labelnames=["route"])
    buffered.labels("a").inc(5)  # before anything bound it
    buffer = MetricBuffer()
    first = buffer.counter(buffered.labels("a"))
    assert buffer.counter(buffered.labels("a")) is first
    first.inc()
    buffer.flush()
    assert exposed(multiprocess)[("buffered_bound_total", frozenset({("route", "a")}))] == 6
    with pytest.raises(TypeError):
        buffer.gauge(buffered.labels("a"))


def test_a_counter_refuses_to_go_down(multiprocess: Path) -> None:
    _, buffered = pair("down", prometheus_client.Counter)
    with pytest.raises(ValueError, match="non-negative"):
        MetricBuffer().counter(buffered).inc(-1)


def test_counters_added_together_count_as_each_inc_would(multiprocess: Path) -> None:
    direct, buffered = pair("bins", prometheus_client.Counter, labelnames=["bin"])
    buffer = MetricBuffer()
    bins = [str(index) for index in range(5)]
    together = buffer.counters([buffered.labels(name) for name in bins])
    # The group's counters are the series' one bound child each, as `counter` gives them.
    assert together.counters[2] is buffer.counter(buffered.labels("2"))
    draws = random.Random(5)
    for _ in range(200):
        counts = [draws.choice([0, 0, 1, 3, 250]) for _ in bins]
        together.add(counts)
        for name, count in zip(bins, counts, strict=True):
            direct.labels(name).inc(count)
    buffer.flush()
    assert same_series(multiprocess, "bins")[1] == same_series(multiprocess, "bins")[0]


def test_counters_added_together_refuse_a_wrong_length_or_a_negative_count(
    multiprocess: Path,
) -> None:
    _, buffered = pair("refused", prometheus_client.Counter, labelnames=["bin"])
    buffer = MetricBuffer()
    together = buffer.counters([buffered.labels("a"), buffered.labels("b")])
    with pytest.raises(ValueError, match="3 counts for 2 counters"):
        together.add([1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        together.add([4, -1])
    buffer.flush()
    # Nothing of a refused call was added, not even the counts before the bad one.
    assert set(same_series(multiprocess, "refused")[1].values()) == {0}


def test_counters_incremented_by_position_count_each_position(multiprocess: Path) -> None:
    direct, buffered = pair("positions", prometheus_client.Counter, labelnames=["bin"])
    buffer = MetricBuffer()
    together = buffer.counters([buffered.labels(str(index)) for index in range(4)])
    draws = random.Random(8)
    for _ in range(300):
        positions = [draws.randrange(4) for _ in range(draws.randrange(4))]
        together.inc_at(iter(positions))
        for position in positions:
            direct.labels(str(position)).inc()
    buffer.flush()
    assert same_series(multiprocess, "positions")[1] == same_series(multiprocess, "positions")[0]
