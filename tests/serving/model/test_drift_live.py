"""Drift on a real `bentoml serve`: flowers drawn from the bundled data keep every feature's
population stability index low, the same flowers shifted by two standard deviations raise it
past the alert's threshold, and a flower counts the same whichever protocol carries it. The
index is computed from the replica's /metrics with the recording rules' own formula, floor and
threshold read from the PrometheusRule. A model stored without bins says so and exports none."""

from __future__ import annotations

import json
import math
import re
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from iris_classifier.flowers import FEATURE_NAMES
from tests.conftest import REPO_ROOT, SESSION_HOME, serving
from tests.support.live import metric_samples

pytestmark = pytest.mark.integration

RULES = REPO_ROOT / "kustomize" / "components" / "servicemonitor" / "prometheusrule.yaml"
INFER = "/v2/models/iris_classifier/infer"


def drift_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return {
        rule.get("record") or rule["alert"]: rule["expr"]
        for group in groups
        for rule in group["rules"]
        if "drift" in (rule.get("record") or rule["alert"]).lower()
    }


def share_floor() -> float:
    (floor,) = {
        float(value)
        for expr in drift_rules().values()
        for value in re.findall(r"clamp_min\([^,]+,\s*([0-9.]+)\)", expr)
    }
    return floor


def alert_threshold() -> float:
    (threshold,) = re.findall(r">\s*([0-9.]+)", drift_rules()["IrisClassifierFeatureDrift"])
    return float(threshold)


def stability_index(counts: list[float], expected: list[float], floor: float) -> float:
    """sum over bins of (served share - training share) * ln(max(served share, floor) / training
    share), as namespace_job:iris_drift_psi:* records it."""
    total = sum(counts)
    return sum(
        (count / total - share) * math.log(max(count / total, floor) / share)
        for count, share in zip(counts, expected, strict=True)
    )


def drift_samples(url: str, model_tag: str) -> tuple[dict, dict]:
    """({(feature, bin): count}, {(feature, bin): expected share}) of one model version."""
    counts, shares = {}, {}
    for name, labels, value in metric_samples(url):
        if labels.get("model_version") != model_tag:
            continue
        key = (labels["feature"], int(labels["bin"])) if "bin" in labels else None
        if name == "iris_drift_values_total":
            counts[key] = value
        elif name == "iris_drift_expected_share":
            shares[key] = value
    return counts, shares


def post(url: str, body: bytes, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def post_json(url: str, document: dict) -> None:
    post(url, json.dumps(document).encode(), {"Content-Type": "application/json"})


def send_seed_batch(url: str, flowers: np.ndarray) -> None:
    rows = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in flowers.tolist()]
    post_json(f"{url}/iris/classify_batch", {"flowers": rows})


def send_seed_singles(url: str, flowers: np.ndarray) -> None:
    for row in flowers.tolist():
        post_json(f"{url}/iris/classify_iris", dict(zip(FEATURE_NAMES, row, strict=True)))


def send_v2_json(url: str, flowers: np.ndarray) -> None:
    tensor = {"name": "flowers", "datatype": "FP32", "shape": list(flowers.shape)}
    post_json(f"{url}{INFER}", {"inputs": [{**tensor, "data": flowers.ravel().tolist()}]})


