"""Drift counts: the served values of each feature counted in its drift bin, the same for every
front end, and nothing counted for a model stored without bins."""

from __future__ import annotations

import json
import logging
import struct

import numpy as np
import prometheus_client
import pytest

from iris_classifier.drift_bins import DRIFT_BINS, DriftBins
from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.serving.model.drift import DriftCounts
from tests.serving.telemetry.test_metrics import delta, snapshot


@pytest.fixture(scope="module")
def stored_bins(trained_model: str) -> DriftBins:
    import bentoml

    bins = DriftBins.from_metadata(
        bentoml.models.get(trained_model).info.metadata[DRIFT_BINS], FEATURE_NAMES
    )
    assert bins is not None
    return bins


@pytest.fixture(scope="module")
def bundled_flowers() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data.astype(float)


def drift_deltas(before: dict, after: dict, model_tag: str, bins: DriftBins) -> list[list[float]]:
    """Per feature, what each of its bins counted between two snapshots."""
    return [
        [
            delta(
                before,
                after,
                "iris_drift_values_total",
                model_version=model_tag,
                feature=name,
                bin=str(index),
            )
            for index in range(len(feature.shares))
        ]
        for name, feature in zip(bins.feature_names, bins.features, strict=True)
    ]


def test_the_training_data_served_again_reproduces_the_stored_shares_exactly(
    stored_bins: DriftBins, bundled_flowers: np.ndarray
) -> None:
    """Bins cut at other quantiles than the stored ones, or a value on an edge put on the other
    side of it at training than in serving, give other counts: the shares would not be the
    training data's, and a stream exactly like it would look drifted."""
    counts = DriftCounts(stored_bins, model_tag="iris_classifier:reproduced")
    start = snapshot()
    counts.record_batch(bundled_flowers)
    batched = snapshot()
    for row in bundled_flowers.tolist():
        counts.record_one(row)
    one_by_one = snapshot()

    rows = len(bundled_flowers)
    by_batch = drift_deltas(start, batched, "iris_classifier:reproduced", stored_bins)
    assert by_batch == drift_deltas(batched, one_by_one, "iris_classifier:reproduced", stored_bins)
    for feature, counted in zip(stored_bins.features, by_batch, strict=True):
        assert [count / rows for count in counted] == list(feature.shares)
    exported = {
        labels: value
        for (name, labels), value in one_by_one.items()
        if name == "iris_drift_expected_share"
        and ("model_version", "iris_classifier:reproduced") in labels
    }
    assert sorted(exported.values()) == sorted(
        share for feature in stored_bins.features for share in feature.shares
    )


def test_a_model_without_bins_says_so_once_and_exports_no_bins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="iris_classifier.drift"):
        counts = DriftCounts(None, model_tag="iris_classifier:old")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "iris_classifier:old" in message
    assert "drift is not measured" in message
    assert "train.py" in message
    counts.record_one([5.1, 3.5, 1.4, 0.2])
    counts.record_batch(np.ones((3, len(FEATURE_NAMES))))
    exposition = prometheus_client.generate_latest().decode()
    assert 'model_version="iris_classifier:old"' not in exposition


def tensor_request(flowers: np.ndarray, *, binary: bool) -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol request for `flowers` as FP32, in JSON or binary."""
    tensor = {"name": "flowers", "datatype": "FP32", "shape": list(flowers.shape)}
    if not binary:
        tensor["data"] = flowers.ravel().tolist()
        return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}
    data = struct.pack(f"<{flowers.size}f", *flowers.ravel().tolist())
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + data, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def test_every_front_end_counts_the_same_flowers_in_the_same_bins(
    service_client, trained_model: str, stored_bins: DriftBins, bundled_flowers: np.ndarray
) -> None:
    """Seed single and batch, V2 JSON and binary FP32 tensors, one row or many: the same counts.
    Binary FP32 carries 5.1 as 5.0999999; it still falls in the bin of 5.1 sent as JSON."""
    rows = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in bundled_flowers.tolist()]
    infer = "/v2/models/iris_classifier/infer"

    def single() -> None:
        for row in rows:
            assert service_client.post("/iris/classify_iris", json=row).status_code == 200

    def batch() -> None:
        response = service_client.post("/iris/classify_batch", json={"flowers": rows})
        assert response.status_code == 200

    def tensors(binary: bool, per_request: int) -> None:
        for start in range(0, len(bundled_flowers), per_request):
            body, headers = tensor_request(
                bundled_flowers[start : start + per_request], binary=binary
            )
            assert service_client.post(infer, content=body, headers=headers).status_code == 200

    counted = []
    for send in (
        single,
        batch,
        lambda: tensors(binary=False, per_request=50),
        lambda: tensors(binary=True, per_request=50),
        lambda: tensors(binary=True, per_request=1),
    ):
        before = snapshot()
        send()
        counted.append(drift_deltas(before, snapshot(), trained_model, stored_bins))
    expected = [
        [round(share * len(rows)) for share in feature.shares] for feature in stored_bins.features
    ]
    assert counted == [expected] * len(counted)
