"""The prediction log: what a sampled request asked and what it was answered, one JSON line each
(the line and its settings: iris_classifier/serving/README.md#the-prediction-log).

The `Predictor` asks `sampled()` once per request and hands a sampled request's flowers and
answers to `log_one` or `log_many`, so every protocol is logged alike. Every string is written
by `json.dumps` with ASCII escapes, class names (the training data's) cut to a budget, so no
value can end the line or add a field; the flowers are numbers the contract has checked.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from typing import Any

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.serving.http.request_context import CURRENT_REQUEST, clip

LOGGER_NAME = "iris_classifier.predictions"
MAX_NAME_CHARS = 64
MAX_TAG_CHARS = 128

logger = logging.getLogger(LOGGER_NAME)


class PredictionLog:
    """Sampling and the lines of the prediction log for one served model."""

    def __init__(
        self, rate: float, max_rows: int, class_names: Sequence[str], model_tag: str
    ) -> None:
        self.rate = rate
        self.max_rows = max_rows
        self.class_names = [clip(str(name), MAX_NAME_CHARS) for name in class_names]
        self.model_tag = clip(model_tag, MAX_TAG_CHARS)

    def sampled(self) -> bool:
        return random.random() < self.rate

    def log_one(
        self, values: Sequence[float], probabilities: Sequence[float], best: int, outside: list[str]
    ) -> None:
        self._log([list(values)], [[round(p, 4) for p in probabilities]], [best], [outside], 1)

    def log_many(
        self, features: Any, probabilities: Any, best: Sequence[int], outside: Sequence[list[str]]
    ) -> None:
        """Log (rows, 4) `features` and their (rows, classes) `probabilities` (NumPy arrays)."""
        shown = self.max_rows
        self._log(
            features[:shown].tolist(),
            probabilities[:shown].astype(float).round(4).tolist(),
            best[:shown],
            outside[:shown],
            len(features),
        )

    def _log(
        self,
        features: list[list[float]],
        probabilities: list[list[float]],
        best: Sequence[int],
        outside: Sequence[list[str]],
        rows: int,
    ) -> None:
        names = self.class_names
        request = CURRENT_REQUEST.get()
        entry = {
            "request_id": request.request_id if request else None,
            "route": request.path if request else None,
            "model_version": self.model_tag,
            "rows": rows,
            "rows_left_out": rows - len(features),
            "flowers": [
                {
                    **dict(zip(FEATURE_NAMES, row, strict=True)),
                    "class": names[index],
                    "probabilities": dict(zip(names, row_probabilities, strict=True)),
                    "out_of_range": flagged,
                }
                for row, row_probabilities, index, flagged in zip(
                    features, probabilities, best, outside, strict=True
                )
            ],
        }
        logger.info("prediction", extra={"prediction": entry})


class PredictionLineFormatter(logging.Formatter):
    """A prediction record as one JSON line; its time and replica as every line has them."""

    def __init__(self, replica: str, timestamp: Any) -> None:
        super().__init__()
        self.replica = clip(replica, 128)
        self.timestamp = timestamp

    def format(self, record: logging.LogRecord) -> str:
        entry = getattr(record, "prediction", None)
        if not isinstance(entry, dict):  # another record sent to this logger: its message only
            entry = {"message": clip(record.getMessage(), 2000)}
        # "log" tells a prediction line from every other line of the process.
        time = self.timestamp(record.created)
        head = {"log": "prediction", "time": time, "replica": self.replica}
        # ensure_ascii: a newline, a line separator or an escape in any string (a class name
        # from the training data, say) is written as a \u escape, never as itself.
        return json.dumps({**head, **entry}, ensure_ascii=True, separators=(",", ":"))
