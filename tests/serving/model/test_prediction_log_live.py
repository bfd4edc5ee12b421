"""The prediction log of a real `bentoml serve`, read as a data scientist would: its lines
picked out of a text-format log, read by pandas, labelled, and trained on with train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from iris_classifier.flowers import FEATURE_NAMES
from tests.conftest import REPO_ROOT, serving

pytestmark = pytest.mark.integration

NAME = "prediction-log-server"
MAX_ROWS = 5
INFER = "/v2/models/iris_classifier/infer"


@pytest.fixture(scope="module")
def logging_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "IRIS_PREDICTION_LOG_RATE": "1",
        "IRIS_PREDICTION_LOG_MAX_ROWS": str(MAX_ROWS),
        "IRIS_LOG_FORMAT": "text",
    }
    with serving(tmp_path_factory, NAME, env) as url:
        yield url


@pytest.fixture(scope="module")
def server_log(logging_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / f"{NAME}0" / "serve.log"


def send(url: str, route: str, rows: np.ndarray, request_id: str) -> None:
    """`rows` of flowers by one of the four front ends (`route`: a seed path, v2-json, v2-binary)."""
    headers = {"X-Request-ID": request_id}
    named = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows.tolist()]
    if route == "/iris/classify_iris":
        response = httpx.post(f"{url}{route}", json=named[0], headers=headers)
    elif route == "/iris/classify_batch":
        response = httpx.post(f"{url}{route}", json={"flowers": named}, headers=headers)
    else:
        tensor = {"name": "flowers", "datatype": "FP64", "shape": list(rows.shape)}
        if route == "v2-json":
            document = {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}
            response = httpx.post(f"{url}{INFER}", json=document, headers=headers)
        else:
            raw = rows.astype("<f8").tobytes()
            header = json.dumps(
                {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}
            ).encode()
            headers["Inference-Header-Content-Length"] = str(len(header))
            response = httpx.post(f"{url}{INFER}", content=header + raw, headers=headers)
    assert response.status_code == 200, response.text


def prediction_lines(log: Path, request_ids: set[str], timeout: float = 10) -> Path:
    """The log's prediction lines, once one per request sent is written, in a file of their own."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if '"log":"prediction"' in line]
        if {json.loads(line)["request_id"] for line in lines} >= request_ids:
            break
        assert time.monotonic() < deadline, f"{len(lines)} prediction lines"
        time.sleep(0.1)
    path = log.with_name("predictions.jsonl")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_captured_prediction_log_labelled_is_data_train_py_takes(
    logging_server: str, server_log: Path, tmp_path: Path
) -> None:
    iris = load_iris()
    species = iris.target_names[iris.target]
    routes = ["/iris/classify_iris", "/iris/classify_batch", "v2-json", "v2-binary"]
    labels = []  # (request_id, position, species): what the data scientist knows afterwards
    start = 0
    for number in range(len(species)):
        if start >= len(species):
            break
        route = routes[number % len(routes)]
        rows = 1 if route == "/iris/classify_iris" else MAX_ROWS
        request_id = f"flowers-{number}"
        send(logging_server, route, iris.data[start : start + rows], request_id)
        labels += [(request_id, position, species[start + position]) for position in range(rows)]
        start += rows
    # One batch larger than a line shows: its first rows are logged, the rest counted.
    send(logging_server, "v2-binary", iris.data[:12], "too-many")
    sent = {request_id for request_id, _, _ in labels}

    frame = pd.read_json(
        prediction_lines(server_log, sent | {"too-many"}),
        lines=True,
        dtype={"request_id": str},
    )
    assert set(frame["route"]) == {"/iris/classify_iris", "/iris/classify_batch", INFER}
    too_many = frame[frame["request_id"] == "too-many"].iloc[0]
    assert (too_many["rows"], too_many["rows_left_out"]) == (12, 12 - MAX_ROWS)
    frame = frame[frame["request_id"].isin(sent)]
    assert (frame["rows_left_out"] == 0).all()

    flowers = frame.explode("flowers", ignore_index=True)
    flowers = flowers.drop(columns="flowers").join(pd.json_normalize(flowers["flowers"].tolist()))
    flowers["position"] = flowers.groupby("request_id").cumcount()
    known = pd.DataFrame(labels, columns=["request_id", "position", "species"])
    labelled = flowers.merge(known, on=["request_id", "position"], validate="one_to_one")
    assert len(labelled) == len(species)
    np.testing.assert_allclose(
        np.sort(labelled[list(FEATURE_NAMES)].to_numpy(), axis=0),
        np.sort(iris.data, axis=0),
    )
    data = tmp_path / "from-the-prediction-log.csv"
    labelled[[*FEATURE_NAMES, "species"]].to_csv(data, index=False)

    home = tmp_path / "bentoml"
    trained = subprocess.run(
        [sys.executable, "train.py", "--data", str(data), "--report-dir", str(tmp_path / "runs")],
        cwd=REPO_ROOT,
        env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "150 rows" in trained.stderr
    assert any((home / "models" / "iris_classifier").iterdir())
