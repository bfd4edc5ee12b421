"""Every overlay, with and without the monitoring and canary components, as the real API server
takes it: `kubectl apply --dry-run=server` with the Gateway API, prometheus-operator, KServe and
Flagger CRDs installed, so CRD schemas, their CEL rules, server defaults and admission are all checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.controlplane import ControlPlane
from tests.cluster.conftest import running_with_crds
from tests.support import manifests

pytestmark = pytest.mark.integration

# The namespace the platform creates for the overlays that create none, restricted as
# kustomize/README.md asks.
NAMESPACE = "dry-run"
# Components by name under kustomize/components.
MONITORING = ("servicemonitor", "grafana-dashboard")
CANARY = ("flagger-canary",)
CASES = {
    "production": ("production", ()),
    "production-with-monitoring": ("production", MONITORING),
    "production-with-canary": ("production", CANARY),
    "production-with-monitoring-and-canary": ("production", MONITORING + CANARY),
    "kserve": ("kserve", ()),
    "kserve-with-monitoring": ("kserve", MONITORING),
}


@pytest.fixture(scope="module")
def dry_run_namespace(control_plane: ControlPlane) -> ControlPlane:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    return control_plane


def overlay_in_namespace(workdir: Path, overlay: str, components: tuple[str, ...]) -> Path:
    """A throwaway overlay over `overlay` that moves everything into the dry-run namespace."""
    return manifests.overlay_of(
        workdir, resources=[f"../{overlay}"], components=components, namespace=NAMESPACE
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_overlay_passes_a_server_side_dry_run(
    dry_run_namespace: ControlPlane, case: str, tmp_path: Path
) -> None:
    overlay, components = CASES[case]
    directory = overlay_in_namespace(tmp_path, overlay, components)
    result = dry_run_namespace.kubectl(
        "apply", "--server-side", "--dry-run=server", "-k", str(directory), check=False
    )
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    rendered = [
        document
        for document in yaml.safe_load_all(
            dry_run_namespace.kubectl("kustomize", str(directory)).stdout
        )
        if document
    ]
    assert len(applied) == len(rendered), result.stdout
    kinds = {line.split("/")[0].split(".")[0] for line in applied}
    assert {manifest["kind"].lower() for manifest in rendered} == kinds


def test_a_route_the_gateway_api_rules_refuse_fails_the_dry_run(
    dry_run_namespace: ControlPlane, tmp_path: Path
) -> None:
    """The CRDs' own validation runs: a path match that is not absolute is refused."""
    directory = overlay_in_namespace(tmp_path, "production", ())
    route = directory.parent.parent / "components" / "gateway-api" / "httproute.yaml"
    document = yaml.safe_load(route.read_text())
    document["spec"]["rules"][0]["matches"][0]["path"]["value"] = "iris/classify_iris"
    route.write_text(yaml.safe_dump(document))
    result = dry_run_namespace.kubectl(
        "apply", "--server-side", "--dry-run=server", "-k", str(directory), check=False
    )
    assert result.returncode != 0
    assert "HTTPRoute" in result.stderr


@pytest.fixture
def fresh_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own, with the CRDs: a cluster nothing was applied to yet."""
    with running_with_crds(tmp_path / "control-plane", nodes=False) as plane:
        yield plane


def test_the_kserve_overlay_applies_to_a_fresh_cluster_as_its_readme_says(
    fresh_control_plane: ControlPlane,
) -> None:
    """kustomize/overlays/kserve/README.md: create the namespace once, then apply (here without
    KServe's controller, so nothing runs: the objects are stored as the API server takes them)."""
    readme = (manifests.KUSTOMIZE_ROOT / "overlays" / "kserve" / "README.md").read_text()
    create = "kubectl create namespace iris-classifier"
    apply = "kubectl apply -k kustomize/overlays/kserve"
    assert readme.index(create) < readme.index(apply)
    fresh_control_plane.kubectl("create", "namespace", "iris-classifier")
    fresh_control_plane.kubectl(
        "apply", "-k", str(manifests.KUSTOMIZE_ROOT / "overlays" / "kserve")
    )
    service = fresh_control_plane.get(
        "inferenceservice", "-n", "iris-classifier", "iris-classifier"
    )
    runtime_image = fresh_control_plane.get("servingruntime", "-n", "iris-classifier", "-o", "json")
    assert service["spec"]["predictor"]
    assert runtime_image["items"], "the ServingRuntime the InferenceService names"
