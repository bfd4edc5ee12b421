"""What a correct answer looks like, so that a fast wrong answer counts as a failure."""

from __future__ import annotations

import math
from typing import Any

from iris_classifier.config import CLASS_NAMES

# Probabilities come back rounded to 4 places, so their sum may miss 1 by a few ten-thousandths.
PROBABILITY_SUM_TOLERANCE = 0.01


def _prediction_problem(prediction: Any) -> str | None:
    if not isinstance(prediction, dict):
        return f"prediction is not an object: {prediction!r}"
    species = prediction.get("class")
    if species not in CLASS_NAMES:
        return f"unknown class {species!r}"
    probability = prediction.get("probability")
    if not isinstance(probability, int | float) or not 0.0 <= probability <= 1.0:
        return f"probability {probability!r} is not in [0, 1]"
    return None


def classification_problem(body: Any) -> str | None:
    """Why a `/iris/classify_iris` answer is wrong, or None when it is right."""
    if problem := _prediction_problem(body):
        return problem
    probabilities = body.get("probabilities")
    if not isinstance(probabilities, dict) or set(probabilities) != set(CLASS_NAMES):
        return f"probabilities {probabilities!r} do not cover {CLASS_NAMES}"
    if not math.isclose(sum(probabilities.values()), 1.0, abs_tol=PROBABILITY_SUM_TOLERANCE):
        return f"probabilities sum to {sum(probabilities.values())}, not 1"
    if not body.get("model_version"):
        return "model_version is missing"
    return None


def batch_problem(body: Any, rows_sent: int) -> str | None:
    """Why a `/iris/classify_batch` answer is wrong, or None when it is right."""
    if not isinstance(body, dict):
        return f"answer is not an object: {body!r}"
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != rows_sent:
        count = len(predictions) if isinstance(predictions, list) else predictions
        return f"{count} predictions for {rows_sent} flowers"
    for index, prediction in enumerate(predictions):
        if problem := _prediction_problem(prediction):
            return f"prediction {index}: {problem}"
    if not body.get("model_version"):
        return "model_version is missing"
    return None
