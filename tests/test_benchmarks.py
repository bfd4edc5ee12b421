"""The benchmark harness: wrk output parsing, target verdicts, and a smoke run of all servers.

The smoke run only checks that every server starts, answers and is measured; it asserts no
timing, since speed is what `make bench` reports, not what a test can judge on a shared machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.loadgen import WrkResult, parse_wrk_output
from benchmarks.report import targets
from benchmarks.v2 import Measurement, mlserver, paired_ratios, render_markdown, this_service
from harness.processes import REPO_ROOT

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:3000
  1 threads and 16 connections
WRK_RESULT {"requests": 2000, "duration_us": 1000000, "bytes": 1, "p50_us": 1500, \
"p90_us": 2500, "p99_us": 4000, "max_us": 9000, "connect_errors": 0, "read_errors": 1, \
"write_errors": 0, "timeouts": 2, "non_2xx": 3}
"""


def test_wrk_result_line_is_parsed() -> None:
    result = parse_wrk_output(WRK_OUTPUT)

    assert result.requests_per_second == pytest.approx(2000)
    assert result.p50_ms == pytest.approx(1.5)
    assert result.p99_ms == pytest.approx(4.0)


def test_wrk_errors_timeouts_and_non_2xx_count_as_failed() -> None:
    assert parse_wrk_output(WRK_OUTPUT).failed == 6


def test_wrk_output_without_result_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRK_RESULT"):
        parse_wrk_output("Running 1s test\nunable to connect to 127.0.0.1:3000\n")


def medians_for(rps: float, p99: float, flowers: float, rss: float, cold: float) -> dict:
    return {
        "single_rps": rps,
        "single_p99_ms": p99,
        "flowers_per_second": flowers,
        "rss_mb": rss,
        "cold_start_s": cold,
    }


def test_targets_are_met_by_a_service_as_fast_as_the_baseline() -> None:
    summary = {
        "bentoml": medians_for(1000, 10, 250_000, 250, 3),
        "fastapi": medians_for(1000, 10, 100_000, 200, 3),
    }

    assert all(target.met for target in targets(summary, "bentoml", "fastapi"))


def test_targets_flag_a_slower_service() -> None:
    summary = {
        "bentoml": medians_for(900, 12, 150_000, 400, 6),
        "fastapi": medians_for(1000, 10, 100_000, 200, 3),
    }

    assert not any(target.met for target in targets(summary, "bentoml", "fastapi"))


def require_tools(*names: str) -> None:
    """Skip when a tool is missing, except in CI, where its absence is a failure."""
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def trained_home(tmp_path_factory: pytest.TempPathFactory, *train_args: str) -> Path:
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run(
        [sys.executable, "train.py", *train_args],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return home


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private BentoML home holding a freshly trained model."""
    return trained_home(tmp_path_factory)


@pytest.fixture(scope="module")
def random_forest_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private BentoML home holding a freshly trained random forest."""
    return trained_home(tmp_path_factory, "--model", "random-forest")


@pytest.mark.integration
def test_smoke_run_measures_every_server(
    model_store: Path, random_forest_store: Path, tmp_path: Path
) -> None:
    require_tools("wrk", "taskset")
    env = {
        **os.environ,
        "BENTOML_HOME": str(model_store),
        "BENCH_RANDOM_FOREST_HOME": str(random_forest_store),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    raw = json.loads((tmp_path / "latest.json").read_text())
    rounds = {row["server"]: row for row in raw["rounds"]}
    assert set(rounds) == {"bentoml", "bentoml-random-forest", "fastapi", "fit-per-request"}
    for row in rounds.values():
        assert row["single_failed"] == 0
        assert row["batch_failed"] == 0
        assert row["single_rps"] > 0
        assert row["flowers_per_second"] > 0
        assert row["rss_mb"] > 0
    report = (tmp_path / "latest.md").read_text()
    assert "| bentoml |" in report
    assert "| bentoml-random-forest |" in report
    assert "`fit-per-request`: baseline (b)" in report
    assert "Targets for `bentoml`" in report
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("trained_model")  # importing the service checks the stored model
def test_service_module_imports_without_scikit_learn() -> None:
    """`bentoml serve` imports service.py in its arbiter process too: scikit-learn, SciPy and
    pandas there would add about 125 MB to a replica that never uses them."""
    probe = "import sys, service; print(sorted({'sklearn', 'scipy', 'pandas'} & set(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


def measurement(server: str, workload: str, round_index: int, rps: float) -> Measurement:
    rows = 1 if workload == "single" else 1000
    result = WrkResult(requests=int(rps * 10), seconds=10.0, p50_ms=1.0, p99_ms=2.0, failed=0)
    return Measurement(server, workload, round_index, rows, result)


def test_v2_ratios_pair_rounds_and_judge_each_target() -> None:
    measurements = [
        measurement("bentoml", "single", 1, 300),
        measurement("mlserver", "single", 1, 100),
        measurement("bentoml", "single", 2, 120),
        measurement("mlserver", "single", 2, 100),  # a slow round for this service: 1.2x
        measurement("bentoml", "batch-json", 1, 140),
        measurement("mlserver", "batch-json", 1, 100),
        measurement("bentoml", "batch-binary", 1, 400),
    ]
    ratios = paired_ratios(measurements)
    assert ratios["single flower, V2 JSON"] == pytest.approx([3.0, 1.2])
    assert ratios["1,000-row batch, V2 JSON"] == pytest.approx([1.4])
    assert ratios["1,000-row batch, binary vs MLServer's JSON"] == pytest.approx([4.0])
    report = render_markdown(measurements, [this_service(), mlserver()], "make bench")
    assert "| single flower, V2 JSON | 2.10x | 3.00, 1.20 | 1.5x | met |" in report
    assert "| 1,000-row batch, V2 JSON | 1.40x | 1.40 | 1.5x | missed |" in report


@pytest.mark.integration
def test_v2_smoke_run_measures_every_workload_of_this_service(
    model_store: Path, tmp_path: Path
) -> None:
    require_tools("wrk", "taskset")
    env = {**os.environ, "BENTOML_HOME": str(model_store), "BENTOML_DO_NOT_TRACK": "true"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.v2",
            "--smoke",
            "--servers",
            "bentoml",
            "--output",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = json.loads((tmp_path / "v2.json").read_text())
    assert {row["workload"] for row in rows} == {"single", "batch-json", "batch-binary"}
    assert all(row["rps"] > 0 for row in rows)
    assert "| bentoml | batch-binary |" in (tmp_path / "v2.md").read_text()
