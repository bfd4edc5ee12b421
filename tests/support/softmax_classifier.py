"""A stand-in classifier with no file to load: the softmax of fixed weights, in single precision,
answering as the service's ONNX model does (`predict_proba` for rows, `predict_proba_one` for a
tuple), with probabilities of many digits so that the way they are written is put to the test."""

from __future__ import annotations

import numpy as np

from iris_classifier.flowers import CLASS_NAMES
from iris_classifier.onnx_model import single_precision_json


class OneRowJson:
    """`predict_proba_one_json` for a stand-in model, from its own `predict_proba_one`: the
    values, and their JSON as a float32 array, as the ONNX model gives both."""

    def predict_proba_one_json(self, features) -> tuple[list[float], bytes]:
        probabilities = self.predict_proba_one(features)
        return probabilities, single_precision_json(np.array(probabilities, np.float32))


class SoftmaxClassifier(OneRowJson):
    class_names = CLASS_NAMES
    dtype = np.float32
    weights = np.array(
        [[0.31, -0.2, 0.05], [0.7, 0.1, -0.45], [-0.9, 0.2, 0.66], [-1.3, 0.4, 1.1]], np.float32
    )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        scores = features.astype(np.float32) @ self.weights
        powers = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (powers / powers.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict_proba_one(self, features: tuple[float, ...]) -> list[float]:
        return self.predict_proba(np.asarray([features])).tolist()[0]
