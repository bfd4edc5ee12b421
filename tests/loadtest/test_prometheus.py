"""Prometheus beside the load test: its config, the per-replica comparison, and a real one
scraping a live replica."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from loadtest.prometheus import (
    REQUEST_TOLERANCE,
    RunView,
    Sample,
    agreement_gate,
    compare_counts,
    render_config,
    running_prometheus,
)
from loadtest.request_log import RequestRecord
from tests.conftest import SEED_FLOWER, require


def record(replica: str, finished: float, ok: bool = True) -> RequestRecord:
    return RequestRecord(finished - 0.01, 10.0, "/iris/classify_iris", replica, ok, "")


def test_config_scrapes_each_replica_every_second_under_its_name() -> None:
    config = yaml.safe_load(render_config({"replica-2": 4002, "replica-1": 4001}))
    assert config["global"]["scrape_interval"] == "1s"
    [job] = config["scrape_configs"]
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:4001"], "labels": {"replica": "replica-1"}},
        {"targets": ["127.0.0.1:4002"], "labels": {"replica": "replica-2"}},
    ]


def test_counts_compare_only_answers_between_a_replicas_own_scrapes() -> None:
    totals = {
        "replica-1": [Sample(100.0, 10), Sample(101.0, 12), Sample(110.0, 30)],
        "replica-2": [Sample(100.5, 0), Sample(110.5, 5)],
    }
    records = [
        record("replica-1", 99.9),  # before replica-1's first scrape
        *(record("replica-1", 100.0 + i / 2) for i in range(1, 21)),  # 100.5 .. 110.0
        record("replica-1", 110.2),  # after its last scrape
        *(record("replica-2", 101.0 + i) for i in range(5)),
        record("", 105.0, ok=False),  # no replica answered
    ]
    counts = {count.replica: count for count in compare_counts(totals, records)}
    assert (counts["replica-1"].prometheus, counts["replica-1"].locust) == (20, 20)
    assert (counts["replica-2"].prometheus, counts["replica-2"].locust) == (5, 5)
    assert counts["replica-1"].window_s == 10.0


def view(*pairs: tuple[str, float, int]) -> RunView:
    totals = {name: [Sample(0.0, 0), Sample(60.0, prom)] for name, prom, _ in pairs}
    records = [record(name, 30.0) for name, _, answered in pairs for _ in range(answered)]
    return RunView(compare_counts(totals, records), 0.0, 0.01, 0.0)


def test_agreement_gate_passes_within_the_tolerance() -> None:
    assert agreement_gate(view(("a", 1000, 1010), ("b", 40, 40 + REQUEST_TOLERANCE)), 2).passed


def test_agreement_gate_fails_a_replica_counted_twice() -> None:
    # Two replicas sharing one metrics directory report each other's requests.
    result = agreement_gate(view(("a", 2000, 1000), ("b", 1000, 1000)), 2)
    assert not result.passed
    assert "disagree: a" in result.detail


def test_agreement_gate_fails_when_a_replica_was_never_scraped() -> None:
    assert not agreement_gate(view(("a", 1000, 1000), ("b", 1000, 1000)), 3).passed


def classify(live_server: str) -> None:
    request = urllib.request.Request(
        f"{live_server}/iris/classify_iris",
        json.dumps(SEED_FLOWER).encode(),
        {"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def scraped(prometheus, since: float, ready, timeout: float = 20.0) -> list:
    """The live replica's samples once `ready(samples)` holds (Prometheus scrapes every
    second), or the last ones seen when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        samples = prometheus.request_totals(since, time.time()).get("live", [])
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.mark.integration
def test_prometheus_counts_a_live_replicas_requests_and_stops(
    live_server: str, tmp_path: Path
) -> None:
    require(shutil.which("prometheus") is not None, "prometheus is not installed")
    port = int(live_server.rsplit(":", 1)[1])
    classify(live_server)  # the series exists before the first scrape, however run
    with running_prometheus(
        {"live": port}, work_dir=tmp_path, log_path=tmp_path / "prometheus.log"
    ) as prometheus:
        since = time.time()
        before = scraped(prometheus, since, lambda samples: bool(samples))
        assert before, "Prometheus never scraped the replica"
        for _ in range(25):
            classify(live_server)
        sent = time.time()
        samples = scraped(
            prometheus, since, lambda samples: bool(samples) and samples[-1].timestamp > sent
        )
        pid = prometheus_pid(tmp_path)
    assert samples, "Prometheus lost the replica"
    assert samples[-1].timestamp > sent, "no scrape after the requests"
    # A scrape before the requests and one after them.
    assert samples[-1].value - before[-1].value == 25
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def prometheus_pid(work_dir: Path) -> int:
    config = str(work_dir / "prometheus.yml")
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(config in part for part in process.info["cmdline"] or ()):
            return process.info["pid"]
    raise AssertionError("no prometheus process runs with this work directory")
