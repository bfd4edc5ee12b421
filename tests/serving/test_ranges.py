"""The out-of-range check, against a plain comparison with the training data's extremes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.ranges import MissingRangesError, TrainingRanges

LOW = (4.3, 2.0, 1.0, 0.1)
HIGH = (7.9, 4.4, 6.9, 2.5)
RANGES = TrainingRanges(FEATURE_NAMES, LOW, HIGH)
# Values that straddle the bounds often, so both sides of each comparison are exercised.
near_bounds = st.one_of(
    st.sampled_from([*LOW, *HIGH]),
    st.floats(min_value=0.01, max_value=100, allow_nan=False),
    st.floats(min_value=0.0, max_value=9.0, allow_nan=False, exclude_min=True),
)
flower = st.tuples(near_bounds, near_bounds, near_bounds, near_bounds)


def expected_flags(values) -> list[str]:
    return [
        name
        for name, value, low, high in zip(FEATURE_NAMES, values, LOW, HIGH, strict=True)
        if not low <= value <= high
    ]


@settings(max_examples=300, deadline=None)
@given(flowers=st.lists(flower, min_size=1, max_size=40))
def test_single_and_batch_checks_agree_with_a_plain_comparison(flowers) -> None:
    expected = [expected_flags(values) for values in flowers]
    assert [RANGES.outside_one(values) for values in flowers] == expected
    mask = RANGES.outside_mask(np.asarray(flowers, dtype=float))
    assert RANGES.names_per_row(mask) == expected


def test_ranges_come_from_the_models_metadata() -> None:
    statistics = {
        name: {"min": low, "max": high, "mean": 0.0}
        for name, low, high in zip(FEATURE_NAMES, LOW, HIGH, strict=True)
    }
    ranges = TrainingRanges.from_metadata(statistics, FEATURE_NAMES)
    assert (ranges.low, ranges.high) == (LOW, HIGH)


@pytest.mark.parametrize("statistics", [None, {}, {"sepal_length": {"min": 1, "max": 2}}])
def test_a_model_without_ranges_is_refused_naming_the_features(statistics) -> None:
    with pytest.raises(MissingRangesError, match="petal_width"):
        TrainingRanges.from_metadata(statistics, FEATURE_NAMES)
