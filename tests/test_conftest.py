"""The suite's own rule for CI: tests that need a tool skip without it, but fail under CI."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT, require, under_ci

# Any read of the CI variable through os.environ or os.getenv.
READS_CI = re.compile(r"""(environ\.get|environ\[|getenv)\(?\s*["']CI["']""")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("TRUE", True), ("1", True),
    ("yes", True), ("", False), ("false", False), ("0", False), ("no", False)])  # fmt: skip
def test_under_ci_follows_the_ci_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("CI", value)
    assert under_ci() is expected


def test_require_fails_under_ci_and_skips_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true: no tool"):
        require(False, "no tool")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no tool"):
        require(False, "no tool")
    require(True, "never raised")


def test_only_conftest_decides_whether_this_is_ci() -> None:
    readers = {
        str(path.relative_to(REPO_ROOT))
        for folder in ("tests", "loadtest", "benchmarks", "image", "harness", "iris_classifier")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if READS_CI.search(path.read_text())
    }
    assert readers == {"tests/conftest.py"}
