"""train.py end to end: what it stores, what it refuses, and what it reports."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iris_classifier.flowers import CLASS_NAMES
from tests.conftest import REPO_ROOT
from tests.support.cli_help import undocumented
from tests.support.model_store import break_model, stored_metadata
from tests.training.test_data import GOOD_ROWS, HEADER


def run_train(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run train.py in a fresh BentoML store of its own; return the result and the store."""
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "train.py", "--report-dir", str(tmp_path / "reports"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, home


def stored_models(home: Path) -> list[Path]:
    models = home / "models" / "iris_classifier"
    return sorted(p for p in models.iterdir() if p.is_dir()) if models.exists() else []


@pytest.mark.slow
def test_trains_stores_and_reports(tmp_path: Path) -> None:
    result, home = run_train(tmp_path)
    assert result.returncode == 0, result.stderr
    [model_dir] = stored_models(home)
    # The served entry holds the ONNX graph and its metadata, and no pickle.
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.onnx", "model.yaml"]
    # The fitted pipeline is kept beside it, in an entry of its own with the same version.
    pipeline_dir = home / "models" / "iris_classifier_sklearn" / model_dir.name
    assert (pipeline_dir / "pipeline.joblib").is_file()
    [run_dir] = list((tmp_path / "reports").iterdir())
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["gate"] == "passed"
    assert report["holdout_accuracy"] >= 0.9
    assert report["model"] == f"iris_classifier:{model_dir.name}"
    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Confusion matrix" in (run_dir / "evaluation.md").read_text()


def test_stored_metadata_describes_the_model(trained_model: str) -> None:
    import bentoml

    model = bentoml.models.get(trained_model)
    metadata = model.info.metadata
    assert metadata["class_names"] == list(CLASS_NAMES)
    assert metadata["feature_names"] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata["feature_unit"] == "cm"
    from tests.training.test_data import bundled_digest

    assert metadata["data_sha256"] == bundled_digest()
    assert {"holdout_accuracy", "holdout_macro_f1", "cv_accuracy_mean", "confusion_matrix"} <= set(
        metadata["metrics"]
    )
    assert sum(map(sum, metadata["metrics"]["confusion_matrix"])) == 30
    assert {
        "scikit-learn",
        "numpy",
        "pandas",
        "bentoml",
        "python",
        "skl2onnx",
        "onnx",
        "onnxruntime",
    } <= set(metadata["library_versions"])
    assert metadata["estimator"] == "logistic-regression"
    assert metadata["hyperparameters"]["classifier"]["random_state"] == 42
    assert metadata["format"] == "onnx"
    assert metadata["input"] == {"name": "features", "shape": ["rows", 4], "dtype": "float32"}
    assert metadata["outputs"]["probabilities"]["shape"] == ["rows", 3]
    assert metadata["opset"]["ai.onnx"] >= 17
    assert metadata["parity"]["max_difference"] <= 1e-5
    assert model.info.labels["framework"] == "onnx"


@pytest.mark.slow
def test_quality_gate_refuses_and_stores_nothing(tmp_path: Path) -> None:
    result, home = run_train(tmp_path, "--min-accuracy", "0.999")
    assert result.returncode == 1
    assert "quality gate refused the model" in result.stderr
    assert "below the minimum 0.9990" in result.stderr
    assert stored_models(home) == []


@pytest.mark.slow
def test_training_on_a_csv_stores_one_model(tmp_path: Path) -> None:
    data = tmp_path / "flowers.csv"
    data.write_text("\n".join([HEADER, *GOOD_ROWS * 2]) + "\n")
    result, home = run_train(tmp_path, "--data", str(data), "--min-accuracy", "0.5")
    assert result.returncode == 0, result.stderr
    assert len(stored_models(home)) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        (HEADER + "\n" + "5.0,3.1,1.4,0.2,daisy\n", "unknown species ['daisy']"),
    ],
    ids=["empty", "unknown-species"],
)
def test_bad_data_exits_2_and_stores_nothing(tmp_path: Path, text: str, message: str) -> None:
    data = tmp_path / "flowers.csv"
    data.write_text(text)
    result, home = run_train(tmp_path, "--data", str(data))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert stored_models(home) == []


