"""The benchmark harness: wrk output parsing, target verdicts, and a smoke run of all servers.

The smoke run only checks that every server starts, answers and is measured; it asserts no
timing, since speed is what `make bench` reports, not what a test can judge on a shared machine.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import cpu_by_layer, v2
from benchmarks.baselines import ceiling
from benchmarks.loadgen import WrkResult, parse_wrk_output
from benchmarks.measure import RoundResult, access_for
from benchmarks.report import (
    ceiling_lines,
    cell,
    cpu_column_note,
    medians,
    paired_ratios,
    ratio,
    setting_lines,
    targets,
)
from benchmarks.servers import ALL_SERVERS, BENTOML, BENTOML_AUTH
from harness.cpus import allowed_cpus
from harness.processes import REPO_ROOT
from iris_classifier.serving.config import MAX_BATCH_ROWS
from iris_classifier.serving.protocols.contract import SAMPLE_FLOWER
from tests.conftest import require

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


def test_targets_are_met_by_a_service_two_and_a_half_times_as_fast_as_the_baseline() -> None:
    summary = {
        "bentoml": medians_for(2500, 10, 320_000, 250, 3),
        "fastapi": medians_for(1000, 10, 100_000, 200, 3),
    }

    assert all(target.met for target in targets(summary, "bentoml", "fastapi"))


def test_targets_flag_a_slower_service() -> None:
    summary = {
        "bentoml": medians_for(2490, 12, 319_000, 400, 6),
        "fastapi": medians_for(1000, 10, 100_000, 200, 3),
    }

    assert not any(target.met for target in targets(summary, "bentoml", "fastapi"))


def round_result(server: str, index: int, rps: float, flowers: float, cpu_s: float) -> RoundResult:
    """One round of 10 s loads: `rps` single requests a second, then `flowers` a second."""
    return RoundResult(
        server=server,
        round_index=index,
        cold_start_s=2.0,
        cold_start_cpu_s=2.0,
        single=WrkResult(int(rps * 10), 10.0, 5.0, 10.0, 0),
        batch=WrkResult(int(flowers * 10 / 1000), 10.0, 5.0, 10.0, 0),
        batch_rows=1000,
        single_cpu_s=cpu_s,
        batch_cpu_s=cpu_s,
        rss_mb=200.0,
        pss_mb=180.0,
    )


def test_paired_ratios_pair_each_round_not_the_medians() -> None:
    # Medians 300k and 100k flowers/s give 3.0x, but within each round the service was 2x.
    results = [
        round_result("bentoml", 1, 1000, 200_000, 10),
        round_result("fastapi", 1, 1000, 100_000, 10),
        round_result("bentoml", 2, 1000, 300_000, 10),
        round_result("fastapi", 2, 1000, 150_000, 10),
        round_result("bentoml", 3, 1000, 320_000, 10),
        round_result("fastapi", 3, 1000, 40_000, 10),
    ]
    summary = medians(results)
    assert (
        ratio(summary["bentoml"]["flowers_per_second"], summary["fastapi"]["flowers_per_second"])
        == 3.0
    )
    assert paired_ratios(results, "bentoml", "fastapi")["flowers_per_second"] == 2.0


def test_pss_that_cannot_be_read_is_left_out_of_the_medians_and_shown_as_such() -> None:
    read = round_result("bentoml", 1, 1000, 100_000, 10)
    unread = dataclasses.replace(read, round_index=2, pss_mb=None)
    assert medians([read, unread])["bentoml"]["pss_mb"] == 180.0
    assert math.isnan(medians([unread])["bentoml"]["pss_mb"])
    assert cell("{:.0f}", medians([unread])["bentoml"]["pss_mb"]) == "n/a"


def test_report_says_what_cpu_per_request_means_from_how_busy_the_cpu_was() -> None:
    # 1,000 req/s for 10 s on 10 CPU-seconds: busy all the time, 1,000 us a request.
    saturated = [round_result("bentoml", 1, 1000, 100_000, 10.0)]
    assert saturated[0].cpu_us_per_request == 1e6 / saturated[0].single.requests_per_second
    assert "busy 100.0% to 100.0%" in cpu_column_note(saturated)
    assert "the same figure as the rate" in cpu_column_note(saturated)
    shared = [*saturated, round_result("bentoml", 2, 1000, 100_000, 5.0)]
    assert "busy 50.0% to 100.0%" in cpu_column_note(shared)
    assert "other work shared the pinned CPU" in cpu_column_note(shared)


def test_the_ceiling_is_paired_with_the_service_round_by_round() -> None:
    results = [
        round_result("bentoml", 1, 3000, 100_000, 10),
        round_result("ceiling", 1, 10_000, 100_000, 10),
        round_result("bentoml", 2, 2000, 100_000, 10),
        round_result("ceiling", 2, 4000, 100_000, 10),
        round_result("ceiling", 3, 9000, 100_000, 10),  # no service in round 3: not paired
    ]
    lines = ceiling_lines(results, "bentoml", "ceiling")
    assert (
        "| single-flower req/s, `bentoml` / `ceiling` | 0.40x | 0.30, 0.50 | 0.4x | met |" in lines
    )
    # The same CPU seconds over the same time: CPU per request is the inverse of the rate.
    assert "| CPU per request, `ceiling` / `bentoml` | 0.40x | 0.30, 0.50 | 0.4x | met |" in lines
    results[3] = round_result("ceiling", 2, 6000, 100_000, 10)
    lines = ceiling_lines(results, "bentoml", "ceiling")
    assert (
        "| single-flower req/s, `bentoml` / `ceiling` | 0.32x | 0.30, 0.33 | 0.4x | missed |"
        in lines
    )
    assert ceiling_lines(results[:1], "bentoml", "ceiling") == []


def test_each_setting_is_paired_with_the_service_as_it_ships() -> None:
    results = [
        round_result("bentoml", 1, 3000, 200_000, 10),
        round_result("bentoml-auth", 1, 2940, 200_000, 10),
        round_result("bentoml", 2, 2000, 100_000, 10),
        round_result("bentoml-auth", 2, 1900, 95_000, 10),
        round_result("bentoml-prediction-log", 2, 2000, 100_000, 10),
    ]
    lines = setting_lines(
        results, "bentoml", ["bentoml-auth", "bentoml-prediction-log"], {"bentoml-auth": "tokens"}
    )
    # req/s: the median of 0.98 and 0.95; the same CPU seconds over fewer requests: of 1/0.98
    # and 1/0.95; the batch rates: of 1.0 and 0.95.
    assert (
        "| `bentoml-auth`: tokens | 0.965x | 1.000x | 1.037x | 0.975x | 0.980, 0.950 "
        "| 1.020, 1.053 |"
    ) in lines
    assert (
        "| `bentoml-prediction-log`: bentoml-prediction-log | 1.000x | 1.000x | 1.000x | 1.000x "
        "| 1.000 | 1.000 |"
    ) in lines
    assert setting_lines(results, "bentoml", ["bentoml-random-forest"], {}) == []


def test_a_server_with_tokens_on_gets_a_fresh_token_file_and_its_header() -> None:
    with access_for(BENTOML_AUTH) as first, access_for(BENTOML_AUTH) as second:
        token_file = Path(first.env["IRIS_TOKEN_FILE"])
        token = token_file.read_text().strip()
        assert first.authorization == f"Bearer {token}"
        assert len(token) >= 32
        assert second.authorization != first.authorization
    assert not token_file.exists()
    with access_for(BENTOML) as plain:
        assert (plain.env, plain.authorization) == (BENTOML.env, "")


def test_the_prediction_log_setting_reaches_its_servers_environment() -> None:
    """The service reads IRIS_PREDICTION_LOG_RATE from its environment; the harness must pass
    it, and to that server only."""
    with access_for(ALL_SERVERS["bentoml-prediction-log"]) as access:
        assert access.env["IRIS_PREDICTION_LOG_RATE"] == "0.01"
    with access_for(BENTOML) as access:
        assert "IRIS_PREDICTION_LOG_RATE" not in access.env


@pytest.fixture(scope="module")
def ceiling_client() -> Iterator:
    from starlette.testclient import TestClient

    with TestClient(ceiling.app) as client:
        yield client


def test_the_ceiling_computes_its_answer_from_the_flower(ceiling_client) -> None:
    setosa = ceiling_client.post("/iris/classify_iris", json=SAMPLE_FLOWER)
    virginica = ceiling_client.post(
        "/iris/classify_iris",
        json={"sepal_length": 6.5, "sepal_width": 3.0, "petal_length": 5.5, "petal_width": 2.0},
    )
    assert (setosa.status_code, setosa.json()["class"]) == (200, "setosa")
    assert (virginica.status_code, virginica.json()["class"]) == (200, "virginica")
    assert sum(setosa.json()["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert set(setosa.json()) == {
        "class",
        "probability",
        "probabilities",
        "model_version",
        "out_of_range",
    }
    batch = ceiling_client.post(
        "/iris/classify_batch", json={"flowers": [SAMPLE_FLOWER, SAMPLE_FLOWER]}
    )
    assert [row["class"] for row in batch.json()["predictions"]] == ["setosa", "setosa"]
    assert ceiling_client.post("/iris/classify_iris", json={"sepal_length": 5}).status_code == 400
    assert ceiling_client.get("/readyz").status_code == 200


def require_pinning() -> None:
    """What a benchmark run needs: wrk, taskset, and two CPUs to give the server and wrk one each."""
    require_tools("wrk", "taskset")
    allowed = allowed_cpus()
    require(
        len(allowed) >= 2,
        f"the benchmarks pin the server and wrk to a CPU each; only CPU {allowed[0]} is allowed here",
    )


def require_tools(*names: str) -> None:
    """Skip when a tool is missing, except in CI, where its absence is a failure."""
    missing = [name for name in names if shutil.which(name) is None]
    require(
        not missing,
        f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})",
    )


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


def run_smoke(module: str, env: dict[str, str], output: Path, *options: str) -> None:
    """A one-second run of a benchmark module that must succeed; its reports go to `output`."""
    completed = subprocess.run(
        [sys.executable, "-m", module, "--smoke", *options, "--output", str(output)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.integration
def test_smoke_run_measures_every_server(
    model_store: Path, random_forest_store: Path, tmp_path: Path
) -> None:
    require_pinning()
    env = {
        **os.environ,
        "BENTOML_HOME": str(model_store),
        "BENCH_RANDOM_FOREST_HOME": str(random_forest_store),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    run_smoke("benchmarks.run", env, tmp_path)

    raw = json.loads((tmp_path / "latest.json").read_text())
    rounds = {row["server"]: row for row in raw["rounds"]}
    assert set(rounds) == set(ALL_SERVERS)
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
    assert "| single-flower req/s, `bentoml` / `ceiling` |" in report
    assert "| `bentoml-auth`: this service with bearer tokens on" in report
    assert "| `bentoml-prediction-log`: this service logging 1 %" in report
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


def measurement(server: str, workload: str, round_index: int, rps: float) -> v2.Measurement:
    rows = 1 if workload in ("single", "seed-single") else 1000
    result = WrkResult(requests=int(rps * 10), seconds=10.0, p50_ms=1.0, p99_ms=2.0, failed=0)
    return v2.Measurement(server, workload, round_index, rows, result)


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
    ratios = v2.paired_ratios(measurements)
    assert ratios["single flower, V2 JSON"] == pytest.approx([3.0, 1.2])
    assert ratios["1,000-row batch, V2 JSON"] == pytest.approx([1.4])
    assert ratios["1,000-row batch, binary vs MLServer's JSON"] == pytest.approx([4.0])
    report = v2.render_markdown(measurements, [v2.this_service(), v2.mlserver()], "make bench")
    assert "| single flower, V2 JSON | 2.10x | 3.00, 1.20 | 2x | met |" in report
    assert "| 1,000-row batch, V2 JSON | 1.40x | 1.40 | 2x | missed |" in report


def test_v2_single_is_compared_with_the_seed_route_of_the_same_round() -> None:
    measurements = [
        measurement("bentoml", "single", 1, 95),
        measurement("bentoml", "seed-single", 1, 100),
        measurement("bentoml", "single", 2, 80),
        measurement("bentoml", "seed-single", 2, 100),
        measurement("bentoml", "single", 3, 300),  # no seed route in round 3: not paired
    ]
    assert v2.route_ratios(measurements) == pytest.approx([0.95, 0.8])
    report = v2.render_markdown(measurements, [v2.this_service()], "make bench")
    assert f"| {v2.ROUTE_RATIO_LABEL} | 0.88x | 0.95, 0.80 | 0.95x every round | missed |" in report


def test_v2_single_misses_its_target_on_one_round_below_it_whatever_the_median() -> None:
    rounds = [(1, 99), (2, 96), (3, 94)]  # a median of 0.96x, one round at 0.94x
    measurements = [
        m
        for r, rate in rounds
        for m in (
            measurement("bentoml", "single", r, rate),
            measurement("bentoml", "seed-single", r, 100),
        )
    ]
    report = v2.render_markdown(measurements, [v2.this_service()], "make bench")
    assert (
        f"| {v2.ROUTE_RATIO_LABEL} | 0.96x | 0.99, 0.96, 0.94 | 0.95x every round | missed |"
        in report
    )
    measurements[-2] = measurement("bentoml", "single", 3, 95)
    report = v2.render_markdown(measurements, [v2.this_service()], "make bench")
    assert (
        f"| {v2.ROUTE_RATIO_LABEL} | 0.96x | 0.99, 0.96, 0.95 | 0.95x every round | met |" in report
    )


def test_v2_report_judges_one_replicas_memory_after_the_load() -> None:
    memory = [
        v2.Memory("bentoml", 1, 2, 180.0, 160.0),
        v2.Memory("bentoml", 2, 2, 205.0, 170.0),
        v2.Memory("bentoml", 3, 2, 199.0, 165.0),
        v2.Memory("mlserver", 1, 1, 180.0, 170.0),
    ]
    report = v2.render_markdown([], [v2.this_service()], "make bench", memory)
    assert "| bentoml | 2 | 199 | 180, 205, 199 | 165 | <= 200 MB: met |" in report
    memory.append(v2.Memory("bentoml", 4, 2, 240.0, 180.0))
    report = v2.render_markdown([], [v2.this_service()], "make bench", memory)
    assert "| bentoml | 2 | 202 | 180, 205, 199, 240 | 168 | <= 200 MB: missed |" in report
    assert "| mlserver | 1 | 180 | 180 | 170 |  |" in report


def test_v2_report_shows_pss_as_unmeasured_where_it_cannot_be_read() -> None:
    memory = [v2.Memory("bentoml", 1, 2, 210.0, None), v2.Memory("bentoml", 2, 2, 230.0, None)]
    report = v2.render_markdown([], [v2.this_service()], "make bench", memory)
    assert "| bentoml | 2 | 220 | 210, 230 | n/a | <= 200 MB: missed |" in report


@pytest.mark.integration
def test_v2_smoke_run_measures_every_workload_of_this_service(
    model_store: Path, tmp_path: Path
) -> None:
    require_pinning()
    env = {**os.environ, "BENTOML_HOME": str(model_store), "BENTOML_DO_NOT_TRACK": "true"}
    run_smoke("benchmarks.v2", env, tmp_path, "--servers", "bentoml")
    rows = json.loads((tmp_path / "v2.json").read_text())
    assert {row["workload"] for row in rows} == {
        "single",
        "seed-single",
        "batch-json",
        "batch-binary",
    }
    assert all(row["rps"] > 0 for row in rows)
    report = (tmp_path / "v2.md").read_text()
    assert "| bentoml | batch-binary |" in report
    assert re.search(rf"^\| {re.escape(v2.ROUTE_RATIO_LABEL)} \| \d+\.\d\dx \|", report, re.M)
    (memory,) = json.loads((tmp_path / "v2-memory.json").read_text())
    # One replica: BentoML's arbiter and its one worker.
    assert (memory["server"], memory["processes"]) == ("bentoml", 2)
    assert memory["rss_mb"] > 0
    assert "<= 200 MB:" in report
    require(
        memory["pss_mb"] is not None,
        "PSS cannot be read on this machine (no readable /proc/<pid>/smaps_rollup or smaps)",
    )
    # The arbiter and its worker share pages (their libraries at least), which PSS splits.
    assert memory["rss_mb"] > memory["pss_mb"] > 0


def test_cpu_by_layer_layers_are_the_differences_of_nested_measurements() -> None:
    cost = cpu_by_layer.RouteCost(
        parse_us=3.0,
        predictor_us=20.0,
        encode_us=1.0,
        route_table_us=40.0,
        app_us=150.0,
        http_us=400.0,
    )
    assert cost.table_overhead_us == pytest.approx(16.0)
    assert cost.middleware_us == pytest.approx(110.0)
    assert cost.server_us == pytest.approx(250.0)
    table = cpu_by_layer.render({"seed": cost, "v2": cost}, 2.0, 70.0)
    assert "| route table (body read, dispatch, send) | 16.0 | 16.0 |" in table
    assert "| ceiling: parse the flower, fixed model, same uvicorn | 70.0 | 70.0 |" in table


@pytest.mark.integration
def test_cpu_by_layer_smoke_run_measures_every_layer(model_store: Path, tmp_path: Path) -> None:
    require_pinning()
    env = {**os.environ, "BENTOML_HOME": str(model_store), "BENTOML_DO_NOT_TRACK": "true"}
    run_smoke("benchmarks.cpu_by_layer", env, tmp_path)
    figures = json.loads((tmp_path / "request-cost.json").read_text())
    assert set(figures["routes"]) == {"seed", "v2"}
    for route in figures["routes"].values():
        assert all(value > 0 for value in route.values()), route
        # Each layer holds the one inside it.
        assert route["http_us"] > route["app_us"] > route["route_table_us"] > route["parse_us"]
    assert figures["ceiling_us"] > 0
    assert "n/a" not in (tmp_path / "request-cost.md").read_text()


# The sample flower's JSON members, to splice into raw bodies.
FLOWER = json.dumps(SAMPLE_FLOWER)[1:-1]
# Bodies the service refuses, spelt as raw JSON so NaN and 1e400 reach the servers as sent.
REFUSED = {
    "string": '{"sepal_length": "4", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "NaN token": '{"sepal_length": NaN, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "overflow": '{"sepal_length": 1e400, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "boolean": '{"sepal_length": true, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "zero": '{"sepal_length": 0, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "too long": '{"sepal_length": 101, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "missing": '{"sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}',
    "unknown field": "{" + FLOWER + ', "colour": 1}',
}
REFUSED_BATCHES = {
    "empty batch": '{"flowers": []}',
    "one flower over the batch limit": (
        '{"flowers": [' + ", ".join(["{" + FLOWER + "}"] * (MAX_BATCH_ROWS + 1)) + "]}"
    ),
    "bad row": '{"flowers": [{' + FLOWER + '}, {"sepal_length": "x"}]}',
}


@pytest.fixture(scope="module", params=["fastapi_loaded_once", "fit_per_request"])
def baseline_client(request: pytest.FixtureRequest, trained_model: str) -> Iterator:
    """A baseline app over the session's model store, started as uvicorn would start it."""
    from starlette.testclient import TestClient

    module = importlib.import_module(f"benchmarks.baselines.{request.param}")
    with TestClient(module.app) as client:
        yield client


