"""The one `Predictor` behind every front end: the single-flower and batch routes, the Open
Inference Protocol's JSON and binary tensors, and the typed APIs Python callers use. Each
answer's probabilities, range check and model metrics therefore come from the same code,
whatever the protocol; the front ends only read requests and write answers.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Annotated, Any

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.onnx_model import OnnxClassifier
from iris_classifier.ranges import TrainingRanges
from iris_classifier.serving.contract import BatchRequest, Centimetres, IrisFeatures
from iris_classifier.serving.drift import DriftCounts
from iris_classifier.serving.metrics import ModelMetrics
from iris_classifier.serving.prediction_log import PredictionLog

# A batch's rows read as typed dicts that keep unknown fields: a third of the time pydantic
# takes for 1,000 model instances. A batch read this way with no unknown field in any row is
# one the contract accepts, with the same values (a property test holds the two together);
# any other batch is read again by the contract itself, for its exact errors.
FlowerRow = with_config(ConfigDict(extra="allow"))(
    TypedDict("FlowerRow", dict.fromkeys(FEATURE_NAMES, Centimetres))  # type: ignore[misc]
)
FastBatch = with_config(ConfigDict(extra="forbid"))(
    TypedDict(  # type: ignore[misc]
        "FastBatch",
        # The contract's own bounds on the number of flowers.
        {"flowers": Annotated[list[FlowerRow], *BatchRequest.model_fields["flowers"].metadata]},
    )
)
FAST_BATCH = TypeAdapter(FastBatch)
read_row = operator.itemgetter(*FEATURE_NAMES)
read_flower = operator.attrgetter(*FEATURE_NAMES)


def parse_batch(body: bytes) -> np.ndarray:
    """A batch request's flowers as a (rows, 4) float64 array; the contract's error if refused."""
    try:
        rows = FAST_BATCH.validate_json(body)["flowers"]
    except ValidationError:
        rows = None
    if rows is None or any(len(row) != len(FEATURE_NAMES) for row in rows):
        return features_of(BatchRequest.model_validate_json(body).flowers, read_flower)
    return features_of(rows, read_row)


def features_of(flowers: Sequence[Any], read: Callable[[Any], Iterable[float]]) -> np.ndarray:
    # One flat pass in C into a float array, in float64 as sent; the model, the range check
    # and the drift bins each read it in single precision, as the one-flower path does.
    shape = (len(flowers), len(FEATURE_NAMES))
    return np.fromiter(
        itertools.chain.from_iterable(map(read, flowers)), dtype=float, count=shape[0] * shape[1]
    ).reshape(shape)


def parse_flower(body: bytes) -> tuple[float, ...]:
    """One flower's features, in FEATURE_NAMES order; the contract's error if refused."""
    return read_flower(IrisFeatures.model_validate_json(body))


@dataclass(frozen=True)
class Predictions:
    """What the model says about (rows, 4) flowers, already counted in the model metrics."""

    probabilities: np.ndarray  # (rows, classes), in the model's precision
    best: list[int]  # index of each row's most likely class
    # Names each row's features outside the training range. Called only for an answer that
    # holds them: tensor clients rarely ask, and naming makes a Python list per row.
    name_outside: Callable[[], list[list[str]]]

    @cached_property
    def out_of_range(self) -> list[list[str]]:
        """Each row's features outside the training range, in contract order."""
        return self.name_outside()


class Predictor:
    """Answers for one flower or many from the stored classifier, with the model's metrics and
    every served value counted in its drift bin.

    `classify` and `classify_many` give the JSON objects the contract's Classification and
    BatchClassification describe, built from known-good values and so not validated again;
    `predict` gives the arrays the tensor protocol writes. A request of many flowers (a batch
    or a tensor, however many rows) is one observation of `iris_batch_rows`. With a
    `prediction_log`, a sampled request's flowers and answers are logged here, the same for
    every front end.
    """

    # How the seed routes read a body, the contract's way; the route table gets them with the
    # predictor.
    read_one = staticmethod(parse_flower)
    read_many = staticmethod(parse_batch)

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

    def classify(self, values: Sequence[float]) -> dict[str, Any]:
        probabilities = self.model.predict_proba_one(values)
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        outside = self.ranges.outside_one(values)
        self.metrics.record_one(best, probabilities[best], outside)
        self.drift.record_one(values)
        if self.prediction_log is not None and self.prediction_log.sampled():
            self.prediction_log.log_one(values, probabilities, best, outside)
        return {
            "class": self.model.class_names[best],
            # np.round(p, 2) as the batch path rounds it (same arithmetic, a tenth of the cost),
            # so both routes give the same answer.
            "probability": round(probabilities[best] * 100) / 100,
            "probabilities": {
                name: round(p, 4)
                for name, p in zip(self.model.class_names, probabilities, strict=True)
            },
            "model_version": self.model_tag,
            "out_of_range": outside,
        }

    def predict(self, features: np.ndarray) -> Predictions:
        """Predictions for a (rows, 4) float64 array of checked flowers."""
        if len(features) == 1:
            # One row costs what the single-flower route costs: the bound session and the
            # per-flower metrics, not the array versions built for thousands of rows.
            values = features[0].tolist()
            row = self.model.predict_proba_one(values)
            best = max(range(len(row)), key=row.__getitem__)
            outside = self.ranges.outside_one(values)
            self.metrics.record_one(best, row[best], outside, rows_observed=True)
            self.drift.record_one(values)
            predictions = Predictions(
                np.asarray([row], self.model.dtype), [best], lambda: [outside]
            )
        else:
            probabilities = self.model.predict_proba(features)
            best_array = probabilities.argmax(axis=1)
            mask = self.ranges.outside_mask(features)
            self.metrics.record_batch(
                best_array, probabilities[np.arange(len(features)), best_array], mask
            )
            self.drift.record_batch(features)
            predictions = Predictions(
                probabilities, best_array.tolist(), partial(self.ranges.names_per_row, mask)
            )
        if self.prediction_log is not None and self.prediction_log.sampled():
            self.prediction_log.log_many(
                features, predictions.probabilities, predictions.best, predictions.out_of_range
            )
        return predictions

    def classify_many(self, features: np.ndarray) -> dict[str, Any]:
        predictions = self.predict(features)
        names = self.model.class_names
        top = predictions.probabilities[np.arange(len(features)), predictions.best]
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
