"""The Makefile as a user meets it: its help, the make it needs, where `make serve` listens, how
the local load test is started, and what the fast test tier runs.

Targets that would start tools run with `-n` (what make would run), or with stand-ins first on
PATH in a copy of what the Makefile reads, so nothing here changes the checkout.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from harness.processes import free_port, private_bentoml_home, running
from tests.conftest import REPO_ROOT
from tests.kustomize.cluster_stubs import copy_makefile_tree

# The targets other targets run for themselves: listed last, under a heading of their own.
PLUMBING = {"image-tag", "kind-cluster", "kserve-sdk", "mlserver", "cluster-commands"}
GATEWAY_API_CHECK = "tests/gateway_api/node_modules/.package-lock.json"
# Found on this PATH: some tests give make one of their own.
MAKE = shutil.which("make") or "make"
# A sub-make's level and flags, and the Makefile's own variables, which make reads from the
# environment too: each test gives the ones it means.
NOT_INHERITED = (
    *("MAKELEVEL", "MAKEFLAGS", "MFLAGS"),
    *("PORT", "SERVE_HOST", "LB_PORT", "LOADTEST_LB_PORT", "LOADTEST_ARGS", "VENV", "PYTEST_ARGS"),
)


def make(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """make as a person types it, not as a sub-make of `make test`."""
    base = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    return subprocess.run(
        [MAKE, "--no-print-directory", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def documented_targets() -> list[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return re.findall(r"^\.PHONY: ([a-zA-Z_-]+) +## ", text, re.MULTILINE)


# --- make help ----------------------------------------------------------------------------------


def help_groups(output: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line and not line.startswith(" "):
            heading = line
            groups[heading] = []
        elif line.strip():
            groups[heading].append(line.split()[0])
    return groups


def test_help_lists_every_target_once_under_a_heading_with_plumbing_last() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    groups = help_groups(result.stdout)
    listed = [target for targets in groups.values() for target in targets]
    assert Counter(listed) == Counter(documented_targets())
    *headings, last = groups
    assert last.startswith("Plumbing")
    assert set(groups[last]) == PLUMBING
    assert {"Serve", "Test", "Image", "Load test", "Benchmarks"} <= set(headings)
    assert "serve" in groups["Serve"]
    assert {"test", "test-fast"} <= set(groups["Test"])


def test_help_is_plain_text_when_piped_and_coloured_on_a_terminal() -> None:
    piped = make("help").stdout
    assert "\x1b" not in piped

    controller, terminal = pty.openpty()
    chunks = []
    try:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        shown = subprocess.Popen(
            ["make", "--no-print-directory", "help"], cwd=REPO_ROOT, env=env, stdout=terminal
        )
        os.close(terminal)
        # Read as it is written (a terminal holds only so much); EIO once make's end closes.
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                chunks.append(chunk)
        assert shown.wait(timeout=60) == 0
    finally:
        os.close(controller)
    coloured = b"".join(chunks).decode()
    assert "\x1b[36mserve" in coloured
    # The same text once the colour is taken out.
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).replace("\r\n", "\n") == piped


# --- the make it needs --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.81", "3.80", "3.79.1"])
def test_a_make_older_than_3_82_is_refused_in_one_line(version: str) -> None:
    result = make("help", f"MAKE_VERSION={version}")
    assert result.returncode != 0
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"GNU make {version} is too old: this Makefile needs 3.82 or newer" in line


@pytest.mark.parametrize("version", ["3.82", "4.0", "4.3", "4.4.1"])
def test_make_3_82_and_newer_are_accepted(version: str) -> None:
    result = make("help", f"MAKE_VERSION={version}")
    assert result.returncode == 0, result.stderr


# --- make serve ---------------------------------------------------------------------------------


def planned_serve(*args: str) -> str:
    result = make("-n", "-o", "model", "serve", *args)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if " serve service:" in line]
    return command


def test_make_serve_binds_loopback_unless_serve_host_says_otherwise() -> None:
    assert planned_serve().endswith(" serve service:IrisClassifier --host 127.0.0.1 --port 3000")
    published = planned_serve("SERVE_HOST=0.0.0.0", "PORT=3100")
    assert published.endswith(" --host 0.0.0.0 --port 3100")


def test_make_serve_serves_the_model_version_named() -> None:
    assert planned_serve().startswith("IRIS_MODEL= ")
    assert planned_serve("MODEL=abc123").startswith("IRIS_MODEL=abc123 ")


@pytest.mark.integration
def test_make_serve_listens_on_loopback_only(trained_model: str, tmp_path: Path) -> None:
    port = free_port()
    # The environment the tests run in; -o model: trained_model stored the model already.
    venv = Path(sys.executable).parent.parent
    home = private_bentoml_home(tmp_path / "bentoml-home")
    with running(
        ["make", "--no-print-directory", "-o", "model", "serve", f"PORT={port}", f"VENV={venv}"],
        env={"BENTOML_HOME": str(home)},
        ready_url=f"http://127.0.0.1:{port}/readyz",
        log_path=tmp_path / "serve.log",
        cwd=REPO_ROOT,
        timeout=120,
    ) as make_serve:
        tree = [psutil.Process(make_serve.pid)]
        tree += tree[0].children(recursive=True)
        listening = {
            (connection.laddr.ip, connection.laddr.port)
            for process in tree
            for connection in process.net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN
        }
    assert ("127.0.0.1", port) in listening
    # BentoML's own sockets besides the service's port: none on another interface either.
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening


# --- make loadtest-local ------------------------------------------------------------------------

# Records its arguments in place of .venv/bin/python, so no load test starts.
_PYTHON_STUB = """\
#!/bin/sh
echo "$@" >> "{log}"
"""


@pytest.fixture
def loadtest_tree(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A copy of what the Makefile reads, a recording python in its VENV, and a PATH with
    haproxy (a stand-in) but no prometheus."""
    tree = copy_makefile_tree(tmp_path / "repo")
    log = tmp_path / "python.calls"
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(_PYTHON_STUB.format(log=log))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "haproxy").write_text("#!/bin/sh\n")
    for stub in (venv_bin / "python", tools / "haproxy"):
        stub.chmod(0o755)
    for tool in ("bash", "sh", "sed", "git", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    return tree, {"PATH": str(tools), "VENV": str(tmp_path / "venv")}, log


def loadtest_local(
    loadtest: tuple[Path, dict[str, str], Path], *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    tree, base_env, log = loadtest
    log.unlink(missing_ok=True)
    result = make(
        "-o", "model", "-o", "install", "loadtest-local", *args, cwd=tree, env={**base_env, **env}
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_loadtest_local_without_prometheus_runs_as_its_advice_says(
    loadtest_tree: tuple[Path, dict[str, str], Path],
) -> None:
    refused, calls = loadtest_local(loadtest_tree)
    assert refused.returncode != 0
    advice = (
        "prometheus is not installed: apt-get install prometheus (or LOADTEST_ARGS=--no-prometheus)"
    )
    assert advice in refused.stderr
    assert not calls

    followed, calls = loadtest_local(loadtest_tree, "LOADTEST_ARGS=--no-prometheus --no-faults")
    assert followed.returncode == 0, followed.stderr
    (call,) = calls
    assert call.startswith("-m loadtest.run ")
    assert call.endswith(" --no-prometheus --no-faults")


@pytest.mark.parametrize(
    ("environment", "arguments", "port"),
    [
        ({}, (), "8080"),
        ({"LOADTEST_LB_PORT": "18181"}, (), "18181"),
        ({"LOADTEST_LB_PORT": "18181"}, ("LB_PORT=18282",), "18282"),
    ],
)
def test_loadtest_local_honours_loadtest_lb_port_unless_lb_port_is_given(
    loadtest_tree: tuple[Path, dict[str, str], Path],
    environment: dict[str, str],
    arguments: tuple[str, ...],
    port: str,
) -> None:
    result, calls = loadtest_local(
        loadtest_tree, "LOADTEST_ARGS=--no-prometheus", *arguments, **environment
    )
    assert result.returncode == 0, result.stderr
    (call,) = calls
    assert shlex.split(call).count("--lb-port") == 1
    assert f" --lb-port {port} " in call


# --- the test tiers -----------------------------------------------------------------------------


def planned_pytest(target: str) -> list[str]:
    result = make("-n", "-o", "install", "-o", "kserve-sdk", "-o", GATEWAY_API_CHECK, target)
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if "/pytest " in line]
    return shlex.split(command)[1:]


def test_the_full_suite_reports_its_slowest_tests() -> None:
    assert any(re.fullmatch(r"--durations=[1-9]\d*", arg) for arg in planned_pytest("test"))


@pytest.mark.slow  # collects the whole suite
def test_the_fast_tier_runs_tests_from_every_test_package() -> None:
    arguments = planned_pytest("test-fast")
    assert "-m" in arguments
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *arguments,
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    selected = [line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line]
    by_package = Counter(str(Path(path).parent) for path in selected)
    packages = {
        str(directory.relative_to(REPO_ROOT))
        for directory in [REPO_ROOT / "tests", *(REPO_ROOT / "tests").iterdir()]
        if directory.is_dir() and list(directory.glob("test_*.py"))
    }
    assert len(packages) > 5
    assert {package for package in packages if not by_package[package]} == set()
    assert len(selected) > 100