def refused_fields(client, path: str, body: str) -> tuple[int, list[str]]:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    detail = response.json().get("detail") if response.status_code != 200 else []
    return response.status_code, [problem.get("field") for problem in detail or []]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/iris/classify_iris", body) for body in REFUSED.values()]
    + [("/iris/classify_batch", body) for body in REFUSED_BATCHES.values()],
    ids=[*REFUSED, *REFUSED_BATCHES],
)
def test_baselines_refuse_what_the_service_refuses_as_it_does(
    baseline_client, service_client, path: str, body: str
) -> None:
    """The benchmark compares like with like only if the baselines are as strict."""
    service = refused_fields(service_client, path, body)
    assert service[0] == 400
    assert refused_fields(baseline_client, path, body) == service


def test_baselines_answer_a_valid_flower(baseline_client) -> None:
    response = baseline_client.post("/iris/classify_iris", json=json.loads("{" + FLOWER + "}"))
    assert response.status_code == 200, response.text
    assert response.json()["class"] == "setosa"


# The benchmarks README's table of ratios to the FastAPI baseline: its rows and the figure each
# row shows.
RATIO_ROWS = {
    "single-flower requests/s": "single_rps",
    "single-flower p99 latency": "single_p99_ms",
    "flowers/s in 1,000-row batches": "flowers_per_second",
    "resident memory, whole process tree": "rss_mb",
    "cold start to `/readyz`": "cold_start_s",
}


