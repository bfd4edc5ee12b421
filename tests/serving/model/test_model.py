"""Start-up checks of the served ONNX model: every bad model is refused in one clear line.

Each case is checked twice: by `load` directly, and by a real `bentoml serve`, which must
exit non-zero with that one line (no traceback) and never answer its readiness probe.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from harness.processes import bentoml_serve_command, free_port, start, stop_tree
from iris_classifier.flowers import CLASS_NAMES, FEATURE_NAMES
from iris_classifier.model_format import ModelError
from iris_classifier.onnx_model import load
from tests.conftest import REPO_ROOT, SESSION_HOME
from tests.support.model_store import BAD_MODEL_CASES, break_model, copy_store, stored_metadata

pytestmark = pytest.mark.usefixtures("trained_model")


def test_good_model_loads_and_answers_like_its_batch_path(tmp_path: Path) -> None:
    model_dir = copy_store(SESSION_HOME, tmp_path)
    classifier = load(model_dir, stored_metadata(model_dir), FEATURE_NAMES)
    rows = np.random.default_rng(3).uniform(0.1, 10, size=(50, 4))
    batch = classifier.predict_proba(rows)
    # The single-flower path reuses one bound buffer: every call must see its own flower.
    singles = np.array([classifier.predict_proba_one(tuple(row)) for row in rows])
    np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-5)
    assert classifier.class_names == CLASS_NAMES


def test_one_flower_with_its_json_answers_as_the_list_and_a_float32_array(
    tmp_path: Path,
) -> None:
    model_dir = copy_store(SESSION_HOME, tmp_path)
    classifier = load(model_dir, stored_metadata(model_dir), FEATURE_NAMES)
    rows = np.random.default_rng(4).uniform(0.1, 10, size=(50, 4))
    for row in map(tuple, rows):
        probabilities, text = classifier.predict_proba_one_json(row)
        assert probabilities == classifier.predict_proba_one(row)
        expected = orjson.dumps(
            np.array(probabilities, np.float32), option=orjson.OPT_SERIALIZE_NUMPY
        )
        assert text == expected, row
    # train.py stores no model that computes in double precision: its output row is stood in
    # for, and written in single precision all the same.
    classifier.dtype = np.float64
    classifier._probabilities_row = np.array(probabilities, np.float64) / 3
    thirds = classifier._probabilities_row.tolist()
    expected = orjson.dumps(np.array(thirds, np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
    assert classifier.predict_proba_one_json(row) == (thirds, expected)


@pytest.mark.parametrize("case", BAD_MODEL_CASES)
def test_bad_model_is_refused_by_load(tmp_path: Path, case: str) -> None:
    model_dir = copy_store(SESSION_HOME, tmp_path)
    expected = break_model(model_dir, case)
    with pytest.raises(ModelError) as refused:
        load(model_dir, stored_metadata(model_dir), FEATURE_NAMES)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.integration
@pytest.mark.parametrize("case", BAD_MODEL_CASES)
def test_bentoml_serve_exits_with_one_line_on_a_bad_model(tmp_path: Path, case: str) -> None:
    home = tmp_path / "home"
    expected = break_model(copy_store(SESSION_HOME, home), case)
    log = tmp_path / "serve.log"
    process = start(
        bentoml_serve_command(free_port()),
        env={"BENTOML_HOME": str(home)},
        log_path=log,
        cwd=REPO_ROOT,
    )
    try:
        exit_status = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        exit_status = None  # still running: it never gave up on the model
    finally:
        stop_tree(process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    output = log.read_text()
    assert exit_status not in (None, 0), output[-2000:]
    refusals = [line for line in output.splitlines() if "refusing to serve" in line]
    assert len(refusals) == 1, output[-2000:]
    assert expected in refusals[0]
    assert "Traceback" not in output


def test_session_runs_with_one_intra_op_and_one_inter_op_thread(tmp_path: Path) -> None:
    model_dir = copy_store(SESSION_HOME, tmp_path)
    options = load(
        model_dir, stored_metadata(model_dir), FEATURE_NAMES
    ).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_onnx_runtime_starts_without_its_telemetry(trained_model: str) -> None:
    """Loading the model must not start ONNX Runtime's telemetry client, which phones home and,
    with no writable home for its device ID, writes a warning line into the service's log."""
    import os
    import subprocess
    import sys

    import bentoml

    from tests.conftest import REPO_ROOT

    model_file = Path(bentoml.models.get(trained_model).path) / "model.onnx"
    probe = (
        "import iris_classifier.onnx_model as onnx_model, onnxruntime; "
        f"onnxruntime.InferenceSession({str(model_file)!r}, onnx_model.session_options())"
    )
    env = {key: value for key, value in os.environ.items() if key != "ORT_DISABLE_TELEMETRY"}
    # Nothing can be written under /proc, even by root: as on the image's read-only root.
    env["HOME"] = "/proc/no-home"
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    assert "telemetry" not in completed.stderr.lower(), completed.stderr
