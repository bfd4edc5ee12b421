"""Which features of a flower lie outside the range the model saw in training.

A range check, not a drift detector: it flags single flowers the model has to extrapolate
for, and says nothing about whether the mix of flowers has shifted while staying in range.

Values and bounds are compared in single precision (float32), the precision of FP32 tensors
and of the model's input: a flower at the training maximum sent as an FP32 tensor (7.9 reads
as 7.9000001) is the same flower as the one sent as JSON, and is not flagged by either.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from iris_classifier.model_format import ModelError


class MissingRangesError(ModelError):
    """The model's metadata lacks the training ranges the service reports against."""


class TrainingRanges:
    """The smallest and largest value of each feature in the model's training data."""

    def __init__(
        self, feature_names: Sequence[str], low: Sequence[float], high: Sequence[float]
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.low = tuple(float(value) for value in low)
        self.high = tuple(float(value) for value in high)
        self._low_array = np.asarray(self.low, dtype=np.float32)
        self._high_array = np.asarray(self.high, dtype=np.float32)
        # Each bound as the double its float32 is: a row rounded to float32 then compares as
        # plain floats, as the array path compares.
        self._single_low = tuple(self._low_array.tolist())
        self._single_high = tuple(self._high_array.tolist())
        self._single_row = struct.Struct(f"{len(self.feature_names)}f")
        # Every combination of flagged features, indexed by one bit per feature: a batch turns
        # its boolean matrix into one small integer per row and looks the names up.
        self._bits = 1 << np.arange(len(self.feature_names))
        self._names_by_code = [
            [name for bit, name in enumerate(self.feature_names) if code >> bit & 1]
            for code in range(1 << len(self.feature_names))
        ]

    @classmethod
    def from_metadata(
        cls, statistics: Mapping[str, Mapping[str, float]] | None, feature_names: Sequence[str]
    ) -> TrainingRanges:
        """From the `feature_stats` that train.py stores in the model's metadata."""
        statistics = statistics or {}
        missing = [name for name in feature_names if name not in statistics]
        if missing:
            raise MissingRangesError(
                f"the model's metadata has no training statistics for {', '.join(missing)}: "
                "store a model with train.py"
            )
        return cls(
            feature_names,
            [statistics[name]["min"] for name in feature_names],
            [statistics[name]["max"] for name in feature_names],
        )

    def outside_one(self, values: Sequence[float]) -> list[str]:
        """Names of one flower's features outside the training range, in contract order."""
        single = self._single_row.unpack(self._single_row.pack(*values))
        return [
            name
            for name, value, low, high in zip(
                self.feature_names, single, self._single_low, self._single_high, strict=True
            )
            if value < low or value > high
        ]

    def outside_mask(self, features: np.ndarray) -> np.ndarray:
        """(rows, features) booleans: True where a value lies outside the training range."""
        single = features.astype(np.float32, copy=False)
        return (single < self._low_array) | (single > self._high_array)

    def names_per_row(self, mask: np.ndarray) -> list[list[str]]:
        """What `outside_one` gives, for every row of a mask from `outside_mask`."""
        return [self._names_by_code[code] for code in (mask @ self._bits).tolist()]
