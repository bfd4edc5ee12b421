"""The tools a user runs (loadtest/, benchmarks/, image/) never import the tests.

Tests may use the tools, never the other way round: a tool that needs a helper gets it from
its own folder (the process helpers and the container runner live in benchmarks/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.imports import imported_modules

TOOL_FILES = sorted(
    path
    for folder in ("loadtest", "benchmarks", "image")
    for path in (REPO_ROOT / folder).rglob("*.py")
)


def test_the_check_reads_every_tool() -> None:
    folders = {path.relative_to(REPO_ROOT).parts[0] for path in TOOL_FILES}
    assert folders == {"loadtest", "benchmarks", "image"}


@pytest.mark.parametrize("path", TOOL_FILES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_tool_imports_nothing_from_the_tests(path: Path) -> None:
    found = imported_modules(path, REPO_ROOT)
    assert sorted(name for name in found if name == "tests" or name.startswith("tests.")) == []
