"""Tests of the load test: its gates and checks (unit), and a short run of the whole thing.

The integration test is `make loadtest-local` in small: three replicas behind HAProxy, about
20 s of gated load, then SIGTERM, SIGKILL and restarts under load. It needs HAProxy; outside CI
it is skipped when HAProxy is missing, under CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest

from iris_classifier.config import CLASS_NAMES, FEATURE_NAMES, MAX_FEATURE_CM
from loadtest.answers import batch_problem, classification_problem
from loadtest.chart import write_chart
from loadtest.flowers import FlowerSampler
from loadtest.gates import balance_gate, crash_failures_gate, failure_ratio_gate, latency_gate
from loadtest.haproxy import Server, haproxy_binary, render_config
from loadtest.request_log import RequestRecord, read_csv, write_csv
from loadtest.scenarios import FaultTimeline, KillFigures, Phase, judge
from tests.conftest import REPO_ROOT, SESSION_HOME, require

GOOD_ANSWER = {
    "class": "setosa",
    "probability": 0.97,
    "probabilities": {"setosa": 0.97, "versicolor": 0.02, "virginica": 0.01},
    "model_version": "iris_classifier:abc",
}


def record(started: float, *, served_by: str = "replica-1", ok: bool = True) -> RequestRecord:
    return RequestRecord(started, 5.0, "/iris/classify_iris", served_by, ok, "" if ok else "reset")


# --- gates ---------------------------------------------------------------------------------------


def test_balance_gate_accepts_an_even_split() -> None:
    result = balance_gate({"replica-1": 334, "replica-2": 330, "replica-3": 336}, 3, 0.001)
    assert result.passed, result.detail


def test_balance_gate_rejects_a_replica_with_half_its_share() -> None:
    result = balance_gate({"replica-1": 400, "replica-2": 400, "replica-3": 200}, 3, 0.001)
    assert not result.passed
    assert "chi-square" in result.detail


def test_balance_gate_rejects_a_replica_that_never_served() -> None:
    result = balance_gate({"replica-1": 500, "replica-2": 500}, 3, 0.001)
    assert not result.passed
    assert "2 replicas served, expected 3" in result.detail


def test_failure_ratio_gate_rejects_one_percent() -> None:
    assert failure_ratio_gate(9, 1000, 0.01).passed
    assert not failure_ratio_gate(10, 1000, 0.01).passed
    assert not failure_ratio_gate(0, 0, 0.01).passed


def test_latency_gate_rejects_slow_and_unmeasured() -> None:
    assert latency_gate("p95", 80.0, 100.0).passed
    assert not latency_gate("p95", 120.0, 100.0).passed
    assert not latency_gate("p99", float("nan"), 100.0).passed


# --- answers and request bodies -------------------------------------------------------------


def test_a_well_formed_answer_passes() -> None:
    assert classification_problem(GOOD_ANSWER) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("class", "rose"), ("probability", 1.5), ("probabilities", {"setosa": 1.0})],
)
def test_a_wrong_answer_is_a_failure(field: str, value: object) -> None:
    assert classification_problem({**GOOD_ANSWER, field: value}) is not None


def test_a_batch_answer_must_have_one_prediction_per_flower() -> None:
    answer = {"predictions": [{"class": "setosa", "probability": 0.9}], "model_version": "v"}
    assert batch_problem(answer, 1) is None
    assert "1 predictions for 2 flowers" in (batch_problem(answer, 2) or "")


def test_sampled_flowers_are_valid_requests_of_every_species() -> None:
    sampler = FlowerSampler(seed=7)
    flowers = sampler.flowers(2000)
    for flower in flowers:
        assert tuple(flower) == FEATURE_NAMES
        assert all(0 < value <= MAX_FEATURE_CM for value in flower.values())
    # Petal length separates the species: short setosa petals and long virginica ones appear.
    assert min(flower["petal_length"] for flower in flowers) < 2
    assert max(flower["petal_length"] for flower in flowers) > 6
    assert len(CLASS_NAMES) == 3


# --- fault judgement ----------------------------------------------------------------------------


def fault_timeline(kill_at: float, open_connections: int) -> FaultTimeline:
    timeline = FaultTimeline()
    timeline.phases = [
        Phase("baseline", 0.0, 10.0, "steady"),
        Phase("SIGTERM replica-1", 10.0, 20.0, "terminated"),
        Phase("SIGKILL replica-2", kill_at, 40.0, "killed"),
    ]
    timeline.kill = KillFigures("replica-2", kill_at, kill_at + 0.01, 3, open_connections, 0.5)
    return timeline


def even_records(start: float, end: float, replicas: int = 3) -> list[RequestRecord]:
    return [
        record(start + step * 0.01, served_by=f"replica-{step % replicas + 1}")
        for step in range(int((end - start) * 100))
    ]


def judge_faults(records: list[RequestRecord], timeline: FaultTimeline) -> list:
    """The fault run judged with the gates `make loadtest-local` uses, for 3 replicas."""
    _, results = judge(
        records,
        timeline,
        replica_count=3,
        max_failure_ratio=0.01,
        balance_alpha=0.001,
        max_recovery_s=5,
    )
    return results


def test_judge_passes_clean_phases_and_a_bounded_crash() -> None:
    records = [*even_records(0, 20), *even_records(30, 40)]
    records += [record(30.0 - 0.004, served_by="", ok=False)]  # in flight at the kill
    results = judge_faults(records, fault_timeline(kill_at=30.0, open_connections=1))
    assert all(result.passed for result in results), [str(result) for result in results]


def test_judge_fails_a_sigterm_that_lost_a_request() -> None:
    records = [*even_records(0, 20), record(15.0, served_by="", ok=False)]
    results = judge_faults(records, fault_timeline(kill_at=30.0, open_connections=0))
    failed = [result.name for result in results if not result.passed]
    assert failed == ["SIGTERM replica-1: zero failures"]


def test_judge_fails_a_crash_with_more_failures_than_its_share_until_removal() -> None:
    # Removed 0.5 s after the kill: 50 requests started meanwhile, about 17 of them to it.
    late_failures = [record(31.0 + 0.15 * index, served_by="", ok=False) for index in range(40)]
    records = [*even_records(0, 20), *even_records(30, 40), *late_failures]
    results = judge_faults(records, fault_timeline(kill_at=30.0, open_connections=1))
    failed = {result.name for result in results if not result.passed}
    assert failed == {
        "SIGKILL replica-2: failures bounded by its in-flight requests and its share until removal",
        "SIGKILL replica-2: success back to 100%",
    }


def crash_gate_passes(failures: int, started_before_removal: int, in_flight: int = 2) -> bool:
    """The SIGKILL gate for 3 replicas at the load test's alpha."""
    return crash_failures_gate(
        "replica-2",
        failures=failures,
        requests=5000,
        in_flight=in_flight,
        started_before_removal=started_before_removal,
        replicas=3,
        alpha=0.001,
    ).passed


