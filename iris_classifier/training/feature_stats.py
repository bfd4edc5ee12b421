"""Per-feature statistics of the training data, stored in the model's metadata.

The service reads `min` and `max` to say when a flower lies outside what the model was trained
on; the rest describes the data for whoever inspects the model.
"""

from __future__ import annotations

import pandas as pd

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
        for quantile in QUANTILES:
            summary[f"q{round(quantile * 100):02d}"] = float(column.quantile(quantile))
        statistics[str(name)] = summary
    return statistics
