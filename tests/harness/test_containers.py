"""The one container runner takes its hardening from the Deployment's pod spec, nowhere else, and
starts a container again on another port when its free one is taken before the server binds it."""

from __future__ import annotations

import copy
import itertools
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import deployment, processes
from harness.containers import cold_start, hardened_command, hardened_container, hardening_flags
from harness.deployment import Manifest
from harness.processes import free_port


def flag_values(flags: list[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(flags) if name == flag]


@pytest.fixture
def pod() -> Manifest:
    return copy.deepcopy(deployment.base_deployment())


def test_base_deployment_hardening_becomes_docker_flags(pod: Manifest) -> None:
    security = deployment.container(pod, deployment.CONTAINER_NAME)["securityContext"]
    flags = hardening_flags(pod)
    assert flag_values(flags, "--user") == [f"{security['runAsUser']}:{security['runAsGroup']}"]
    assert "--read-only" in flags
    assert flag_values(flags, "--cap-drop") == ["ALL"]
    assert flag_values(flags, "--security-opt") == ["no-new-privileges"]
    assert flag_values(flags, "--mount") == ["type=tmpfs,destination=/tmp,tmpfs-size=67108864"]


def test_a_changed_pod_spec_changes_the_flags(pod: Manifest) -> None:
    app = deployment.container(pod, deployment.CONTAINER_NAME)
    app["securityContext"].update(runAsUser=2000, runAsGroup=3000, readOnlyRootFilesystem=False)
    app["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]
    flags = hardening_flags(pod)
    assert flag_values(flags, "--user") == ["2000:3000"]
    assert "--read-only" not in flags
    assert flag_values(flags, "--cap-drop") == ["NET_RAW"]


def test_a_volume_the_runner_cannot_reproduce_is_refused(pod: Manifest) -> None:
    deployment.pod_spec(pod)["volumes"][0] = {"name": "tmp", "hostPath": {"path": "/tmp"}}
    with pytest.raises(ValueError, match="not an emptyDir"):
        hardening_flags(pod)


def test_hardened_command_serves_on_loopback_with_the_deployments_hardening() -> None:
    command = hardened_command("iris-classifier:test", name="probe", port=4321, env={"A": "1"})
    hardening = hardening_flags(deployment.base_deployment())
    image_at = command.index("iris-classifier:test")
    assert command[:2] == ["docker", "run"]
    assert " ".join(hardening) in " ".join(command[:image_at])
    assert flag_values(command, "--env") == ["A=1"]
    assert command[image_at + 1 :] == ["--host", "127.0.0.1", "--port", "4321"]


# Stands in for the docker CLI: `run` serves the files of <state>/www on the --port it is
# given (so /readyz answers 200), `rm` stops that server, `inspect` reports a stopped container.
FAKE_DOCKER = """\
#!{python}
import os, pathlib, signal, sys
state = pathlib.Path({state!r})
args = sys.argv[1:]
if args[0] == "run":
    name, port = args[args.index("--name") + 1], args[args.index("--port") + 1]
    (state / name).write_text(str(os.getpid()))
    os.chdir(state / "www")
    os.execv(sys.executable, [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1"])
elif args[0] == "rm":
    try:
        os.kill(int((state / args[-1]).read_text()), signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        pass
elif args[0] == "inspect":
    print("fake-id 0")
"""


@pytest.fixture
def stolen_first_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A fake docker on PATH, and a free_port whose first port another process takes at once;
    yields every port chosen."""
    bin_dir, www = tmp_path / "bin", tmp_path / "www"
    bin_dir.mkdir()
    www.mkdir()
    (www / "readyz").write_text("ok")
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(tmp_path)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    chosen: list[int] = []
    thieves: list[socket.socket] = []

    def free_port_taken_once() -> int:
        chosen.append(free_port())
        if len(chosen) == 1:
            thieves.append(socket.create_server(("127.0.0.1", chosen[0])))
        return chosen[-1]

    monkeypatch.setattr(processes, "free_port", free_port_taken_once)
    yield chosen
    for thief in thieves:
        thief.close()


def test_a_container_whose_port_is_taken_before_it_binds_starts_on_another(
    stolen_first_port: list[int], tmp_path: Path
) -> None:
    with hardened_container("fake:image", log_path=tmp_path / "run.log") as container:
        with urllib.request.urlopen(f"{container.url}/readyz", timeout=10) as response:
            assert response.status == 200
        assert container.port == stolen_first_port[1] != stolen_first_port[0]
    assert container.process.poll() is not None, "removed on exit"


def test_a_cold_start_is_timed_on_the_port_it_got(
    stolen_first_port: list[int], tmp_path: Path
) -> None:
    start = cold_start("fake:image", log_path=tmp_path / "run.log")
    assert len(stolen_first_port) == 2
    assert 0 < start.seconds < 30
    assert start.cpu_seconds is None, "no CPU time for a container that is not running"
