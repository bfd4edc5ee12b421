"""The drift bins stored with a model: per feature, edges cut at the training data's quantiles
and the share of the training rows that fell in each bin. train.py computes them, the service
counts every served value into the same bins, and Prometheus compares the two
(docs/monitoring.md). Training and serving both bin values here, with one rule:

- With edges e_1 < ... < e_k a feature has k + 1 bins, numbered from 0: bin 0 holds the values
  below e_1, bin i the values v with e_i <= v < e_(i+1), bin k the values at or above e_k. A
  value equal to an edge falls in the bin above it.
- Values and edges are compared in single precision (float32), the precision FP32 tensors
  arrive in: 5.1 sent as a binary FP32 tensor is 5.0999999 in double precision, and must fall
  in the bin that 5.1 sent as JSON falls in.

Measurements are discretised (the iris data's at 0.1 cm), so several quantiles are often one
value and a bin holds far from its nominal share: the stored shares are counted, never assumed,
and every one is above 0.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iris_classifier.model_format import ModelError

# The model metadata's key, and each feature's entry under it.
DRIFT_BINS = "drift_bins"
EDGES = "edges"
SHARES = "shares"
# Stored shares are counts over rows; their sum is 1 up to rounding.
SHARE_SUM_TOLERANCE = 1e-9


class DriftBinsError(ModelError):
    """The model's stored drift bins cannot be used; the message says why."""


def in_single_precision(values: Any) -> np.ndarray:
    """`values` rounded to float32 (through float64, as a JSON number is read); an array already
    in float32 is returned as it is, the rounding being its own inverse."""
    if type(values) is np.ndarray and values.dtype == np.float32:
        return values
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def bin_indices(edges: Sequence[float], values: Any) -> np.ndarray:
    """The bin of each value: how many edges lie at or below it, in single precision."""
    return np.searchsorted(in_single_precision(edges), in_single_precision(values), side="right")


@dataclass(frozen=True)
class FeatureBins:
    edges: tuple[float, ...]
    shares: tuple[float, ...]

    @classmethod
    def counted(cls, edges: Sequence[float], values: np.ndarray) -> FeatureBins:
        """Bins at these candidate edges (any order, repeats allowed) with the share of `values`
        in each; a bin no value falls in is merged into its neighbour, so every share is above
        0."""
        kept = sorted(set(float(edge) for edge in edges))
        while True:
            counts = np.bincount(bin_indices(kept, values), minlength=len(kept) + 1)
            empty = np.flatnonzero(counts == 0)
            if not len(empty):
                break
            # Dropping the bin's upper edge merges it into the bin above; the last bin has none.
            index = int(empty[0])
            del kept[index if index < len(kept) else index - 1]
        rows = int(counts.sum())
        return cls(tuple(kept), tuple(float(count) / rows for count in counts.tolist()))

    def check(self, feature: str) -> None:
        """`DriftBinsError` unless the bins are ones `counted` could have made."""
        problem = None
        if len(self.shares) != len(self.edges) + 1:
            problem = f"{len(self.edges)} edges need {len(self.edges) + 1} shares"
        elif not all(math.isfinite(edge) for edge in self.edges):
            problem = "an edge is not a finite number"
        elif np.any(np.diff(in_single_precision(self.edges)) <= 0):
            problem = "the edges do not increase"
        elif not all(share > 0 for share in self.shares):
            problem = "a share is not above 0"
        elif abs(sum(self.shares) - 1) > SHARE_SUM_TOLERANCE:
            problem = "the shares do not add up to 1"
        if problem:
            raise DriftBinsError(
                f"the model's drift bins for {feature} are unusable ({problem}): "
                "store a model with train.py"
            )

    def as_metadata(self) -> dict[str, list[float]]:
        return {EDGES: list(self.edges), SHARES: list(self.shares)}


class DriftBins:
    """Every feature's bins, in the contract's feature order."""

    def __init__(self, bins: Mapping[str, FeatureBins], feature_names: Sequence[str]) -> None:
        self.feature_names = tuple(feature_names)
        self.features = tuple(bins[name] for name in self.feature_names)
        for name, feature in zip(self.feature_names, self.features, strict=True):
            feature.check(name)
        # Each feature's edges rounded to float32 once, for `bin_indices` on many rows; and as
        # the doubles those float32 values are, so that plain float comparisons of one row
        # rounded to float32 give what the array path gives.
        self._single_edge_arrays = [in_single_precision(feature.edges) for feature in self.features]
        self._single_edges = [tuple(edges.tolist()) for edges in self._single_edge_arrays]
        self._single_row = struct.Struct(f"{len(self.feature_names)}f")

    @classmethod
    def from_metadata(
        cls,
        stored: Mapping[str, Mapping[str, Sequence[float]]] | None,
        feature_names: Sequence[str],
    ) -> DriftBins | None:
        """The bins train.py stored under DRIFT_BINS; None for a model stored before them."""
        if stored is None:
            return None
        missing = [name for name in feature_names if name not in stored]
        if missing:
            raise DriftBinsError(
                f"the model's drift bins lack {', '.join(missing)}: store a model with train.py"
            )
        try:
            bins = {
                name: FeatureBins(
                    tuple(float(edge) for edge in stored[name][EDGES]),
                    tuple(float(share) for share in stored[name][SHARES]),
                )
                for name in feature_names
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise DriftBinsError(
                f"the model's drift bins are not edges and shares ({exc!r}): "
                "store a model with train.py"
            ) from None
        return cls(bins, feature_names)

    def as_metadata(self) -> dict[str, dict[str, list[float]]]:
        return {
            name: feature.as_metadata()
            for name, feature in zip(self.feature_names, self.features, strict=True)
        }

    def row_bins(self, values: Sequence[float]) -> list[int]:
        """The bin of each feature of one flower: `column_bins` without building arrays."""
        single = self._single_row.unpack(self._single_row.pack(*values))
        return [
            bisect.bisect_right(edges, value)
            for edges, value in zip(self._single_edges, single, strict=True)
        ]

    def column_bins(self, features: np.ndarray) -> list[np.ndarray]:
        """The bin of every value of (rows, features) flowers, one array per feature. Flowers
        already in float32 are not rounded again; in a column-major array each feature's values
        lie together, as NumPy reads best."""
        single = in_single_precision(features)
        return [
            bin_indices(edges, single[:, column])
            for column, edges in enumerate(self._single_edge_arrays)
        ]