@pytest.mark.slow
def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    result, home = run_train(tmp_path, "--min-accuracy", "1.5")
    assert result.returncode == 2
    assert "--min-accuracy must be between 0 and 1" in result.stderr
    assert stored_models(home) == []


@pytest.mark.slow
def test_if_missing_trains_once_then_keeps_the_stored_model(tmp_path: Path) -> None:
    first, home = run_train(tmp_path, "--if-missing")
    assert first.returncode == 0, first.stderr
    [model_dir] = stored_models(home)
    second, _ = run_train(tmp_path, "--if-missing")
    assert second.returncode == 0, second.stderr
    assert f"the store already holds iris_classifier:{model_dir.name}" in second.stderr
    assert stored_models(home) == [model_dir]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["old-json-weights", "corrupt-onnx"])
def test_if_missing_replaces_a_model_the_service_cannot_serve(tmp_path: Path, case: str) -> None:
    first, home = run_train(tmp_path)
    assert first.returncode == 0, first.stderr
    [old_model] = stored_models(home)
    break_model(old_model, case)
    second, _ = run_train(tmp_path, "--if-missing")
    assert second.returncode == 0, second.stderr
    assert "cannot be served" in second.stderr
    assert len(stored_models(home)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["random-forest", "svm"])
def test_model_option_stores_that_estimator(tmp_path: Path, estimator: str) -> None:
    result, home = run_train(tmp_path, "--model", estimator)
    assert result.returncode == 0, result.stderr
    [model_dir] = stored_models(home)
    assert stored_metadata(model_dir)["estimator"] == estimator
    assert f"({estimator})" in result.stderr


@pytest.mark.slow
def test_compare_reports_every_estimator_and_stores_nothing(tmp_path: Path) -> None:
    result, home = run_train(tmp_path, "--compare")
    assert result.returncode == 0, result.stderr
    assert stored_models(home) == []
    [run_dir] = list((tmp_path / "reports").iterdir())
    report = json.loads((run_dir / "comparison.json").read_text())
    rows = {row["estimator"]: row for row in report["estimators"]}
    assert set(rows) == {"logistic-regression", "random-forest", "gradient-boosting", "svm"}
    for row in rows.values():
        assert 0.9 <= row["holdout_accuracy"] <= 1
        assert row["single_row_us"] > 0
        assert row["batch_1000_us"] > 0
        assert row["model_bytes"] > 0
    # Different estimators differ in size: the report measures each, not one model four times.
    assert rows["random-forest"]["model_bytes"] > 10 * rows["logistic-regression"]["model_bytes"]
    markdown = (run_dir / "comparison.md").read_text()
    assert all(name in markdown for name in rows)
    assert (run_dir / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parity_gate_refuses_and_names_the_worst_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bentoml

    import train
    from iris_classifier.training import parity

    before = {str(model.tag) for model in bentoml.models.list()}
    # No export matches scikit-learn exactly: a zero tolerance must refuse every precision.
    monkeypatch.setattr(parity, "TOLERANCE", 0.0)
    assert train.main(["--report-dir", str(tmp_path)]) == 1
    assert {str(model.tag) for model in bentoml.models.list()} == before
    [message] = [r.getMessage() for r in caplog.records if "parity gate refused" in r.getMessage()]
    assert "float32: largest difference" in message
    assert "float64: largest difference" in message
    assert " row [" in message


def test_help_states_each_default_one_way(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import train

    parsers: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_args

    def recording_parse(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        parsers.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording_parse)
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert not undocumented(parsers[0], help_text)
    # "(default 0.90)" or a bare "(42)" beside the "(default: 42)" of the others.
    assert not re.findall(r"\(default [^:]*?\)|\(\d[\d.]*\)", " ".join(help_text.split()))
