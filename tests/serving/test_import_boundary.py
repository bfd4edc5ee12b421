"""The serving package never imports training code, scikit-learn, pandas or SciPy.

Read from the source of every module under iris_classifier/serving/, imports inside functions
and `importlib.import_module("...")` calls included, so an import on a path no test runs is
caught too. tests/training/test_model_kinds.py checks the same at run time, in a served process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.imports import imported_modules

SERVING = REPO_ROOT / "iris_classifier" / "serving"
FORBIDDEN = ("iris_classifier.training", "sklearn", "pandas", "scipy")


def forbidden_imports(path: Path, root: Path = REPO_ROOT) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path, root)
        if any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN)
    )


SERVING_MODULES = sorted(SERVING.rglob("*.py"))


def test_the_check_reads_every_serving_module() -> None:
    assert {path.name for path in SERVING_MODULES} >= {"__init__.py", "contract.py", "v2.py"}


@pytest.mark.parametrize("path", SERVING_MODULES, ids=lambda path: path.name)
def test_serving_module_imports_no_training_code_or_training_libraries(path: Path) -> None:
    assert forbidden_imports(path) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sklearn.linear_model", ["sklearn.linear_model"]),
        ("import pandas as pd", ["pandas"]),
        ("from scipy import stats", ["scipy", "scipy.stats"]),
        (
            "from iris_classifier.training import data",
            ["iris_classifier.training", "iris_classifier.training.data"],
        ),
        (
            "from ..training.data import load_csv",
            ["iris_classifier.training.data", "iris_classifier.training.data.load_csv"],
        ),
        ("def f():\n    import sklearn", ["sklearn"]),
        ("importlib.import_module('pandas')", ["pandas"]),
        ("import numpy\nfrom . import contract", []),
        ("import sklearnish", []),
    ],
)
def test_forbidden_imports_are_found_in_every_spelling(
    tmp_path: Path, source: str, expected: list[str]
) -> None:
    package = tmp_path / "iris_classifier" / "serving"
    package.mkdir(parents=True)
    module = package / "probe.py"
    module.write_text(source + "\n")
    assert forbidden_imports(module, tmp_path) == expected
