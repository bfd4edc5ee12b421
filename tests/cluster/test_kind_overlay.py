"""`kubectl apply -k kustomize/overlays/kind` on a fresh control plane whose three nodes kwok
plays, named as kind names them: the real API server admits (Pod Security among it), the real
scheduler places, the real controllers roll out and publish EndpointSlices.

kwok runs no container and no probe: a pod is Ready once scheduled. What the pods do once
running (probes, traffic through kube-proxy) is not proven here.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cluster.controlplane import CONTROL_PLANE_NODE, WORKER_NODES, ControlPlane
from tests.cluster.conftest import AVOIDED_TAINT, DEPLOYMENT, NAMESPACE, SELECTOR
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

KIND_OVERLAY = REPO_ROOT / "kustomize" / "overlays" / "kind"


@pytest.fixture(scope="module")
def kind_overlay(control_plane: ControlPlane) -> ControlPlane:
    """The kind overlay applied as the README types it, its rollout complete."""
    control_plane.kubectl("taint", "nodes", WORKER_NODES[1], AVOIDED_TAINT, "--overwrite")
    control_plane.kubectl("apply", "-k", str(KIND_OVERLAY))
    rollout_status(control_plane)
    return control_plane


def rollout_status(plane: ControlPlane) -> None:
    plane.kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, "--timeout=120s", timeout=130)


def running_pods(plane: ControlPlane) -> list[dict]:
    pods = plane.get("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    return [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]


def test_the_pods_spread_over_both_workers_and_never_the_control_plane(
    kind_overlay: ControlPlane,
) -> None:
    pods = running_pods(kind_overlay)
    placement = Counter(pod["spec"]["nodeName"] for pod in pods)
    assert len(pods) == 3
    assert CONTROL_PLANE_NODE not in placement
    assert set(placement) == set(WORKER_NODES)
    assert max(placement.values()) - min(placement.values()) <= 1


def test_the_pods_are_ready(kind_overlay: ControlPlane) -> None:
    for pod in running_pods(kind_overlay):
        conditions = {item["type"]: item["status"] for item in pod["status"]["conditions"]}
        assert conditions.get("Ready") == "True", pod["metadata"]["name"]


def test_the_namespace_enforces_the_restricted_pod_security_standard(
    kind_overlay: ControlPlane,
) -> None:
    labels = kind_overlay.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # The overlay's pods were admitted; a pod that is not restricted is refused.
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "shell", "image": "busybox"}]},
    }
    refused = kind_overlay.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(privileged), check=False
    )
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr


def test_the_service_has_a_ready_endpoint_for_each_pod(kind_overlay: ControlPlane) -> None:
    slices = kind_overlay.get(
        "endpointslices", "-n", NAMESPACE, "-l", "kubernetes.io/service-name=iris-classifier"
    )["items"]
    ready = {
        address
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint["conditions"].get("ready")
        for address in endpoint["addresses"]
    }
    assert ready == {pod["status"]["podIP"] for pod in running_pods(kind_overlay)}
    assert len(ready) == 3
    service = kind_overlay.get("service", "-n", NAMESPACE, "iris-classifier")
    assert [(port["port"], port["nodePort"]) for port in service["spec"]["ports"]] == [
        (8080, 30080)
    ]


def test_a_new_image_rolls_out_and_undo_brings_the_old_one_back(
    kind_overlay: ControlPlane,
) -> None:
    def images() -> set[str]:
        return {pod["spec"]["containers"][0]["image"] for pod in running_pods(kind_overlay)}

    before = images()
    assert len(before) == 1
    kind_overlay.kubectl(
        "-n", NAMESPACE, "set", "image", DEPLOYMENT, "iris-classifier=iris-classifier:rollout-test"
    )
    rollout_status(kind_overlay)
    assert images() == {"iris-classifier:rollout-test"}
    kind_overlay.kubectl("-n", NAMESPACE, "rollout", "undo", DEPLOYMENT)
    rollout_status(kind_overlay)
    assert images() == before


def test_a_deleted_pod_is_replaced_on_a_worker(kind_overlay: ControlPlane) -> None:
    victim = running_pods(kind_overlay)[0]["metadata"]["name"]
    kind_overlay.kubectl("-n", NAMESPACE, "delete", "pod", victim, "--wait=true")
    rollout_status(kind_overlay)
    kind_overlay.kubectl(
        "-n", NAMESPACE, "wait", "--for=condition=Available", DEPLOYMENT, "--timeout=60s"
    )
    pods = running_pods(kind_overlay)
    assert victim not in {pod["metadata"]["name"] for pod in pods}
    assert len(pods) == 3
    assert {pod["spec"]["nodeName"] for pod in pods} == set(WORKER_NODES)
