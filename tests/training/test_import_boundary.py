"""Training never imports serving, and what the two share imports neither of them.

Training and serving meet only in the modules beside them in iris_classifier/ (the flower
facts, the model format, the servable-model check): either side can change without the other,
and a serving process cannot load training code, or its libraries, through a shared module.
Read from the source, imports inside functions included; tests/serving/test_import_boundary.py
holds serving to its side.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.imports import imported_modules

PACKAGE = REPO_ROOT / "iris_classifier"
TRAINING_FILES = [*sorted((PACKAGE / "training").rglob("*.py")), REPO_ROOT / "train.py"]
SHARED_FILES = sorted(PACKAGE.glob("*.py"))
SERVING = "iris_classifier.serving"
# What a serving process must never load, so what a module it imports must not import either.
TRAINING_SIDE = ("iris_classifier.training", "sklearn", "pandas", "scipy")


def imports_of(path: Path, banned: tuple[str, ...]) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path, REPO_ROOT)
        if any(name == prefix or name.startswith(f"{prefix}.") for prefix in banned)
    )


def file_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_the_check_reads_training_train_py_and_the_shared_modules() -> None:
    assert {path.name for path in TRAINING_FILES} >= {"train.py", "parity.py", "compare.py"}
    assert {path.name for path in SHARED_FILES} >= {"flowers.py", "model_format.py"}


@pytest.mark.parametrize("path", TRAINING_FILES, ids=file_id)
def test_training_imports_nothing_from_serving(path: Path) -> None:
    assert imports_of(path, (SERVING,)) == []


@pytest.mark.parametrize("path", SHARED_FILES, ids=file_id)
def test_shared_module_imports_neither_serving_nor_the_training_side(path: Path) -> None:
    assert imports_of(path, (SERVING, *TRAINING_SIDE)) == []
