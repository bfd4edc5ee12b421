"""`train.py --compare`: every estimator on the same split, side by side, and nothing stored.

For each: hold-out accuracy and macro-F1, cross-validation accuracy (mean and standard
deviation), the ONNX parity result, ONNX Runtime's latency for one flower and for 1,000, and
the ONNX model's size. Written as comparison.md, comparison.json and comparison.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from iris_classifier.flowers import FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.onnx_model import OnnxClassifier, session_options
from iris_classifier.training.data import TrainingData
from iris_classifier.training.estimators import ESTIMATORS, build_pipeline
from iris_classifier.training.evaluation import fit_and_evaluate
from iris_classifier.training.parity import ParityError, export_checked

TIMED_SINGLE_CALLS = 2_000
TIMED_BATCH_CALLS = 50
BATCH_ROWS = 1_000


def compare_estimators(
    data: TrainingData, directory: Path, *, test_size: float, folds: int, seed: int
) -> Path:
    """Train, check and time every estimator; return the Markdown report's path."""
    rows = [
        _measure(name, data, test_size=test_size, folds=folds, seed=seed) for name in ESTIMATORS
    ]
    directory.mkdir(parents=True, exist_ok=True)
    summary = {"data": data.source, "data_sha256": data.sha256, "seed": seed, "folds": folds}
    (directory / "comparison.json").write_text(
        json.dumps({**summary, "estimators": rows}, indent=2) + "\n"
    )
    _chart(rows, directory / "comparison.png")
    report = directory / "comparison.md"
    report.write_text(_markdown(rows, summary))
    return report


def _measure(name: str, data: TrainingData, *, test_size: float, folds: int, seed: int) -> dict:
    pipeline, evaluation, holdout = fit_and_evaluate(
        build_pipeline(name, seed), data, test_size=test_size, folds=folds, seed=seed
    )
    row: dict[str, Any] = {
        "estimator": name,
        "holdout_accuracy": evaluation.holdout_accuracy,
        "holdout_macro_f1": evaluation.holdout_macro_f1,
        "cv_accuracy_mean": evaluation.cv_accuracy_mean,
        "cv_accuracy_std": evaluation.cv_accuracy_std,
    }
    try:
        model_bytes, parity = export_checked(
            pipeline, holdout, feature_names=FEATURE_NAMES, seed=seed
        )
    except ParityError as exc:
        return {**row, "parity": f"refused: {exc}"}
    session = onnxruntime.InferenceSession(
        model_bytes, session_options(), providers=["CPUExecutionProvider"]
    )
    classifier = OnnxClassifier(session, evaluation.class_names)
    flower = holdout[0].tolist()
    batch = np.random.default_rng(seed).uniform(0.1, MAX_FEATURE_CM / 10, (BATCH_ROWS, 4))
    return {
        **row,
        "parity": parity.describe(),
        "precision": parity.precision,
        "single_row_us": _median_us(
            lambda: classifier.predict_proba_one(flower), TIMED_SINGLE_CALLS
        ),
        "batch_1000_us": _median_us(lambda: classifier.predict_proba(batch), TIMED_BATCH_CALLS),
        "model_bytes": len(model_bytes),
    }


def _median_us(call, repeats: int) -> float:
    call()  # the first run allocates; it is not what a request pays
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e6)


def _markdown(rows: list[dict], summary: dict) -> str:
    header = (
        "| estimator | hold-out accuracy | hold-out macro-F1 | CV accuracy | precision "
        "| 1 flower us | 1,000 flowers us | ONNX KB |"
    )
    lines = [
        "# Estimator comparison",
        "",
        *(f"- {key}: {value}" for key, value in summary.items()),
        "- latency: ONNX Runtime alone (one thread), median of repeated calls on this machine; "
        "a request adds HTTP and JSON work on top",
        "",
        header,
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        if "precision" not in row:
            lines.append(
                f"| {row['estimator']} | {row['holdout_accuracy']:.4f} | "
                f"{row['holdout_macro_f1']:.4f} | {row['cv_accuracy_mean']:.4f} +/- "
                f"{row['cv_accuracy_std']:.4f} | {row['parity']} | | | |"
            )
            continue
        lines.append(
            f"| {row['estimator']} | {row['holdout_accuracy']:.4f} | {row['holdout_macro_f1']:.4f} "
            f"| {row['cv_accuracy_mean']:.4f} +/- {row['cv_accuracy_std']:.4f} "
            f"| {row['precision']} | {row['single_row_us']:.1f} | {row['batch_1000_us']:.0f} "
            f"| {row['model_bytes'] / 1024:.1f} |"
        )
    lines += ["", "![comparison](comparison.png)", ""]
    return "\n".join(lines)


def _chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["estimator"] for row in rows]
    panels = [
        ("hold-out accuracy", [row["holdout_accuracy"] for row in rows]),
        ("1 flower, us", [row.get("single_row_us", 0) for row in rows]),
        ("1,000 flowers, us", [row.get("batch_1000_us", 0) for row in rows]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.5))
    for axis, (title, values) in zip(axes, panels, strict=True):
        axis.barh(names, values, color="tab:blue")
        axis.set_title(title)
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
