"""A Python snippet run in a fresh interpreter from the repository's root, for what only a new
process shows (its imports, its logging set-up), and the JSON report it prints last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def python_report(code: str, failing: str = "the snippet failed", timeout: float = 120) -> Any:
    """The JSON value on the last line `code` prints; `failing` leads the assertion's message,
    with the end of what the snippet wrote to stderr, if it exits with an error."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{failing}: {done.stderr[-400:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])
