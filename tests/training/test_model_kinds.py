"""Every estimator train.py offers, trained, exported and served end to end by `bentoml serve`.

The random forest goes through `make serve`, as a user would run it. Each served process
records its imported modules (a `sitecustomize` put on PYTHONPATH for the test), which proves
that no scikit-learn, SciPy or pandas is loaded while serving, and no pickle is stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.processes import bentoml_serve_command, running_on_free_port
from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.training.estimators import ESTIMATORS
from tests.conftest import REPO_ROOT, SEED_FLOWER
from tests.test_service_live import BAD_BODIES, request
from tests.test_train import run_train

pytestmark = pytest.mark.integration

TRAINING_ONLY_MODULES = ("sklearn", "scipy", "pandas", "joblib", "matplotlib")
MODULE_RECORDER = """
import os, sys, threading, time, json

def _record():
    path = os.path.join(os.environ["IRIS_MODULES_DIR"], f"{os.getpid()}.json")
    recording = 0
    while True:
        recording += 1
        names = sorted({name.split(".")[0] for name in list(sys.modules)})
        with open(path + ".tmp", "w") as out:
            json.dump({"argv": sys.argv, "modules": names, "recording": recording}, out)
        os.replace(path + ".tmp", path)
        time.sleep(0.2)

threading.Thread(target=_record, daemon=True).start()
"""


def train(tmp_path: Path, *args: str) -> Path:
    """Train into a fresh store under `tmp_path`; return that BentoML home."""
    result, home = run_train(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    return home


def served_entry_files(home: Path) -> list[str]:
    models = home / "models" / "iris_classifier"
    latest = (models / "latest").read_text().strip()
    return sorted(path.name for path in (models / latest).iterdir())


def read_records(directory: Path) -> dict[int, dict]:
    return {int(path.stem): json.loads(path.read_text()) for path in directory.glob("*.json")}


def recorded_modules(directory: Path, timeout: float = 10) -> dict[int, dict]:
    """Each process's modules, once every process still running has recorded them again
    after the last request."""
    import psutil

    before = read_records(directory)
    deadline = time.monotonic() + timeout
    while True:
        now = read_records(directory)
        behind = [
            pid
            for pid, record in before.items()
            if psutil.pid_exists(pid) and now[pid]["recording"] <= record["recording"]
        ]
        if not behind:
            return now
        assert time.monotonic() < deadline, f"processes {behind} recorded nothing new"
        time.sleep(0.05)


def check_serving(url: str, estimator: str) -> None:
    status, _, body = request(f"{url}/iris/classify_iris", json.dumps(SEED_FLOWER).encode())
    assert status == 200, body
    answer = json.loads(body)
    assert answer["class"] in CLASS_NAMES
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    flowers = [SEED_FLOWER, {**SEED_FLOWER, "petal_length": 6.1}] * 500
    status, _, body = request(
        f"{url}/iris/classify_batch", json.dumps({"flowers": flowers}).encode()
    )
    assert status == 200, body
    assert len(json.loads(body)["predictions"]) == 1000
    for bad in BAD_BODIES:
        status, _, body = request(f"{url}/iris/classify_iris", bad)
        assert 400 <= status < 500, (bad, status, body)
        assert "error" in json.loads(body)
    status, _, body = request(f"{url}/iris/model")
    assert status == 200
    card = json.loads(body)
    assert card["estimator"] == estimator
    assert card["model_version"] == answer["model_version"]
    assert card["metrics"]["holdout_accuracy"] >= 0.9


def assert_no_training_modules(records: dict[int, dict]) -> None:
    serving = [r for r in records.values() if any("bentoml" in arg for arg in r["argv"])]
    assert len(serving) >= 2, records  # the arbiter and at least one worker
    assert any("onnxruntime" in r["modules"] for r in serving)
    for record in serving:
        loaded = set(record["modules"]) & set(TRAINING_ONLY_MODULES)
        assert not loaded, (record["argv"], loaded)


def serving_env(home: Path, modules_dir: Path) -> dict[str, str]:
    recorder = modules_dir.parent / "recorder"
    recorder.mkdir()
    (recorder / "sitecustomize.py").write_text(MODULE_RECORDER)
    return {
        "BENTOML_HOME": str(home),
        "IRIS_MODULES_DIR": str(modules_dir),
        "PYTHONPATH": str(recorder),
    }


@pytest.mark.parametrize("estimator", sorted(set(ESTIMATORS) - {"random-forest"}))
def test_estimator_is_served_from_onnx_without_training_libraries(
    tmp_path: Path, estimator: str
) -> None:
    modules_dir = tmp_path / "modules"
    modules_dir.mkdir()
    home = train(tmp_path, "--model", estimator)
    assert served_entry_files(home) == ["model.onnx", "model.yaml"]
    with running_on_free_port(
        bentoml_serve_command,
        env=serving_env(home, modules_dir),
        log_path=tmp_path / "serve.log",
        cwd=REPO_ROOT,
        timeout=90,
    ) as (_, url):
        check_serving(url, estimator)
        records = recorded_modules(modules_dir)
    assert_no_training_modules(records)


def test_random_forest_is_served_by_make_serve(tmp_path: Path) -> None:
    modules_dir = tmp_path / "modules"
    modules_dir.mkdir()
    home = train(tmp_path, "--model", "random-forest")
    [stored_version] = [
        p.name for p in (home / "models" / "iris_classifier").iterdir() if p.is_dir()
    ]
    assert served_entry_files(home) == ["model.onnx", "model.yaml"]
    with running_on_free_port(
        lambda port: ["make", "serve", f"PORT={port}"],
        env=serving_env(home, modules_dir),
        log_path=tmp_path / "serve.log",
        cwd=REPO_ROOT,
        timeout=120,
    ) as (_, url):
        check_serving(url, "random-forest")
        _status, _, body = request(f"{url}/iris/model")
        assert json.loads(body)["model_version"] == f"iris_classifier:{stored_version}"
        records = recorded_modules(modules_dir)
    assert_no_training_modules(records)
    # `make serve` found the random forest servable and trained nothing more.
    assert len(list((home / "models" / "iris_classifier").glob("*/model.onnx"))) == 1
