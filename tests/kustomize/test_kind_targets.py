"""The Makefile's kind path as a user meets it, run against stand-ins for kind, kubectl and docker.

No cluster runs here, so the targets run for real with stub executables first on PATH (see
tests/kustomize/cluster_stubs.py): what they call, in what order, and what they would have applied is
checked, not the text of the Makefile. `make image` itself (the build) is covered by
tests/image/test_image.py; these run `image-tag`, the step it ends with, and skip the build with
`make -o image`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from harness.processes import free_port
from tests.conftest import REPO_ROOT, require
from tests.kustomize.cluster_stubs import StubCluster, copy_makefile_tree, run_make
from tests.support import manifests

CLUSTER = "iris-classifier"
CONTEXT = f"kind-{CLUSTER}"
FIRST_ID = "sha256:" + "a1" * 32
SECOND_ID = "sha256:" + "b2" * 32
# The tag the kind overlay names: the base's image at the project version.
IMAGE = f"iris-classifier:{tomllib.loads((REPO_ROOT / 'pyproject.toml').read_text())['project']['version']}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return copy_makefile_tree(tmp_path / "repo")


@pytest.fixture
def stubs(tmp_path: Path) -> StubCluster:
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    return StubCluster(tmp_path / "stubs")


def version(tree: Path) -> str:
    match = re.search(r'^version = "(.+)"', (tree / "pyproject.toml").read_text(), re.MULTILINE)
    assert match
    return match.group(1)


def build(tree: Path, stubs: StubCluster, image_id: str) -> str:
    """What `make image` does once the image is built: tag it; returns the printed reference."""
    stubs.set(image_id=image_id)
    result = run_make(tree, stubs, "image-tag")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def deploy(tree: Path, stubs: StubCluster) -> str:
    stubs.set(clusters=[CLUSTER])
    stubs.forget_calls()
    result = run_make(tree, stubs, "-o", "image", "deploy-kind")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- a tag per build ----------------------------------------------------------------------------


def test_each_build_gets_a_tag_of_its_own_from_its_image_id(tree: Path, stubs: StubCluster) -> None:
    first, second = build(tree, stubs, FIRST_ID), build(tree, stubs, SECOND_ID)
    assert first == f"iris-classifier:{version(tree)}-{'a1' * 6}"
    assert second == f"iris-classifier:{version(tree)}-{'b2' * 6}"
    tags = [call.args for call in stubs.calls("docker") if call.args[0] == "tag"]
    assert tags == [["tag", f"iris-classifier:{version(tree)}", ref] for ref in (first, second)]
    assert (tree / "build" / "image-ref").read_text().strip() == second


def test_a_new_build_rolls_the_pods_and_the_same_build_does_not(
    tree: Path, stubs: StubCluster
) -> None:
    first = build(tree, stubs, FIRST_ID)
    assert f"deploying {first} (running before: nothing)" in deploy(tree, stubs)
    second = build(tree, stubs, SECOND_ID)
    assert f"deploying {second} (running before: {first})" in deploy(tree, stubs)
    assert build(tree, stubs, SECOND_ID) == second  # rebuilt, nothing changed: the same image
    assert f"deploying {second} (running before: {second})" in deploy(tree, stubs)

    applied = stubs.load()["applied"]
    images = [template["spec"]["containers"][0]["image"] for template in applied]
    assert images == [first, second, second]
    # Kubernetes rolls a Deployment out exactly when its pod template changes.
    assert applied[0] != applied[1], "a new image must change the pod template"
    assert applied[1] == applied[2], "the same image must leave the pod template alone"


def test_deploy_kind_loads_applies_and_waits_in_the_kind_context(
    tree: Path, stubs: StubCluster
) -> None:
    ref = build(tree, stubs, FIRST_ID)
    deploy(tree, stubs)
    calls = [str(call) for call in stubs.calls()]
    order = [
        "kind get clusters",
        f"kind load docker-image {IMAGE} {ref} --name {CLUSTER}",
        f"kubectl --context {CONTEXT} apply -k build/kind/{CLUSTER}/deploy",
        f"kubectl --context {CONTEXT} --namespace iris-classifier rollout status "
        "deployment/iris-classifier --timeout=300s",
    ]
    assert [call for call in calls if call in order] == order
    for call in stubs.calls("kubectl"):
        assert call.args[:2] == ["--context", CONTEXT], call
    (health,) = stubs.calls("curl")
    assert health.args[-1] == "http://127.0.0.1:8080/healthcheck"


def test_the_kind_overlay_never_pulls_the_deployed_image(tree: Path, stubs: StubCluster) -> None:
    build(tree, stubs, FIRST_ID)
    deploy(tree, stubs)
    (template,) = stubs.load()["applied"]
    assert template["spec"]["containers"][0]["imagePullPolicy"] == "Never"


# --- loading the image ---------------------------------------------------------------------------


def kind_load(tree: Path, stubs: StubCluster) -> subprocess.CompletedProcess[str]:
    stubs.set(clusters=[CLUSTER])
    stubs.forget_calls()
    return run_make(tree, stubs, "-o", "image", "kind-load")


@pytest.mark.parametrize(
    ("save_platform", "platform_args"), [(True, ["--platform", "linux/arm64"]), (False, [])]
)
def test_kind_load_falls_back_to_an_image_archive_and_says_why(
    tree: Path, stubs: StubCluster, save_platform: bool, platform_args: list[str]
) -> None:
    """kind's documented way around `kind load docker-image` failing (Docker's containerd image
    store): `docker save --platform <the engine's>`, where this docker's save has the flag."""
    ref = build(tree, stubs, FIRST_ID)
    stubs.set(kind_load_docker_image_fails=True, docker_save_platform=save_platform)
    result = kind_load(tree, stubs)
    assert result.returncode == 0, result.stderr
    # kind's own error is shown, and the reason quoted in the line that says what happens next.
    assert "ERROR: failed to load image" in result.stderr
    platform = " --platform linux/arm64" if save_platform else ""
    assert (
        "kind load docker-image failed (Command Output: ctr: content digest sha256:0: not found): "
        f"loading {IMAGE} {ref} from a docker save{platform} archive instead"
    ) in result.stderr
    loads = [call.args for call in stubs.calls("kind") if call.args[0] == "load"]
    (save,) = [
        call.args
        for call in stubs.calls("docker")
        if call.args[0] == "save" and "--help" not in call.args
    ]
    assert save[: 1 + len(platform_args)] == ["save", *platform_args]
    archive = save[save.index("--output") + 1]
    assert save[-2:] == [IMAGE, ref]
    assert loads == [
        ["load", "docker-image", IMAGE, ref, "--name", CLUSTER],
        ["load", "image-archive", archive, "--name", CLUSTER],
    ]
    assert not Path(archive).exists(), "the archive is a temporary file"
    assert set(stubs.load()["node_images"]) == {IMAGE, ref}


