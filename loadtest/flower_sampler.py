"""Realistic request bodies: real iris flowers with a little measurement noise.

Sampling the bundled data keeps the three species and their feature correlations, so the load
exercises every class the model answers; the noise keeps identical bodies from being answered
from any cache along the way.
"""

from __future__ import annotations

import random

from iris_classifier.flowers import FEATURE_NAMES, MAX_FEATURE_CM
from iris_classifier.training.data import load_bundled

# A ruler reading is good to about a millimetre.
NOISE_CM = 0.1
# The API refuses 0; the smallest iris petal on record is about this wide.
MIN_FEATURE_CM = 0.1


class FlowerSampler:
    """Draws flowers, each a dict of the four features in cm, from its own random stream."""

    def __init__(self, seed: int | None = None, digits: int | None = 2) -> None:
        """`digits`: decimals each value is rounded to (None: unrounded, as float64 is written)."""
        data = load_bundled()
        self._rows: list[tuple[float, ...]] = [
            tuple(float(value) for value in row) for row in data.features.itertuples(index=False)
        ]
        self._random = random.Random(seed)
        self._digits = digits

    def flower(self) -> dict[str, float]:
        """A real flower of the bundled data, each value moved by a ruler's error."""
        row = self._random.choice(self._rows)
        values = (min(MAX_FEATURE_CM, max(MIN_FEATURE_CM, value + self._noise())) for value in row)
        return {
            name: value if self._digits is None else round(value, self._digits)
            for name, value in zip(FEATURE_NAMES, values, strict=True)
        }

    def flowers(self, count: int) -> list[dict[str, float]]:
        return [self.flower() for _ in range(count)]

    def _noise(self) -> float:
        return self._random.gauss(0.0, NOISE_CM)