def ratios_of_the_last_run() -> dict[str, list[float]]:
    """Per row: the service's ratio of medians and paired ratio, then fit-per-request's."""
    rounds = json.loads((REPO_ROOT / "benchmarks/results/latest.json").read_text())["rounds"]
    by_round: dict[int, dict[str, dict]] = {}
    for row in rounds:
        by_round.setdefault(row["round"], {})[row["server"]] = row
    figures = {}
    for label, key in RATIO_ROWS.items():
        figures[label] = []
        for server in ("bentoml", "fit-per-request"):
            median = statistics.median(r[key] for r in rounds if r["server"] == server)
            base = statistics.median(r[key] for r in rounds if r["server"] == "fastapi")
            paired = statistics.median(
                ratio(pair[server][key], pair["fastapi"][key]) for pair in by_round.values()
            )
            figures[label] += [ratio(median, base), paired]
    return figures


def test_readme_ratios_are_those_of_the_last_run() -> None:
    readme = "benchmarks/README.md"
    text = (REPO_ROOT / readme).read_text()
    expected = ratios_of_the_last_run()
    for label, figures in expected.items():
        row = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", text, re.M)
        assert row, f"{readme} has no row {label!r}"
        shown = [float(cell.strip().removesuffix("x")) for cell in row.group(1).split("|")]
        # The page quotes the paired ratios only: the service's, then fit-per-request's.
        paired = figures[1::2]
        assert shown == pytest.approx(paired, rel=0.01, abs=0.006), label


