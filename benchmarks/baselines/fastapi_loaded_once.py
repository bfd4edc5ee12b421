"""Baseline (a): the article's FastAPI architecture done right.

The fitted scikit-learn pipeline is loaded once from the BentoML model store at start-up and
each request calls `predict_proba`, which is what a careful hand-written server does. Endpoints
are `async` because the work is a few hundred microseconds of CPU: a thread-pool hop would cost
more than it saves. Run it with:

    uvicorn benchmarks.baselines.fastapi_loaded_once:app --port 5000
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Response

from benchmarks.baselines.contract import (
    SERVED_BY,
    BatchRequest,
    IrisFeatures,
    create_app,
    feature_row,
)

app, loaded = create_app("iris baseline: FastAPI, model loaded once")


@app.post("/iris/classify_iris")
async def classify_iris(flower: IrisFeatures, response: Response) -> dict[str, Any]:
    model = loaded["model"]
    probabilities = model.pipeline.predict_proba(np.array([feature_row(flower)]))[0]
    best = int(np.argmax(probabilities))
    response.headers["X-Served-By"] = SERVED_BY
    return {
        "class": model.class_names[best],
        "probability": float(probabilities[best]),
        "probabilities": dict(zip(model.class_names, probabilities.tolist(), strict=True)),
        "model_version": model.version,
    }


@app.post("/iris/classify_batch")
async def classify_batch(batch: BatchRequest, response: Response) -> dict[str, Any]:
    model = loaded["model"]
    rows = np.array([feature_row(flower) for flower in batch.flowers])
    probabilities = model.pipeline.predict_proba(rows)
    best = probabilities.argmax(axis=1)
    response.headers["X-Served-By"] = SERVED_BY
    return {
        "predictions": [
            {"class": model.class_names[index], "probability": probability}
            for index, probability in zip(
                best.tolist(), probabilities.max(axis=1).tolist(), strict=True
            )
        ],
        "model_version": model.version,
    }