def test_kind_load_uses_docker_image_when_it_works(tree: Path, stubs: StubCluster) -> None:
    ref = build(tree, stubs, FIRST_ID)
    result = kind_load(tree, stubs)
    assert result.returncode == 0, result.stderr
    assert [call.args for call in stubs.calls("kind")] == [
        ["get", "clusters"],
        ["load", "docker-image", IMAGE, ref, "--name", CLUSTER],
    ]
    assert "docker save" not in result.stderr
    assert not [call for call in stubs.calls("docker") if call.args[0] == "save"]


def test_the_plain_kubectl_apply_of_the_kind_overlay_runs_after_kind_load(
    tree: Path, stubs: StubCluster
) -> None:
    """`kubectl apply -k kustomize/overlays/kind` typed by hand after `make kind-load`, as the
    kind documentation does it: the overlay's image is on the nodes, so the pods run (with
    `imagePullPolicy: Never` they would otherwise stay in ErrImageNeverPull)."""
    build(tree, stubs, FIRST_ID)
    assert kind_load(tree, stubs).returncode == 0
    for command in (
        ["kubectl", "apply", "-k", "kustomize/overlays/kind"],
        ["kubectl", "-n", "iris-classifier", "rollout", "status", "deployment/iris-classifier"],
    ):
        typed = subprocess.run(
            command, cwd=tree, env=stubs.env(), capture_output=True, text=True, check=False
        )
        assert typed.returncode == 0, typed.stderr
    assert stubs.load()["deployed_image"] == IMAGE


# --- the cluster is checked first ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["kind-load", "deploy-kind"])
def test_kind_targets_check_the_cluster_before_building_anything(
    tree: Path, stubs: StubCluster, target: str
) -> None:
    # Without `-o image`: had the build come first, it would have run (and failed on PYTHON).
    result = run_make(tree, stubs, target, "PYTHON=/nonexistent/python3")
    assert result.returncode != 0
    assert "there is no kind cluster iris-classifier: run make kind-up" in result.stderr
    assert "python3" not in result.stdout + result.stderr
    assert [str(call) for call in stubs.calls()] == ["kind get clusters"]


def test_a_failing_kind_is_not_reported_as_a_missing_cluster(
    tree: Path, stubs: StubCluster
) -> None:
    stubs.set(kind_get_clusters_error="ERROR: failed to list clusters: docker: not running")
    result = run_make(tree, stubs, "-o", "image", "kind-load")
    assert result.returncode != 0
    assert "kind get clusters failed: ERROR: failed to list clusters: docker: not running" in (
        result.stderr
    )
    assert "make kind-up" not in result.stderr


# --- the cluster --------------------------------------------------------------------------------


