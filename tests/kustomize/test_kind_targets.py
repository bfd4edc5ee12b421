"""The Makefile's kind path as a user meets it, run against stand-ins for kind, kubectl and docker.

No cluster runs here, so the targets run for real with stub executables first on PATH (see
tests/kustomize/cluster_stubs.py): what they call, in what order, and what they would have applied is
checked, not the text of the Makefile. `make image` itself (the build) is covered by
tests/image/test_image.py; these run `image-tag`, the step it ends with, and skip the build with
`make -o image`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import require
from tests.kustomize.cluster_stubs import StubCluster, copy_makefile_tree, run_make
from tests.support import manifests

CLUSTER = "iris-classifier"
CONTEXT = f"kind-{CLUSTER}"
FIRST_ID = "sha256:" + "a1" * 32
SECOND_ID = "sha256:" + "b2" * 32


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
    assert f"rolling out {first} (was: not deployed)" in deploy(tree, stubs)
    second = build(tree, stubs, SECOND_ID)
    assert f"rolling out {second} (was: {first})" in deploy(tree, stubs)
    assert build(tree, stubs, SECOND_ID) == second  # rebuilt, nothing changed: the same image
    assert "nothing to roll out" in deploy(tree, stubs)

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
        f"kind load docker-image {ref} --name {CLUSTER}",
        f"kubectl --context {CONTEXT} apply -k build/kind-deploy",
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


# --- loading the image --------------------------------------------------------------------------


def test_kind_load_falls_back_to_an_image_archive_and_says_so(
    tree: Path, stubs: StubCluster
) -> None:
    ref = build(tree, stubs, FIRST_ID)
    stubs.set(kind_load_docker_image_fails=True)
    stubs.forget_calls()
    result = run_make(tree, stubs, "-o", "image", "kind-load")
    assert result.returncode == 0, result.stderr
    assert f"loading {ref} from a docker save archive instead" in result.stderr
    calls = [call.args for call in stubs.calls() if call.tool in ("kind", "docker")]
    assert calls[0] == ["load", "docker-image", ref, "--name", CLUSTER]
    assert calls[1][:2] == ["save", "--output"]
    assert calls[1][-1] == ref
    archive = calls[1][2]
    assert calls[2] == ["load", "image-archive", archive, "--name", CLUSTER]
    assert not Path(archive).exists(), "the archive is a temporary file"


def test_kind_load_uses_docker_image_when_it_works(tree: Path, stubs: StubCluster) -> None:
    ref = build(tree, stubs, FIRST_ID)
    stubs.forget_calls()
    result = run_make(tree, stubs, "-o", "image", "kind-load")
    assert result.returncode == 0, result.stderr
    assert [call.args for call in stubs.calls("kind")] == [
        ["load", "docker-image", ref, "--name", CLUSTER]
    ]
    assert "docker save" not in result.stderr
    assert not [call for call in stubs.calls("docker") if call.args[0] == "save"]


# --- the cluster --------------------------------------------------------------------------------


def test_kind_up_waits_for_every_node_after_creating_the_cluster(
    tree: Path, stubs: StubCluster
) -> None:
    result = run_make(tree, stubs, "kind-up")
    assert result.returncode == 0, result.stderr
    calls = [str(call) for call in stubs.calls()]
    create = next(i for i, call in enumerate(calls) if call.startswith("kind create cluster"))
    assert "--config kustomize/overlays/kind/kind-config.yaml" in calls[create]
    wait = calls.index(
        f"kubectl --context {CONTEXT} wait --for=condition=Ready nodes --all --timeout=180s"
    )
    assert wait > create


def test_kind_up_fails_while_a_node_is_not_ready(tree: Path, stubs: StubCluster) -> None:
    stubs.set(nodes_ready=False)
    result = run_make(tree, stubs, "kind-up")
    assert result.returncode != 0
    assert "every node Ready" not in result.stdout


def test_kind_up_reuses_an_existing_cluster_and_still_waits(tree: Path, stubs: StubCluster) -> None:
    stubs.set(clusters=[CLUSTER])
    result = run_make(tree, stubs, "kind-up")
    assert result.returncode == 0, result.stderr
    assert not [call for call in stubs.calls("kind") if call.args[0] == "create"]
    assert [call for call in stubs.calls("kubectl") if "wait" in call.args]


@pytest.mark.parametrize(("client", "warned"), [("36", False), ("37", False), ("35", True)])
def test_kind_up_warns_when_kubectl_is_too_far_from_the_cluster(
    tree: Path, stubs: StubCluster, client: str, warned: bool
) -> None:
    stubs.set(client_minor=client, server_minor="37")
    result = run_make(tree, stubs, "kind-up")
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