def test_the_ratio_table_is_written_once() -> None:
    """Other pages link to the benchmarks README rather than repeat figures that go stale."""
    pages = [
        path
        for path in REPO_ROOT.rglob("*.md")
        if not {".venv", "node_modules", "build", "reports", "results"}
        & set(path.relative_to(REPO_ROOT).parts)
        and path != REPO_ROOT / "benchmarks/README.md"
    ]
    repeated = [
        f"{path.relative_to(REPO_ROOT)}: {label}"
        for path in pages
        for label in RATIO_ROWS
        if re.search(rf"^\| {re.escape(label)} \|", path.read_text(), re.M)
    ]
    assert not repeated


# The benchmarks README's Open Inference Protocol table: its rows and the workloads each row
# compares (this service's, MLServer's).
V2_ROWS = {
    "single flower, V2 JSON": ("single", "single"),
    "1,000-row batch, V2 JSON": ("batch-json", "batch-json"),
    "1,000-row batch, binary tensors (vs MLServer's JSON)": ("batch-binary", "batch-json"),
}


def test_readme_v2_figures_are_those_of_the_last_run() -> None:
    text = (REPO_ROOT / "benchmarks/README.md").read_text()
    runs = json.loads((REPO_ROOT / "benchmarks/results/v2.json").read_text())
    flowers = {
        (run["server"], run["workload"], run["round"]): run["rps"] * run["rows"] for run in runs
    }
    rounds = sorted({run["round"] for run in runs})
    for label, (ours, theirs) in V2_ROWS.items():
        row = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", text, re.M)
        assert row, f"benchmarks/README.md has no row {label!r}"
        service, mlserver, shown_ratio, _target = (cell.strip() for cell in row.group(1).split("|"))
        service_median = statistics.median(flowers["bentoml", ours, r] for r in rounds)
        assert float(service.split()[0].replace(",", "")) == pytest.approx(service_median, abs=1)
        if mlserver:
            mlserver_median = statistics.median(flowers["mlserver", theirs, r] for r in rounds)
            assert float(mlserver.split()[0].replace(",", "")) == pytest.approx(
                mlserver_median, abs=1
            )
        paired = statistics.median(
            flowers["bentoml", ours, r] / flowers["mlserver", theirs, r] for r in rounds
        )
        assert float(shown_ratio.removesuffix("x")) == pytest.approx(paired, abs=0.006), label


