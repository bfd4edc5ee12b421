"""Shared fixtures: one trained model in a temporary BentoML store, and ways to reach the service.

BENTOML_HOME is read when bentoml is first imported, so it is pointed at a temporary
directory here, before any test module imports bentoml, and removed when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris_classifier.flowers import FEATURE_NAMES
from iris_classifier.serving.protocols.contract import SAMPLE_FLOWER

SESSION_HOME = Path(tempfile.mkdtemp(prefix="iris-bentoml-home-"))
os.environ["BENTOML_HOME"] = str(SESSION_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a person reads after the run besides the terminal: `make test` writes its JUnit report
# here, and tests leave their artifacts (the API page's screenshot) beside it.
REPORT_DIR = REPO_ROOT / "build" / "test-report"
SEED_FLOWER = SAMPLE_FLOWER
# The same flower as an Open Inference Protocol request (a 1 x 4 tensor in feature order).
SEED_TENSOR_REQUEST = {
    "inputs": [
        {
            "name": "flowers",
            "datatype": "FP32",
            "shape": [1, len(FEATURE_NAMES)],
            "data": [SEED_FLOWER[name] for name in FEATURE_NAMES],
        }
    ]
}


# The one rule for "running in CI", used by every test that needs a tool: CI=true (as CI
# services set it), 1 or yes, in any case.
CI_VALUES = ("1", "true", "yes")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def require(condition: bool, reason: str) -> None:
    """Skip when a tool the test needs is missing, but fail under CI, where it must be there."""
    if condition:
        return
    if under_ci():
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _remove_session_home() -> Iterator[None]:
    yield
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def report_dir() -> Path:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    return REPORT_DIR


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tag of a model trained on the bundled data into the session's BentoML store."""
    import bentoml

    import train

    reports = tmp_path_factory.mktemp("reports")
    assert train.main(["--report-dir", str(reports)]) == 0
    return str(bentoml.models.get("iris_classifier:latest").tag)


@pytest.fixture(scope="session")
def service_image(trained_model: str) -> str:
    """The image `make image` builds from this checkout and the session's model, by the content
    reference it prints: never whatever another build left under the shared version tag.

    Built once per session for every test that runs the image; without Docker or a base image
    the tests that need it skip, except under CI=true, where they fail.
    """
    from tests.support.image import build_image, why_no_image_can_be_built

    reason = why_no_image_can_be_built()
    require(reason is None, reason or "")
    return build_image(SESSION_HOME)


@pytest.fixture(scope="session")
def service_class(trained_model: str):
    """The decorated IrisClassifier, imported once a model is stored."""
    from service import IrisClassifier

    return IrisClassifier


@pytest.fixture(scope="session")
def service_client(service_class) -> Iterator:
    """Starlette TestClient over the service's ASGI app (lifespan run, so the model is loaded)."""
    from starlette.testclient import TestClient

    with TestClient(service_class.to_asgi()) as client:
        yield client


@pytest.fixture(scope="session")
def live_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real `bentoml serve` subprocess with POD_NAME=live-replica-1."""
    with serving(tmp_path_factory, "live-server", {"POD_NAME": "live-replica-1"}) as url:
        yield url


@contextlib.contextmanager
def serving(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    env: dict[str, str],
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """A real `bentoml serve` of the session's model store on a free port, logging to
    `<name>/serve.log`, with a BentoML home of its own (so /metrics counts only its requests);
    `args` go to `bentoml serve`."""
    from harness.processes import bentoml_serve_command, private_bentoml_home, running_on_free_port

    log = tmp_path_factory.mktemp(name) / "serve.log"
    home = private_bentoml_home(log.with_name("bentoml-home"))
    with running_on_free_port(
        lambda port: [*bentoml_serve_command(port), *args],
        env={**env, "BENTOML_HOME": str(home)},
        log_path=log,
        cwd=REPO_ROOT,
        timeout=90,
    ) as (_, url):
        yield url


@pytest.fixture(scope="session")
def live_server_log(live_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The log file the live server writes to."""
    return tmp_path_factory.getbasetemp() / "live-server0" / "serve.log"
