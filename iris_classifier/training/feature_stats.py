"""Per-feature statistics of the training data, stored in the model's metadata.

The service reads `min` and `max` to say when a flower lies outside what the model was trained
on; the rest describes the data for whoever inspects the model. The quantiles are also the edges
of the drift bins (iris_classifier/drift_bins.py) the service counts served values in.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from iris_classifier.drift_bins import FeatureBins

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def feature_statistics(features: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{feature: {min, max, mean, std, q01, ..., q99}} over every row the data holds."""
    statistics: dict[str, dict[str, float]] = {}
    for name in features.columns:
        column = features[name].astype(float)
        summary = {
            "min": float(column.min()),
            "max": float(column.max()),
            "mean": float(column.mean()),
            "std": float(column.std(ddof=0)),
        }
        for key, quantile in zip(quantile_keys(), QUANTILES, strict=True):
            summary[key] = float(column.quantile(quantile))
        statistics[str(name)] = summary
    return statistics


def quantile_keys() -> list[str]:
    return [f"q{round(quantile * 100):02d}" for quantile in QUANTILES]


def drift_bins(
    features: pd.DataFrame, statistics: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, list[float]]]:
    """{feature: {edges, shares}}: bins cut at the feature's stored quantiles, with the share of
    the rows in each, counted by the rule the service counts served values by."""
    return {
        str(name): FeatureBins.counted(
            [statistics[str(name)][key] for key in quantile_keys()],
            features[name].to_numpy(dtype=float),
        ).as_metadata()
        for name in features.columns
    }
