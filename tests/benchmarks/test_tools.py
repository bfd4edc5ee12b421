"""Short runs of the tools that produce the README's sizing, peer and cold-start figures:
each must run to its end and print figures of the right kind (their size is not judged here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import REPO_ROOT
from tests.conftest import SESSION_HOME, require

pytestmark = pytest.mark.integration


def run_tool(*command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, *command],
        cwd=REPO_ROOT,
        env={**os.environ, "BENTOML_HOME": str(SESSION_HOME), "BENTOML_DO_NOT_TRACK": "true"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


@pytest.mark.usefixtures("trained_model")
def test_replica_memory_measures_a_short_burst() -> None:
    completed = run_tool(
        "-m", "benchmarks.replica_memory", "--singles", "4", "--batches", "2", "--concurrency", "2"
    )
    stages = json.loads(completed.stdout)
    assert set(stages) == {"after_start", "burst_peak", "after_burst"}
    for figures in stages.values():
        assert figures["processes"] >= 2, "the arbiter and its worker"
        assert figures["rss_mib"] > 0
    require(
        all(figures["pss_mib"] is not None for figures in stages.values()),
        "PSS cannot be read on this machine (no readable /proc/<pid>/smaps_rollup or smaps)",
    )
    for figures in stages.values():
        assert 0 < figures["pss_mib"] <= figures["rss_mib"]


def test_mlserver_repository_serves_the_same_model_kind(tmp_path: Path) -> None:
    """Written with this environment's scikit-learn (`make mlserver` uses MLServer's own)."""
    import joblib

    run_tool("benchmarks/peers/mlserver_repository.py", str(tmp_path))
    settings = json.loads((tmp_path / "iris_classifier" / "model-settings.json").read_text())
    assert settings["name"] == "iris_classifier"
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert json.loads((tmp_path / "settings.json").read_text())["parallel_workers"] == 0
    model = joblib.load(tmp_path / "iris_classifier" / settings["parameters"]["uri"])
    assert type(model).__name__ == "LogisticRegression"
    # setosa, versicolor, virginica: the iris data's own class order.
    assert model.predict(
        [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]
    ).tolist() == [0, 1, 2]


def test_image_stats_prints_the_size_and_a_cold_start(service_image: str) -> None:
    completed = run_tool("-m", "image.stats", service_image, "--runs", "1", timeout=600)
    size = re.search(rf"image {re.escape(service_image)}: \d+ MB \((\d+) bytes\)", completed.stderr)
    assert size, completed.stderr
    from harness.containers import image_size_bytes

    assert int(size.group(1)) == image_size_bytes(service_image)
    assert re.search(
        r"cold start, docker run to /readyz 200: median [\d.]+ s .*1 runs", completed.stderr
    )
