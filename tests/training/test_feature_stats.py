"""The training statistics stored with a model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iris_classifier.training.feature_stats import QUANTILES, feature_statistics


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