def kind_up(tree: Path, stubs: StubCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`make kind-up` on a free host port, unless `args` name one: 8080 may be taken here."""
    if not any(arg.startswith("KIND_HOST_PORT=") for arg in args):
        args = (*args, f"KIND_HOST_PORT={free_port()}")
    return run_make(tree, stubs, "kind-up", *args)


def test_kind_up_waits_for_every_node_after_creating_the_cluster(
    tree: Path, stubs: StubCluster
) -> None:
    result = kind_up(tree, stubs)
    assert result.returncode == 0, result.stderr
    calls = [str(call) for call in stubs.calls()]
    create = next(i for i, call in enumerate(calls) if call.startswith("kind create cluster"))
    assert f"--config build/kind/{CLUSTER}/config.yaml" in calls[create]
    wait = calls.index(
        f"kubectl --context {CONTEXT} wait --for=condition=Ready nodes --all --timeout=180s"
    )
    assert wait > create


def test_kind_up_fails_while_a_node_is_not_ready(tree: Path, stubs: StubCluster) -> None:
    stubs.set(nodes_ready=False)
    result = kind_up(tree, stubs)
    assert result.returncode != 0
    assert "every node Ready" not in result.stdout


def test_kind_up_reuses_an_existing_cluster_and_still_waits(tree: Path, stubs: StubCluster) -> None:
    stubs.set(clusters=[CLUSTER])
    result = kind_up(tree, stubs)
    assert result.returncode == 0, result.stderr
    assert not [call for call in stubs.calls("kind") if call.args[0] == "create"]
    assert [call for call in stubs.calls("kubectl") if "wait" in call.args]


@pytest.mark.parametrize(("client", "warned"), [("36", False), ("37", False), ("35", True)])
def test_kind_up_warns_when_kubectl_is_too_far_from_the_cluster(
    tree: Path, stubs: StubCluster, client: str, warned: bool
) -> None:
    stubs.set(client_minor=client, server_minor="37")
    result = kind_up(tree, stubs)
    assert result.returncode == 0, result.stderr
    assert ("more than one minor version away" in result.stderr) is warned


# --- one host port ------------------------------------------------------------------------------


def test_the_kind_configs_host_port_drives_the_makefile(tree: Path, stubs: StubCluster) -> None:
    config = tree / "kustomize" / "overlays" / "kind" / "kind-config.yaml"
    config.write_text(re.sub(r"hostPort: *\d+", "hostPort: 18123", config.read_text()))
    build(tree, stubs, FIRST_ID)
    deploy(tree, stubs)
    (health,) = stubs.calls("curl")
    assert health.args[-1] == "http://127.0.0.1:18123/healthcheck"
    planned = run_make(tree, stubs, "-n", "loadtest-kind")
    assert "--host http://127.0.0.1:18123 " in planned.stdout, planned.stdout
    assert "localhost" not in planned.stdout


def host_ports(config: Path) -> list[int]:
    nodes = yaml.safe_load(config.read_text())["nodes"]
    return [mapping["hostPort"] for node in nodes for mapping in node.get("extraPortMappings", [])]


def test_kind_host_port_chooses_the_port_the_cluster_maps_and_later_targets_use_it(
    tree: Path, stubs: StubCluster
) -> None:
    overlay_config = tree / "kustomize" / "overlays" / "kind" / "kind-config.yaml"
    port = free_port()
    result = kind_up(tree, stubs, f"KIND_HOST_PORT={port}")
    assert result.returncode == 0, result.stderr
    (create,) = [call.args for call in stubs.calls("kind") if call.args[0] == "create"]
    created_from = tree / create[create.index("--config") + 1]
    assert created_from == tree / "build" / "kind" / CLUSTER / "config.yaml"
    assert host_ports(created_from) == [port]
    # Only the port differs from the overlay's config, which stays as committed.
    assert yaml.safe_load(created_from.read_text().replace(str(port), "8080")) == yaml.safe_load(
        overlay_config.read_text()
    )
    assert host_ports(overlay_config) == [8080]
    assert f"http://127.0.0.1:{port} reaches the Service's node port" in result.stdout

    # Later targets reach the cluster on the port it was created with, without being told.
    build(tree, stubs, FIRST_ID)
    deploy(tree, stubs)
    (health,) = stubs.calls("curl")
    assert health.args[-1] == f"http://127.0.0.1:{port}/healthcheck"

    assert run_make(tree, stubs, "kind-down").returncode == 0
    assert not created_from.exists()
    planned = run_make(tree, stubs, "-n", "loadtest-kind")
    assert "--host http://127.0.0.1:8080 " in planned.stdout, planned.stdout


def test_kind_up_says_in_one_line_when_the_host_port_is_taken(
    tree: Path, stubs: StubCluster
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = kind_up(tree, stubs, f"KIND_HOST_PORT={port}")
    assert result.returncode != 0
    (message,) = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    other = port - 10000 if port > 55535 else port + 10000
    assert message == (
        f"127.0.0.1:{port} is taken: stop what listens there or choose another port, "
        f"e.g. make kind-up KIND_HOST_PORT={other}"
    )
    assert not [call for call in stubs.calls("kind") if call.args[0] == "create"]


def test_kind_up_refuses_a_host_port_that_is_not_a_number(tree: Path, stubs: StubCluster) -> None:
    result = kind_up(tree, stubs, "KIND_HOST_PORT=80a")
    assert result.returncode != 0
    assert 'KIND_HOST_PORT is "80a": give a port number' in result.stderr
    assert not stubs.calls("kind")
