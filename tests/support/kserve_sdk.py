"""KServe's Python SDK (kserve 0.21) in a virtual environment of its own: build/kserve-venv.

kserve pins pandas<3 and psutil<6, which the project's .venv cannot share, so the tests that
drive KServe's client, or check manifests against KServe's models, run a small script with that
environment's Python (`run_script`). The environment is built from the pinned
`kserve-requirements.txt` beside this file, and rebuilt when that file changes:

    python -m tests.support.kserve_sdk      # what `make kserve-sdk` (and `make test`) runs

Outside CI a test skips when the environment cannot be built (no package index); under CI=true
it fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT_DIR = Path(__file__).resolve().parent
REQUIREMENTS = SUPPORT_DIR / "kserve-requirements.txt"
VENV = REPO_ROOT / "build" / "kserve-venv"
# Holds the hash of the requirements the environment was built from.
STAMP = VENV / ".installed"
PYTHON = VENV / "bin" / "python"
PIP_TIMEOUT_S = 900


class SdkUnavailable(RuntimeError):
    """The environment could not be built (no package index, pip failed)."""


def requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_current() -> bool:
    return (
        PYTHON.is_file() and STAMP.is_file() and STAMP.read_text().strip() == requirements_digest()
    )


def ensure() -> Path:
    """The environment's Python, building the environment first when it is missing or stale."""
    if is_current():
        return PYTHON
    logger.info("building %s from %s", VENV, REQUIREMENTS.name)
    shutil.rmtree(VENV, ignore_errors=True)
    steps = (
        [sys.executable, "-m", "venv", str(VENV)],
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
    )  # fmt: skip
    for step in steps:
        try:
            result = subprocess.run(
                step, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise SdkUnavailable(
                f"{' '.join(step[:4])} timed out after {PIP_TIMEOUT_S} s"
            ) from error
        if result.returncode != 0:
            raise SdkUnavailable(
                f"{' '.join(step[:4])} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
            )
    STAMP.write_text(requirements_digest() + "\n")
    return PYTHON


def python_for_tests() -> Path:
    """`ensure()` for a test: skips when the environment cannot be built, fails under CI."""
    # Imported here: `python -m tests.support.kserve_sdk` must not set up the test session.
    from tests.conftest import require

    try:
        return ensure()
    except SdkUnavailable as error:
        require(False, f"KServe's SDK environment {VENV}: {error}")
        raise


def run_script(script: Path, *args: str, timeout: float = 120) -> Any:
    """Run `script` with the environment's Python and return the JSON it prints on stdout.

    A script that exits non-zero fails with its stderr: it reports what it saw as JSON and
    leaves the judging to the test.
    """
    python = python_for_tests()
    result = subprocess.run(
        [str(python), str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{script.name} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}"
        )
    return json.loads(result.stdout)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        python = ensure()
    except SdkUnavailable as error:
        logger.error("cannot build %s: %s", VENV, error)
        return 1
    logger.info("%s is current (%s)", VENV.relative_to(REPO_ROOT), python.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