# The sentence of the benchmarks README that shows how the two kinds of ratio can differ.
SINGLE_RATIO_SENTENCE = re.compile(
    r"for single flowers in the last run, the ratio of medians was ([\d.]+)x and the median of"
    r" the paired ratios ([\d.]+)x \(the per-round ratios were ([\d.]+)x to ([\d.]+)x\)"
)


def test_readme_ratio_sentence_is_that_of_the_last_run() -> None:
    text = " ".join((REPO_ROOT / "benchmarks/README.md").read_text().split())
    sentence = SINGLE_RATIO_SENTENCE.search(text)
    assert sentence, "benchmarks/README.md no longer compares the two ratios for single flowers"
    rounds = json.loads((REPO_ROOT / "benchmarks/results/latest.json").read_text())["rounds"]
    by_round: dict[int, dict[str, dict]] = {}
    for row in rounds:
        by_round.setdefault(row["round"], {})[row["server"]] = row
    per_round = [
        pair["bentoml"]["single_rps"] / pair["fastapi"]["single_rps"] for pair in by_round.values()
    ]
    of_medians, paired = ratios_of_the_last_run()["single-flower requests/s"][:2]
    shown = [float(figure) for figure in sentence.groups()]
    assert shown == pytest.approx(
        [of_medians, paired, min(per_round), max(per_round)], abs=0.006
    ), sentence.group(0)