def test_crash_bound_grows_with_the_requests_sent_before_removal() -> None:
    assert crash_gate_passes(2, 0)
    assert not crash_gate_passes(3, 0), "nothing was sent to it: only its in-flight may fail"
    assert crash_gate_passes(2 + 370, 1000)  # a third of 1000 plus random spread
    assert not crash_gate_passes(2 + 500, 1000)  # half: more than a random third would send it


def test_crash_bound_rarely_fails_a_random_balancer_and_catches_a_sticky_one() -> None:
    """1000 simulated crashes behind a random per-connection balancer (3 replicas)."""
    rng = np.random.default_rng(7)
    started, in_flight = 600, 3
    passed = [
        crash_gate_passes(in_flight + int(rng.binomial(started, 1 / 3)), started, in_flight)
        for _ in range(1000)
    ]
    assert sum(passed) >= 990
    # A balancer that kept sending half the connections to the dead replica fails the gate.
    assert not crash_gate_passes(in_flight + started // 2, started, in_flight)


def test_balance_gate_accepts_random_splits_and_rejects_a_skewed_balancer() -> None:
    """Per-connection random choices over 3 replicas, 3000 connections, 1000 runs."""
    rng = np.random.default_rng(11)
    names = ("replica-1", "replica-2", "replica-3")

    def passes(shares: list[float]) -> list[bool]:
        return [
            balance_gate(dict(zip(names, map(int, counts), strict=True)), 3, 0.001).passed
            for counts in rng.multinomial(3000, shares, size=1000)
        ]

    assert sum(passes([1 / 3] * 3)) >= 990, "an even random split must almost always pass"
    assert sum(passes([0.4, 0.3, 0.3])) <= 10, "a replica 20 % over its share must fail"


def require_haproxy() -> None:
    try:
        haproxy_binary()
    except FileNotFoundError as missing:
        require(False, str(missing))


# --- files ----------------------------------------------------------------------------------------


def test_request_log_round_trips_and_charts(tmp_path: Path) -> None:
    records = [*even_records(0, 5), record(2.5, served_by="", ok=False)]
    write_csv(records, tmp_path / "requests.csv")
    assert read_csv(tmp_path / "requests.csv") == records
    write_chart(records, tmp_path / "replicas.png", markers=[(2.5, "SIGKILL replica-2")])
    assert (tmp_path / "replicas.png").read_bytes().startswith(b"\x89PNG")


def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    require_haproxy()
    config = tmp_path / "haproxy.cfg"
    servers = [Server("replica-1", 3001), Server("replica-2", 3002)]
    config.write_text(render_config(servers, listen_port=8080, stats_socket=tmp_path / "s.sock"))
    checked = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "option httpchk" in config.read_text()
    assert "uri /readyz" in config.read_text()


# --- integration ----------------------------------------------------------------------------------


def locust_binary() -> str:
    return str(Path(sys.executable).with_name("locust"))


@pytest.mark.integration
def test_locust_gates_fail_when_replicas_are_missing(live_server: str, tmp_path: Path) -> None:
    """One replica where three are expected: the balance gate must set a non-zero exit code."""
    run = subprocess.run(
        [
            locust_binary(),
            *("--config", "loadtest/locust.conf", "--host", live_server),
            *("--run-time", "3s", "--users", "2", "--html", str(tmp_path / "report.html")),
            *("--csv", str(tmp_path / "locust"), "--expected-replicas", "3"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "[FAIL] balance: 1 replicas served, expected 3" in output
    assert "[PASS] failure ratio" in output
    assert (tmp_path / "replicas.png").exists()
    assert (tmp_path / "requests.csv").exists()


def image_reference() -> str:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"iris-classifier:{version}"


def leftovers(run_id: str) -> list[str]:
    """Processes started by the run (they inherit its marker) and its containers still there."""
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        try:
            if process.environ().get("LOADTEST_TEST_RUN") == run_id:
                found.append(f"pid {process.pid} {process.info['name']}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    if shutil.which("docker"):
        containers = subprocess.run(
            ["docker", "ps", "--all", "--quiet", "--filter", f"label=iris-loadtest={run_id}"],
            capture_output=True,
            text=True,
            check=False,
        )
        found += [f"container {line}" for line in containers.stdout.split()]
    return found


@pytest.mark.integration
def test_loadtest_local_passes_every_gate_and_leaves_nothing_behind(
    trained_model: str, tmp_path: Path
) -> None:
    require_haproxy()
    from harness.processes import free_port

    run_id = uuid.uuid4().hex[:8]
    env = {**os.environ, "BENTOML_HOME": str(SESSION_HOME), "LOADTEST_TEST_RUN": run_id}
    run = subprocess.run(
        [
            sys.executable,
            *("-m", "loadtest.run", "--replicas", "3", "--lb-port", str(free_port())),
            *("--image", image_reference(), "--run-id", run_id, "--report-dir", str(tmp_path)),
            *("--run-time", "20s", "--observe", "4"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Load test PASSED" in output
    assert "[PASS] SIGTERM replica-1 until it is back: zero failures" in output
    assert "[PASS] SIGKILL replica-2: success back to 100%" in output
    served = Counter(
        row.served_by for row in read_csv(tmp_path / "steady" / "requests.csv") if row.ok
    )
    assert set(served) == {"replica-1", "replica-2", "replica-3"}
    for run_dir in ("steady", "faults"):
        assert (tmp_path / run_dir / "report.html").exists()
        assert (tmp_path / run_dir / "replicas.png").exists()
    assert leftovers(run_id) == []
