"""The scikit-learn classifiers train.py offers, each seeded and inside the pipeline it needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def _logistic_regression(seed: int) -> Pipeline:
    # The four features share a unit and a similar range: no rescaling needed. Newton's method
    # run to a tight tolerance stops at the optimum itself, so every CPU fits the same model;
    # L-BFGS's default stopping point moves with the last bit of the arithmetic, further than
    # the load test's reference answers allow.
    classifier = LogisticRegression(
        C=1.0, solver="newton-cholesky", tol=1e-8, max_iter=1000, random_state=seed
    )
    return Pipeline([("classifier", classifier)])


def _random_forest(seed: int) -> Pipeline:
    return Pipeline([("classifier", RandomForestClassifier(n_estimators=100, random_state=seed))])


def _gradient_boosting(seed: int) -> Pipeline:
    return Pipeline([("classifier", GradientBoostingClassifier(random_state=seed))])


def _svm(seed: int) -> Pipeline:
    # An RBF kernel measures distances, so features are standardised first. Probabilities come
    # from sigmoid (Platt) calibration of the decision values, the form scikit-learn 1.9 keeps
    # now that `SVC(probability=True)` is deprecated.
    svc = SVC(kernel="rbf", random_state=seed)
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("classifier", CalibratedClassifierCV(svc, method="sigmoid", ensemble=False)),
        ]
    )


ESTIMATORS: dict[str, Callable[[int], Pipeline]] = {
    "logistic-regression": _logistic_regression,
    "random-forest": _random_forest,
    "gradient-boosting": _gradient_boosting,
    "svm": _svm,
}
DEFAULT_ESTIMATOR = "logistic-regression"


def build_pipeline(name: str, seed: int) -> Pipeline:
    """An unfitted pipeline for estimator `name` (one of `ESTIMATORS`)."""
    return ESTIMATORS[name](seed)


def hyperparameters(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Each step's own parameters, as JSON-friendly values, for the model's metadata."""
    return {
        name: {
            key: value if isinstance(value, str | int | float | bool) else repr(value)
            for key, value in step.get_params(deep=False).items()
        }
        for name, step in pipeline.steps
    }
