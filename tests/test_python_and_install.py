"""The Python `make` creates .venv with, and what `make serve` installs there.

The version check runs the Makefile for real with stand-in interpreters (each reports one
version and records whether make went on to `-m venv`); the install set is read from
pyproject.toml and compared with what the service and its training import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Reports the version in its name's suffix and records `-m venv`, then fails so make stops there.
_PYTHON_STUB = """\
#!/bin/sh
if [ "$1" = "-c" ]; then echo "{version}"; exit 0; fi
echo "$@" >> "{log}"
exit 3
"""


def stub_python(directory: Path, version: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"python{version}.calls"
    stub = directory / f"python{version}"
    stub.write_text(_PYTHON_STUB.format(version=version, log=log))
    stub.chmod(0o755)
    return stub, log


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """What the Makefile reads, without a .venv: the next make creates one."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO_ROOT / "Makefile", repo)
    shutil.copy2(REPO_ROOT / "pyproject.toml", repo)
    shutil.copytree(REPO_ROOT / "kustomize", repo / "kustomize")
    return repo


def make_install(tree: Path, python: Path | str) -> subprocess.CompletedProcess[str]:
    # As a person types it: not as a sub-make of `make test`, whose level and flags would make
    # this make name itself `make[1]` in its messages.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(
        ["make", "--no-print-directory", "install-serve", f"PYTHON={python}"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def supported_range() -> tuple[tuple[int, int], tuple[int, int]]:
    match = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", PROJECT["requires-python"])
    assert match, "requires-python is >=3.A,<3.B, the form the Makefile reads"
    return (3, int(match.group(1))), (3, int(match.group(2)))


def test_requires_python_spans_3_11_to_3_14() -> None:
    assert supported_range() == ((3, 11), (3, 15))


def test_the_python_running_the_tests_is_in_the_range() -> None:
    lowest, below = supported_range()
    assert lowest <= sys.version_info[:2] < below


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13", "3.14"])
def test_make_creates_the_venv_with_any_python_in_the_range(
    tree: Path, tmp_path: Path, version: str
) -> None:
    python, log = stub_python(tmp_path / "bin", version)
    result = make_install(tree, python)
    assert log.read_text().split() == ["-m", "venv", ".venv"], result.stderr
    assert "this project needs" not in result.stderr


@pytest.mark.parametrize("version", ["3.10", "3.15", "2.7"])
def test_make_refuses_a_python_outside_the_range_in_one_line(
    tree: Path, tmp_path: Path, version: str
) -> None:
    python, log = stub_python(tmp_path / "bin", version)
    result = make_install(tree, python)
    assert result.returncode != 0
    assert not log.exists(), "no venv may be created with it"
    (message,) = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert message == (
        f"{python} is Python {version}; this project needs a Python >=3.11,<3.15: "
        "name one with PYTHON=python3.X"
    )


def test_make_says_when_the_python_does_not_run(tree: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python3"
    result = make_install(tree, missing)
    assert result.returncode != 0
    assert f"{missing} does not run: this project needs a Python >=3.11,<3.15" in result.stderr


# --- what make serve installs -------------------------------------------------------------------

# Tools only the tests, the linter, the load test or the image build use.
TEST_TOOLS = {
    "pytest",
    "hypothesis",
    "schemathesis",
    "playwright",
    "tritonclient",
    "locust",
    "fastapi",
    "scipy",
    "uv",
    "ruff",
    "kubernetes-validate",
    "configargparse",
    "httpx2",
}


def name_of(requirement: str) -> str:
    return Requirement(requirement).name.lower()


def test_make_serve_installs_the_project_without_extras(tree: Path) -> None:
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", "PYTHON=python3"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    installs = [line for line in planned.splitlines() if " install " in line]
    assert installs, planned
    assert installs[-1].endswith("pip install --quiet -e ."), installs
    assert "[" not in " ".join(installs)


def test_no_test_tool_is_a_dependency_of_the_project() -> None:
    assert not {name_of(requirement) for requirement in PROJECT["dependencies"]} & TEST_TOOLS
    dev = {name_of(requirement) for requirement in PROJECT["optional-dependencies"]["dev"]}
    assert TEST_TOOLS - {"uv"} <= dev
    assert "iris-classifier" in dev, "dev includes the image extra (uv)"


def runtime_closure() -> set[str]:
    """The installed distributions the project's own dependencies pull in, extras left out."""
    environment = default_environment()
    pending = [Requirement(requirement) for requirement in PROJECT["dependencies"]]
    seen: set[str] = set()
    while pending:
        requirement = pending.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        seen.add(name)
        pending += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return seen


def imported_top_level_modules() -> set[str]:
    files = [REPO_ROOT / "service.py", REPO_ROOT / "train.py"]
    files += sorted((REPO_ROOT / "iris_classifier").rglob("*.py"))
    modules: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    local = {"service", "train", "iris_classifier"}
    return {module for module in modules - local if module not in sys.stdlib_module_names}


def test_everything_the_service_and_training_import_comes_with_make_serve() -> None:
    """service.py, train.py and iris_classifier/ import only what the project's dependencies
    install (directly or through theirs), so the light `make serve` runs them."""
    imported = imported_top_level_modules()
    assert {"bentoml", "onnxruntime", "sklearn", "numpy"} <= imported
    providers = importlib.metadata.packages_distributions()
    closure = runtime_closure()
    missing = {
        module: providers.get(module, ["(not installed)"])
        for module in imported
        if not {dist.lower().replace("_", "-") for dist in providers.get(module, [])} & closure
    }
    assert missing == {}
