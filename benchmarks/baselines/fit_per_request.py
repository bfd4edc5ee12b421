"""Baseline (b): the article's original approach, which fits a new model on every request.

The article's router builds a fresh classifier, trains it on the iris data and predicts, all
inside the request. This keeps that architecture, with the stored pipeline's hyperparameters
(cloned unfitted) so the only difference from baseline (a) is where the fitting happens. The
endpoints are plain `def`, as in the article, so FastAPI runs them in its thread pool. Run it with:

    uvicorn benchmarks.baselines.fit_per_request:app --port 5000
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Response
from sklearn.base import clone
from sklearn.datasets import load_iris

from benchmarks.baselines.contract import (
    SERVED_BY,
    BatchRequest,
    IrisFeatures,
    create_app,
    feature_row,
)

app, template = create_app("iris baseline: fit on every request")


def freshly_fitted_pipeline() -> Any:
    features, labels = load_iris(return_X_y=True)
    return clone(template["model"].pipeline).fit(features, labels)


@app.post("/iris/classify_iris")
def classify_iris(flower: IrisFeatures, response: Response) -> dict[str, Any]:
    class_names = template["model"].class_names
    probabilities = freshly_fitted_pipeline().predict_proba(np.array([feature_row(flower)]))[0]
    best = int(np.argmax(probabilities))
    response.headers["X-Served-By"] = SERVED_BY
    return {
        "class": class_names[best],
        "probability": float(probabilities[best]),
        "probabilities": dict(zip(class_names, probabilities.tolist(), strict=True)),
        "model_version": "fitted-per-request",
    }


@app.post("/iris/classify_batch")
def classify_batch(batch: BatchRequest, response: Response) -> dict[str, Any]:
    class_names = template["model"].class_names
    rows = np.array([feature_row(flower) for flower in batch.flowers])
    probabilities = freshly_fitted_pipeline().predict_proba(rows)
    best = probabilities.argmax(axis=1)
    response.headers["X-Served-By"] = SERVED_BY
    return {
        "predictions": [
            {"class": class_names[index], "probability": probability}
            for index, probability in zip(
                best.tolist(), probabilities.max(axis=1).tolist(), strict=True
            )
        ],
        "model_version": "fitted-per-request",
    }