def send_v2_binary(url: str, flowers: np.ndarray) -> None:
    """FP32 binary data, as Triton's and KServe's clients send it."""
    data = struct.pack(f"<{flowers.size}f", *flowers.ravel().tolist())
    tensor = {
        "name": "flowers",
        "datatype": "FP32",
        "shape": list(flowers.shape),
        "parameters": {"binary_data_size": len(data)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    post(
        f"{url}{INFER}",
        header + data,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )


def send_every_way(url: str, flowers: np.ndarray) -> None:
    """The flowers split across every front end: seed batch and single, V2 JSON and binary."""
    batch, json_tensor, binary_tensor, one_row, singles = np.split(flowers, [400, 650, 900, 920])
    send_seed_batch(url, batch)
    send_v2_json(url, json_tensor)
    send_v2_binary(url, binary_tensor)
    for row in one_row:
        send_v2_binary(url, row[np.newaxis])
    send_seed_singles(url, singles)


@pytest.fixture(scope="module")
def drift_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(tmp_path_factory, "drift-live", {}) as url:
        yield url


@pytest.fixture(scope="module")
def bundled_flowers() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data.astype(float)


def indices_between(
    url: str, model_tag: str, send, flowers: np.ndarray, floor: float
) -> dict[str, float]:
    before, shares = drift_samples(url, model_tag)
    send(url, flowers)
    after, _ = drift_samples(url, model_tag)
    indices = {}
    for feature in FEATURE_NAMES:
        bins = sorted(index for name, index in shares if name == feature)
        assert bins == list(range(len(bins))), feature
        counts = [after[feature, index] - before.get((feature, index), 0.0) for index in bins]
        assert sum(counts) == len(flowers), feature
        indices[feature] = stability_index(
            counts, [shares[feature, index] for index in bins], floor
        )
    return indices


def test_drawn_flowers_keep_the_index_low_and_shifted_ones_raise_it_past_the_threshold(
    drift_server: str, trained_model: str, bundled_flowers: np.ndarray
) -> None:
    floor, threshold = share_floor(), alert_threshold()
    drawn = bundled_flowers[np.random.default_rng(29).integers(0, len(bundled_flowers), 1_000)]
    shifted = drawn + 2 * bundled_flowers.std(axis=0)

    alike = indices_between(drift_server, trained_model, send_every_way, drawn, floor)
    drifted = indices_between(drift_server, trained_model, send_every_way, shifted, floor)

    assert max(alike.values()) < threshold / 4, alike
    assert min(drifted.values()) > threshold, drifted


def test_a_flower_counts_the_same_sent_as_seed_json_or_as_a_binary_fp32_tensor(
    drift_server: str, trained_model: str, bundled_flowers: np.ndarray
) -> None:
    deltas = []
    for send in (send_seed_batch, send_v2_binary, send_v2_json, send_seed_singles):
        before, _ = drift_samples(drift_server, trained_model)
        send(drift_server, bundled_flowers)
        after, _ = drift_samples(drift_server, trained_model)
        deltas.append({key: after[key] - before.get(key, 0.0) for key in after})
    assert all(delta == deltas[0] for delta in deltas), deltas


@pytest.fixture(scope="module")
def model_without_bins(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BentoML home whose model was stored before train.py stored drift bins."""
    from iris_classifier.drift_bins import DRIFT_BINS
    from tests.support.model_store import copy_store, edit_metadata

    home = tmp_path_factory.mktemp("model-without-bins")
    edit_metadata(copy_store(SESSION_HOME, home), **{DRIFT_BINS: None})
    return home


def test_a_model_without_bins_is_served_saying_once_that_drift_is_not_measured(
    model_without_bins: Path, tmp_path: Path
) -> None:
    from harness.processes import bentoml_serve_command, running_on_free_port

    log = tmp_path / "serve.log"
    with running_on_free_port(
        bentoml_serve_command,
        env={"BENTOML_HOME": str(model_without_bins)},
        log_path=log,
        cwd=REPO_ROOT,
        timeout=90,
    ) as (_, url):
        post_json(f"{url}/iris/classify_iris", dict.fromkeys(FEATURE_NAMES, 5.0))
        exported = {name for name, _, _ in metric_samples(url)}
    warnings = [line for line in log.read_text().splitlines() if "drift is not measured" in line]
    assert len(warnings) == 1, log.read_text()[-3000:]
    assert "WARNING" in warnings[0]
    assert "retrain it with train.py" in warnings[0]
    assert "iris_predictions_total" in exported
    assert not {name for name in exported if name.startswith("iris_drift")}
