"""Only iris_classifier/serving/seam.py reaches into BentoML's, Starlette's, prometheus_client's
and uvicorn's insides: no other module imports their private modules, reads a `_private`
attribute of a name imported from them, or names one in `getattr` and its kin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.imports import imported_modules

SEAM = REPO_ROOT / "iris_classifier" / "serving" / "seam.py"
MODULES = sorted(
    path
    for path in [*(REPO_ROOT / "iris_classifier").rglob("*.py"), REPO_ROOT / "service.py"]
    if path != SEAM
)
LIBRARIES = (
    "bentoml",
    "_bentoml_impl",
    "_bentoml_sdk",
    "starlette",
    "prometheus_client",
    "uvicorn",
)
PRIVATE_MODULES = ("bentoml._internal", "_bentoml_impl", "_bentoml_sdk", "uvicorn.protocols")
ATTRIBUTE_CALLS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def of(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def library_names(tree: ast.AST) -> set[str]:
    """The names a module binds to the libraries' modules and objects by importing them."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if of(alias.name, LIBRARIES):
                    names.add(alias.asname or alias.name.split(".")[0])
        elif (
            isinstance(node, ast.ImportFrom) and not node.level and of(node.module or "", LIBRARIES)
        ):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_imports(path: Path) -> list[str]:
    return sorted(
        module for module in imported_modules(path, REPO_ROOT) if of(module, PRIVATE_MODULES)
    )


def private_attributes(source: str) -> list[str]:
    """Each `_private` attribute of the libraries `source` reads or names, as `line: what`."""
    tree = ast.parse(source)
    names = library_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and root_name(node) in names:
            found.append(f"{node.lineno}: .{node.attr} of {root_name(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_CALLS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and private(node.args[1].value)
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_the_check_reads_every_module_and_finds_the_seams_own_imports() -> None:
    assert {path.name for path in MODULES} >= {"service.py", "edge.py", "routes.py", "logs.py"}
    assert {"bentoml._internal.server.http.traffic", "uvicorn.protocols.http.httptools_impl"} <= {
        *private_imports(SEAM)
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_only_the_seam_reaches_into_the_frameworks(path: Path) -> None:
    reaches = private_imports(path) + private_attributes(path.read_text())
    assert reaches == [], f"{path.relative_to(REPO_ROOT)}: move these into seam.py: {reaches}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import bentoml\nbentoml.server_context._worker", ["2: ._worker of bentoml"]),
        (
            "from prometheus_client import Counter\nCounter('c', 'c')._value",
            ["2: ._value of Counter"],
        ),
        ("from uvicorn import config as c\nc._x.y", ["2: ._x of c"]),
        ("import starlette.types\nstarlette._x", ["2: ._x of starlette"]),
        ("getattr(layer, '_is_setup')", ["1: getattr(..., '_is_setup')"]),
        ("import bentoml\nbentoml.__version__", []),
        ("import bentoml\nself._local", []),
        ("from iris_classifier.serving import seam\nseam._x", []),
        ("getattr(layer, 'app', None)", []),
    ],
)
def test_the_check_finds_private_attributes(source: str, expected: list[str]) -> None:
    assert private_attributes(source) == expected
