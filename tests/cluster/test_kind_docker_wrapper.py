"""cluster/kind/docker: what kind asks of docker, as a Docker engine without every capability can
run it. A recording docker stands first in PATH after the wrapper."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

WRAPPER_DIR = REPO_ROOT / "cluster" / "kind"


@pytest.fixture
def recording_docker(tmp_path: Path) -> Path:
    """A fake docker that writes the arguments it was given to a file, one JSON list a call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        'with open(os.environ["CALLS"], "a") as calls:\n'
        "    calls.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_wrapper(bin_dir: Path, tmp_path: Path, *args: str, **env: str) -> list[str]:
    calls = tmp_path / "calls"
    path = f"{WRAPPER_DIR}:{bin_dir}:{os.environ['PATH']}"
    subprocess.run(
        [str(WRAPPER_DIR / "docker"), *args],
        env={**os.environ, "PATH": path, "CALLS": str(calls), **env},
        check=True,
    )
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    return call


def test_a_privileged_run_gets_every_capability_but_the_missing_one(
    recording_docker: Path, tmp_path: Path
) -> None:
    args = run_wrapper(recording_docker, tmp_path, "run", "--name", "node", "--privileged", "image")
    assert "--privileged" not in args
    assert args[:3] == ["run", "--name", "node"]
    assert args[-1] == "image"
    assert "--cap-add=ALL" in args
    assert "--cap-drop=SYS_RESOURCE" in args
    assert "--device-cgroup-rule=a *:* rwm" in args
    assert args[args.index("--security-opt", 3) + 1] == "systempaths=unconfined"


def test_the_capabilities_left_out_can_be_named(recording_docker: Path, tmp_path: Path) -> None:
    args = run_wrapper(
        recording_docker,
        tmp_path,
        "run",
        "--privileged",
        "image",
        KIND_DOCKER_CAP_DROP="SYS_RESOURCE SYS_TIME",
    )
    assert "--cap-drop=SYS_RESOURCE" in args
    assert "--cap-drop=SYS_TIME" in args


def test_a_privileged_exec_runs_with_the_containers_own_capabilities(
    recording_docker: Path, tmp_path: Path
) -> None:
    args = run_wrapper(
        recording_docker, tmp_path, "exec", "--privileged", "node", "cat", "/kind/version"
    )
    assert args == ["exec", "node", "cat", "/kind/version"]


def test_other_commands_pass_through_unchanged(recording_docker: Path, tmp_path: Path) -> None:
    args = run_wrapper(recording_docker, tmp_path, "ps", "-a", "--filter", "label=x")
    assert args == ["ps", "-a", "--filter", "label=x"]
