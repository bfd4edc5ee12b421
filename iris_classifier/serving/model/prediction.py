"""The one `Predictor` behind every front end: the single-flower and batch routes and the Open
Inference Protocol's JSON and binary tensors. Each answer's probabilities, range check and model
metrics therefore come from the same code, whatever the protocol; the front ends only read
requests (contract.py, v2.py) and write answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, NamedTuple, overload

import numpy as np

from iris_classifier.onnx_model import OnnxClassifier
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.model.drift import DriftCounts
from iris_classifier.serving.model.prediction_log import PredictionLog
from iris_classifier.serving.telemetry.metrics import ModelMetrics


@dataclass(frozen=True)
class Predictions:
    """What the model says about (rows, 4) flowers, already counted in the model metrics."""

    probabilities: np.ndarray  # (rows, classes), in the model's precision
    best_indices: np.ndarray  # (rows,): index of each row's most likely class
    # Names each row's features outside the training range. Called only for an answer that
    # holds them: tensor clients rarely ask, and naming makes a Python list per row.
    name_outside: Callable[[], list[list[str]]]

    @cached_property
    def best(self) -> list[int]:
        """Index of each row's most likely class, as Python ints: made only for an answer that
        names classes, not for one of probabilities alone."""
        return self.best_indices.tolist()

    @cached_property
    def out_of_range(self) -> list[list[str]]:
        """Each row's features outside the training range, in contract order."""
        return self.name_outside()


class RowPrediction(NamedTuple):
    """What the model says about one flower read as plain floats, already counted."""

    probabilities: list[float]  # the model's values, as Python floats
    best: int
    out_of_range: list[str]
    # The same values as the JSON of a float32 array, written by the model from its own output.
    probabilities_json: bytes


class Predictor:
    """Answers for one flower or many from the stored classifier, with the model's metrics and
    every served value counted in its drift bin.

    `classify` and `classify_many` give the JSON objects the contract's Classification and
    BatchClassification describe, built from known-good values and so not validated again;
    `predict` gives what the tensor protocol writes: arrays, or for one flower read as a tuple
    of floats (the common one-row tensor) the plain values the single-flower route uses. A
    request of many flowers (a batch or a tensor, however many rows) is one observation of
    `iris_batch_rows`. With a `prediction_log`, a sampled request's flowers and answers are
    logged here, the same for every front end.
    """

    def __init__(
        self,
        model: OnnxClassifier,
        ranges: TrainingRanges,
        metrics: ModelMetrics,
        model_tag: str,
        *,
        drift: DriftCounts,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.model = model
        self.ranges = ranges
        self.metrics = metrics
        self.model_tag = model_tag
        self.drift = drift
        self.prediction_log = prediction_log
        # A float32 probability times 10,000 is exact in a double (24 + 14 bits), so rounding
        # that product is round(p, 4) on the same value, without its decimal conversion.
        self._scaled_rounding = model.dtype == np.float32

    def classify(self, values: Sequence[float]) -> dict[str, Any]:
        probabilities = self.model.predict_proba_one(values)
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        outside = self.ranges.outside_one(values)
        self.metrics.record_one(best, probabilities[best], outside)
        self.drift.record_one(values)
        if self.prediction_log is not None and self.prediction_log.sampled():
            self.prediction_log.log_one(values, probabilities, best, outside)
        if self._scaled_rounding:
            rounded = [round(p * 10000) / 10000 for p in probabilities]
        else:
            rounded = [round(p, 4) for p in probabilities]
        return {
            "class": self.model.class_names[best],
            # np.round(p, 2) as the batch path rounds it (the same arithmetic on a Python float,
            # far cheaper than a NumPy call), so both routes give the same answer.
            "probability": round(probabilities[best] * 100) / 100,
            "probabilities": dict(zip(self.model.class_names, rounded, strict=True)),
            "model_version": self.model_tag,
            "out_of_range": outside,
        }

    @overload
    def predict(self, features: np.ndarray) -> Predictions: ...
    @overload
    def predict(self, features: tuple[float, ...]) -> RowPrediction: ...
    def predict(self, features: np.ndarray | tuple[float, ...]) -> Predictions | RowPrediction:
        """Predictions for a (rows, 4) float64 array of checked flowers, or for one checked
        flower given as a tuple of 4 floats."""
        if type(features) is tuple:
            return self._predict_row(features)
        if len(features) == 1:
            row = self._predict_row(tuple(features[0].tolist()))
            outside = row.out_of_range
            return Predictions(
                np.asarray([row.probabilities], self.model.dtype),
                np.asarray([row.best]),
                lambda: [outside],
            )
        probabilities = self.model.predict_proba(features)
        best_array = probabilities.argmax(axis=1)
        # The range check, the metrics and the drift bins work feature by feature, all in single
        # precision: one float32 copy, column-major, so that each of their NumPy calls runs
        # along a feature's contiguous values rather than across rows of 4.
        columns = features.T.astype(np.float32, order="C").T
        mask = self.ranges.outside_mask(columns)
        self.metrics.record_batch(
            best_array, probabilities[np.arange(len(features)), best_array], mask
        )
        self.drift.record_batch(columns)
        predictions = Predictions(
            probabilities, best_array, partial(self.ranges.names_per_row, mask)
        )
        if self.prediction_log is not None and self.prediction_log.sampled():
            self.prediction_log.log_many(
                features, predictions.probabilities, predictions.best, predictions.out_of_range
            )
        return predictions

    def _predict_row(self, values: tuple[float, ...]) -> RowPrediction:
        # One row costs what the single-flower route costs: the bound session and the
        # per-flower metrics, not the array versions built for thousands of rows.
        probabilities, probabilities_json = self.model.predict_proba_one_json(values)
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        outside = self.ranges.outside_one(values)
        self.metrics.record_one(best, probabilities[best], outside, rows_observed=True)
        self.drift.record_one(values)
        if self.prediction_log is not None and self.prediction_log.sampled():
            # Logged as a tensor's rows are, so one row's line does not depend on how it was read.
            self.prediction_log.log_many(
                np.array([values]),
                np.asarray([probabilities], self.model.dtype),
                [best],
                [outside],
            )
        return RowPrediction(probabilities, best, outside, probabilities_json)

    def classify_many(self, features: np.ndarray) -> dict[str, Any]:
        predictions = self.predict(features)
        names = self.model.class_names
        top = predictions.probabilities[np.arange(len(features)), predictions.best_indices]
        # In float64, so that a float32 model's 0.99 is written as 0.99, not 0.9900000095367432.
        rounded = np.round(top.astype(float), 2)
        return {
            "predictions": [
                {"class": names[index], "probability": probability, "out_of_range": flagged}
                for index, probability, flagged in zip(
                    predictions.best, rounded.tolist(), predictions.out_of_range, strict=True
                )
            ],
            "model_version": self.model_tag,
        }
