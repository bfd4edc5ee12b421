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
    """A plain comparison in single precision, the precision the model reads."""
    return [
        name
        for name, value, low, high in zip(FEATURE_NAMES, values, LOW, HIGH, strict=True)
        if not np.float32(low) <= np.float32(value) <= np.float32(high)
    ]


@settings(max_examples=300, deadline=None)
@given(flowers=st.lists(flower, min_size=1, max_size=40))
def test_single_and_batch_checks_agree_with_a_plain_comparison(flowers) -> None:
    expected = [expected_flags(values) for values in flowers]
    assert [RANGES.outside_one(values) for values in flowers] == expected
    mask = RANGES.outside_mask(np.asarray(flowers, dtype=float))
    assert RANGES.names_per_row(mask) == expected


def test_a_flower_at_the_bounds_is_in_range_as_json_and_as_an_fp32_tensor() -> None:
    """An FP32 tensor's 7.9 reads as 7.9000001 in float64: still the training maximum."""
    as_json = np.asarray([LOW, HIGH], dtype=float)
    as_fp32 = as_json.astype(np.float32).astype(float)
    assert as_fp32[1, 0] > HIGH[0]
    for rows in (as_json, as_fp32):
        assert RANGES.names_per_row(RANGES.outside_mask(rows)) == [[], []]
        assert [RANGES.outside_one(row) for row in rows.tolist()] == [[], []]
    # One float32 step past a bound is outside, on both paths.
    past = as_json.copy()
    past[1, 0] = float(np.nextafter(np.float32(HIGH[0]), np.float32(np.inf)))
    past[0, 3] = float(np.nextafter(np.float32(LOW[3]), np.float32(0)))
    expected = [["petal_width"], ["sepal_length"]]
    assert RANGES.names_per_row(RANGES.outside_mask(past)) == expected
    assert [RANGES.outside_one(row) for row in past.tolist()] == expected


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
