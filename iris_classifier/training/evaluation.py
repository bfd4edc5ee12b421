"""Model evaluation on a stratified hold-out split and k-fold cross-validation, and its report."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline

from iris_classifier.training.data import TrainingData


def min_rows_per_class(test_size: float, folds: int) -> int:
    """Fewest rows a class needs to appear in the hold-out set and in every training fold."""
    return max(folds + 1, math.ceil(folds / (1 - test_size)) + 1)


@dataclass(frozen=True)
class Evaluation:
    holdout_accuracy: float
    holdout_macro_f1: float
    cv_accuracy_mean: float
    cv_accuracy_std: float
    folds: int
    train_rows: int
    holdout_rows: int
    class_names: list[str]
    confusion_matrix: list[list[int]]

    def as_dict(self) -> dict:
        return asdict(self)


def fit_and_evaluate(
    pipeline: Pipeline, data: TrainingData, *, test_size: float, folds: int, seed: int
) -> tuple[Pipeline, Evaluation, np.ndarray]:
    """Cross-validate on the training split, fit on it, and score the untouched hold-out.

    Returns the fitted pipeline, its evaluation and the hold-out features (for the ONNX gate).
    """
    features = data.features.to_numpy(dtype=float)
    labels = data.species.to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    cv_scores = cross_val_score(clone(pipeline), x_train, y_train, cv=splitter, scoring="accuracy")
    fitted = pipeline.fit(x_train, y_train)
    predicted = fitted.predict(x_test)
    class_names = [str(c) for c in fitted.classes_]
    evaluation = Evaluation(
        holdout_accuracy=float(accuracy_score(y_test, predicted)),
        holdout_macro_f1=float(f1_score(y_test, predicted, average="macro")),
        cv_accuracy_mean=float(np.mean(cv_scores)),
        cv_accuracy_std=float(np.std(cv_scores)),
        folds=folds,
        train_rows=len(y_train),
        holdout_rows=len(y_test),
        class_names=class_names,
        confusion_matrix=confusion_matrix(y_test, predicted, labels=class_names).tolist(),
    )
    return fitted, evaluation, x_test


def write_report(directory: Path, evaluation: Evaluation, summary: dict) -> list[Path]:
    """evaluation.json, evaluation.md and confusion_matrix.png in `directory`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "evaluation.json"
    json_path.write_text(json.dumps({**summary, **evaluation.as_dict()}, indent=2) + "\n")

    names = evaluation.class_names
    header = "| actual \\ predicted | " + " | ".join(names) + " |"
    rule = "|---" * (len(names) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(str(n) for n in counts) + " |"
        for name, counts in zip(names, evaluation.confusion_matrix, strict=True)
    ]
    markdown = [
        "# Iris classifier evaluation",
        "",
        *(f"- {key}: {value}" for key, value in summary.items()),
        f"- hold-out accuracy: {evaluation.holdout_accuracy:.4f} ({evaluation.holdout_rows} rows)",
        f"- hold-out macro-F1: {evaluation.holdout_macro_f1:.4f}",
        f"- {evaluation.folds}-fold cross-validation accuracy on the training split: "
        f"{evaluation.cv_accuracy_mean:.4f} +/- {evaluation.cv_accuracy_std:.4f}",
        "",
        "## Confusion matrix (hold-out)",
        "",
        header,
        rule,
        *rows,
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
    ]
    markdown_path = directory / "evaluation.md"
    markdown_path.write_text("\n".join(markdown))

    figure, axes = plt.subplots(figsize=(4.5, 4))
    matrix = np.array(evaluation.confusion_matrix)
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(f"hold-out accuracy {evaluation.holdout_accuracy:.3f}")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        axes.text(col, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    png_path = directory / "confusion_matrix.png"
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return [json_path, markdown_path, png_path]
