"""The tools a user runs (loadtest/, benchmarks/, image/, cluster/) and the code they share (harness/)
never import the tests, and the shared code imports none of the tools.

Tests may use the tools, never the other way round: a tool that needs a helper gets it from
its own folder, or from harness/ when several tools need it (the process helpers, the
container runner, the Deployment reader and the pod emulation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.imports import imported_modules

TOOLS = ("loadtest", "benchmarks", "image", "cluster")
SHARED = "harness"

TOOL_FILES = sorted(
    path for folder in (*TOOLS, SHARED) for path in (REPO_ROOT / folder).rglob("*.py")
)
SHARED_FILES = sorted((REPO_ROOT / SHARED).rglob("*.py"))


def file_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def imports_from(found: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(name for name in found if name.split(".")[0] in packages)


def test_the_check_reads_every_tool_and_the_shared_code() -> None:
    folders = {path.relative_to(REPO_ROOT).parts[0] for path in TOOL_FILES}
    assert folders == {*TOOLS, SHARED}


@pytest.mark.parametrize("path", TOOL_FILES, ids=file_id)
def test_tool_imports_nothing_from_the_tests(path: Path) -> None:
    assert imports_from(imported_modules(path, REPO_ROOT), ("tests",)) == []


@pytest.mark.parametrize("path", SHARED_FILES, ids=file_id)
def test_shared_code_imports_no_tool(path: Path) -> None:
    assert imports_from(imported_modules(path, REPO_ROOT), TOOLS) == []
