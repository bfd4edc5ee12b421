"""The drift bins' one rule (iris_classifier/drift_bins.py): which bin a value falls in, the same
for one flower and for an array, and the bins train.py may store."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iris_classifier.drift_bins import DriftBins, DriftBinsError, FeatureBins, bin_indices
from iris_classifier.flowers import FEATURE_NAMES

EDGES = (4.4, 5.1, 5.8, 7.254999999999998)
SHARES = (0.1, 0.3, 0.3, 0.2, 0.1)
BINS = DriftBins(dict.fromkeys(FEATURE_NAMES, FeatureBins(EDGES, SHARES)), FEATURE_NAMES)


def test_a_value_equal_to_an_edge_falls_in_the_bin_above_it() -> None:
    values = np.asarray([4.3, 4.4, 5.0, 5.1, 5.79, 5.8, 7.25, 7.255, 99.0])
    assert bin_indices(EDGES, values).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_a_binary_fp32_value_falls_in_the_bin_of_the_same_value_sent_as_json() -> None:
    """5.1 as a float32 tensor reaches the service as 5.0999999; it is still bin 2."""
    sent_as_fp32 = np.asarray(EDGES, dtype=np.float32).astype(np.float64)
    assert (sent_as_fp32 != np.asarray(EDGES)).any()
    assert bin_indices(EDGES, sent_as_fp32).tolist() == bin_indices(EDGES, EDGES).tolist()
    assert BINS.row_bins(sent_as_fp32[:4].tolist()) == BINS.row_bins(list(EDGES))


# Edges, their float32 neighbours and arbitrary sizes, so both sides of every edge are tried.
near_edges = st.one_of(
    st.sampled_from(EDGES),
    st.sampled_from(EDGES).map(lambda edge: float(np.nextafter(np.float32(edge), np.float32(0)))),
    st.sampled_from(EDGES).map(lambda edge: float(np.nextafter(np.float32(edge), np.float32(9)))),
    st.floats(min_value=0.01, max_value=100, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(flowers=st.lists(st.tuples(*[near_edges] * len(FEATURE_NAMES)), min_size=1, max_size=30))
def test_one_flower_and_an_array_fall_in_the_same_bins(flowers) -> None:
    array = np.asarray(flowers, dtype=float)
    by_column = np.column_stack(BINS.column_bins(array)).tolist()
    assert [BINS.row_bins(flower) for flower in flowers] == by_column
    # Already in single precision, column-major, as the predictor hands a batch over.
    single_columns = array.T.astype(np.float32, order="C").T
    assert np.column_stack(BINS.column_bins(single_columns)).tolist() == by_column
    # The rule itself: how many edges lie at or below the value, both in float32.
    expected = [
        [sum(np.float32(edge) <= np.float32(value) for edge in EDGES) for value in flower]
        for flower in flowers
    ]
    assert by_column == expected


def test_counted_bins_hold_their_real_share_and_none_is_empty() -> None:
    # Heavy ties, as discretised measurements give: q01 = q05 = the minimum, q95 = q99.
    values = np.asarray([0.1] * 5 + [0.2] * 29 + [1.3] * 10 + [2.5] * 6)
    bins = FeatureBins.counted([0.1, 0.1, 0.2, 1.3, 2.5, 2.5, 2.4], values)
    # Nothing lies below 0.1 or in [2.4, 2.5): each empty bin is merged into the one above it.
    assert bins.edges == (0.2, 1.3, 2.4)
    assert bins.shares == (5 / 50, 29 / 50, 10 / 50, 6 / 50)


@pytest.mark.parametrize(
    ("edges", "shares", "problem"),
    [
        ((1.0, 2.0), (0.5, 0.5), "2 edges need 3 shares"),
        ((2.0, 1.0), (0.2, 0.3, 0.5), "do not increase"),
        # Two doubles with one float32: the bin between them could never be counted in.
        ((1.0, 1.00000001), (0.2, 0.3, 0.5), "do not increase"),
        ((1.0, float("nan")), (0.2, 0.3, 0.5), "not a finite number"),
        ((1.0, 2.0), (0.5, 0.0, 0.5), "not above 0"),
        ((1.0, 2.0), (0.5, 0.3, 0.5), "do not add up to 1"),
    ],
)
def test_unusable_bins_are_refused_naming_the_feature(edges, shares, problem) -> None:
    stored = {name: {"edges": [1.0], "shares": [0.5, 0.5]} for name in FEATURE_NAMES}
    stored["petal_width"] = {"edges": list(edges), "shares": list(shares)}
    with pytest.raises(DriftBinsError, match=f"petal_width.*{problem}"):
        DriftBins.from_metadata(stored, FEATURE_NAMES)


def test_a_model_without_drift_bins_has_none_and_one_missing_a_feature_is_refused() -> None:
    assert DriftBins.from_metadata(None, FEATURE_NAMES) is None
    stored = {name: {"edges": [1.0], "shares": [0.5, 0.5]} for name in FEATURE_NAMES[:3]}
    with pytest.raises(DriftBinsError, match="lack petal_width"):
        DriftBins.from_metadata(stored, FEATURE_NAMES)
    stored["petal_width"] = {"edges": [1.0]}
    with pytest.raises(DriftBinsError, match="not edges and shares"):
        DriftBins.from_metadata(stored, FEATURE_NAMES)
