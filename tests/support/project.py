"""What pyproject.toml says of the project, read on its own rather than through the service."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_version() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["version"]
