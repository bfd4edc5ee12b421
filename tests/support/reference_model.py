"""The model's answers computed apart from the service: the stored model run directly.

Tests compare the service's answers with these. Only this module knows how to run what the
model store holds, so a change of model format changes this one function.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from iris_classifier.flowers import FEATURE_NAMES

# What train.py stores beside the served ONNX model: the fitted scikit-learn pipeline, in a
# store entry of its own that the served entry's metadata names. The reference is scikit-learn
# itself, not the ONNX Runtime the service runs.
STORED_PIPELINE = "pipeline.joblib"


@functools.cache
def _stored_pipeline(model_tag: str) -> Any:
    import bentoml
    import joblib

    pipeline_entry = bentoml.models.get(model_tag).info.metadata["pipeline_model"]
    return joblib.load(bentoml.models.get(pipeline_entry).path_of(STORED_PIPELINE))


def reference_probabilities(
    model_tag: str, flowers: Sequence[Mapping[str, float]]
) -> list[dict[str, float]]:
    """Each flower's class probabilities from the stored model `model_tag`, unrounded."""
    pipeline = _stored_pipeline(model_tag)
    features = np.array([[float(flower[name]) for name in FEATURE_NAMES] for flower in flowers])
    classes = [str(name) for name in pipeline.classes_]
    return [
        dict(zip(classes, map(float, row), strict=True)) for row in pipeline.predict_proba(features)
    ]