def test_readme_last_run_paragraph_is_that_of_the_last_run() -> None:
    """The per-round figures and medians the paragraph under "The last run" quotes."""
    text = " ".join((REPO_ROOT / "benchmarks/README.md").read_text().split())
    rounds = json.loads((REPO_ROOT / "benchmarks/results/latest.json").read_text())["rounds"]
    by_round: dict[int, dict[str, dict]] = {}
    for row in rounds:
        by_round.setdefault(row["round"], {})[row["server"]] = row
    pairs = [by_round[index] for index in sorted(by_round)]
    single = re.search(r"the baseline's paired \(per round: ([\d., ]+);", text)
    memory = re.search(r"\(per round: ([\d, ]+); the", text)
    assert single, "no per-round single-flower ratios in the README"
    assert memory, "no per-round memory in the README"
    assert [float(v) for v in single.group(1).split(", ")] == pytest.approx(
        [pair["bentoml"]["single_rps"] / pair["fastapi"]["single_rps"] for pair in pairs],
        abs=0.006,
    )
    assert [int(v) for v in memory.group(1).split(", ")] == [
        round(pair["bentoml"]["rss_mb"]) for pair in pairs
    ]

    def median(server: str, key: str) -> float:
        return statistics.median(row[key] for row in rounds if row["server"] == server)

    quoted = {
        f"{median('bentoml', 'flowers_per_second'):,.0f} flowers/s in 1,000-row batches",
        f"{median('bentoml', 'cold_start_s'):.2f} s to ready",
        f"{median('bentoml', 'rss_mb'):.0f} MB resident after the load",
        f"{median('bentoml', 'cpu_us_per_request'):.0f} us for the service",
        f"{median('fastapi', 'cpu_us_per_request'):.0f} us for the baseline",
        f"{median('bentoml-random-forest', 'single_rps'):,.0f} requests/s",
        f"{median('bentoml-random-forest', 'flowers_per_second'):,.0f} flowers/s",
    }
    assert {figure for figure in quoted if figure not in text} == set()
