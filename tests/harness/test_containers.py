"""The one container runner takes its hardening from the Deployment's pod spec, nowhere else."""

from __future__ import annotations

import copy
import itertools

import pytest

from harness import deployment
from harness.containers import hardened_command, hardening_flags
from harness.deployment import Manifest


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
