"""What clients are told about the served model: `GET /iris/model` and the API page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CARD_KEYS = (
    "estimator",
    "hyperparameters",
    "metrics",
    "class_names",
    "feature_names",
    "feature_unit",
    "feature_stats",
    "drift_bins",
    "precision",
    "opset",
    "data_sha256",
    "library_versions",
)
SUMMARY_METRICS = ("holdout_accuracy", "holdout_macro_f1", "cv_accuracy_mean", "cv_accuracy_std")


def model_card(model_tag: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    card: dict[str, Any] = {"model_version": model_tag, "format": metadata.get("format")}
    card.update({key: metadata[key] for key in CARD_KEYS if key in metadata})
    metrics = card.get("metrics", {})
    card["metrics"] = {
        key: metrics[key] for key in (*SUMMARY_METRICS, "confusion_matrix") if key in metrics
    }
    return card


def summary(card: Mapping[str, Any]) -> str:
    """One sentence for the API page: which estimator answers, and how well it scored."""
    metrics = card.get("metrics", {})
    scores = ", ".join(
        f"{name.replace('_', ' ')} {metrics[name]:.4f}"
        for name in SUMMARY_METRICS
        if name in metrics
    )
    return (
        f"Served model {card.get('model_version')}: {card.get('estimator')} "
        f"({card.get('precision')} ONNX, run by ONNX Runtime); {scores}. "
        "GET /iris/model returns its full metadata."
    )
