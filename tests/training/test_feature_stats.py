"""The training statistics stored with a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iris_classifier.training.feature_stats import (
    QUANTILES,
    drift_bins,
    feature_statistics,
    quantile_keys,
)


def test_statistics_describe_each_column() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 10.0], "b": [0.5, 0.5, 0.5, 0.5]})
    statistics = feature_statistics(frame)
    assert set(statistics) == {"a", "b"}
    assert statistics["a"]["min"] == 1.0
    assert statistics["a"]["max"] == 10.0
    assert statistics["a"]["mean"] == pytest.approx(4.0)
    assert statistics["a"]["std"] == pytest.approx(np.std([1.0, 2.0, 3.0, 10.0]))
    assert statistics["b"]["std"] == 0.0
    assert statistics["a"]["q50"] == pytest.approx(2.5)
    assert [key for key in statistics["a"] if key.startswith("q")] == [
        f"q{round(q * 100):02d}" for q in QUANTILES
    ]


def test_stored_model_carries_the_bundled_datas_ranges(trained_model: str) -> None:
    import bentoml
    from sklearn.datasets import load_iris

    from iris_classifier.flowers import FEATURE_NAMES

    stored = bentoml.models.get(trained_model).info.metadata["feature_stats"]
    data = load_iris().data
    assert [stored[name]["min"] for name in FEATURE_NAMES] == pytest.approx(data.min(axis=0))
    assert [stored[name]["max"] for name in FEATURE_NAMES] == pytest.approx(data.max(axis=0))


def test_drift_bins_are_cut_at_the_stored_quantiles_with_the_shares_counted() -> None:
    """Ties put several quantiles on one value and leave bins empty: the edges are the distinct
    quantiles less those of empty bins, and each share is what the rows really hold."""
    from iris_classifier.drift_bins import bin_indices

    frame = pd.DataFrame({"a": [0.1] * 5 + [0.2] * 29 + [1.3] * 10 + [2.5] * 6})
    statistics = feature_statistics(frame)
    bins = drift_bins(frame, statistics)["a"]
    quantiles = {statistics["a"][key] for key in quantile_keys()}
    assert set(bins["edges"]) <= quantiles
    assert bins["edges"] == sorted(bins["edges"])
    counts = np.bincount(bin_indices(bins["edges"], frame["a"].to_numpy()))
    assert bins["shares"] == (counts / len(frame)).tolist()
    assert all(share > 0 for share in bins["shares"])


def test_stored_model_cuts_its_drift_bins_at_its_stored_quantiles(trained_model: str) -> None:
    import bentoml

    from iris_classifier.drift_bins import DRIFT_BINS

    metadata = bentoml.models.get(trained_model).info.metadata
    for name, bins in metadata[DRIFT_BINS].items():
        quantiles = sorted({metadata["feature_stats"][name][key] for key in quantile_keys()})
        # At most the lowest quantile goes, when it is the minimum and no value lies below it.
        assert bins["edges"] in (quantiles, quantiles[1:]), name
        assert len(bins["shares"]) == len(bins["edges"]) + 1
