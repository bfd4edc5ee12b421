"""The KServe overlay: the same image and hardening as an InferenceService, checked offline.

The InferenceService and ServingRuntime are checked against the KServe SDK's models with
every undeclared field refused (tests/support/kserve_schema_check.py, run in build/kserve-venv);
the kinds Kubernetes knows, and the pod KServe will build, against the strict Kubernetes schemas.
Without the SDK environment or kustomize these tests skip, except under CI=true.
"""

from __future__ import annotations

import copy
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.containers import project_image
from tests.conftest import require
from tests.kustomize.test_manifests import CLUSTER_SCOPED_KINDS, REQUIRED_VERSIONS
from tests.support import kserve_sdk, manifests
from tests.support.manifests import Manifest

NAME = "iris-classifier"
NAMESPACE = "iris-classifier"
OVERLAY = manifests.overlay_dir("kserve")
COMPONENT = manifests.KUSTOMIZE_ROOT / "components" / "kserve"
README = OVERLAY / "README.md"
SCHEMA_CHECK = Path(kserve_sdk.SUPPORT_DIR) / "kserve_schema_check.py"
KSERVE_GROUP = "serving.kserve.io/"
RUNTIME_CONTAINER = "kserve-container"
# What the container and the pod take from the base Deployment unchanged.
CONTAINER_FIELDS = (
    "env",
    "securityContext",
    "volumeMounts",
    "startupProbe",
    "livenessProbe",
    "ports",
)
POD_FIELDS = (
    "securityContext",
    "volumes",
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "serviceAccountName",
)
# Fields of the predictor that are KServe's, not the pod's.
KSERVE_PREDICTOR_FIELDS = (
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "labels",
    "model",
    "annotations",
)


@pytest.fixture(scope="module")
def objects() -> list[Manifest]:
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    return manifests.render(OVERLAY)


@pytest.fixture(scope="module")
def base_objects() -> list[Manifest]:
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    return manifests.render(manifests.KUSTOMIZE_ROOT / "base")


@pytest.fixture(scope="module")
def production_objects() -> list[Manifest]:
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    return manifests.render(manifests.overlay_dir("production"))


def schema_report(objects: list[Manifest], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    return kserve_sdk.run_script(SCHEMA_CHECK, str(path))


def runtime_container(objects: list[Manifest]) -> Manifest:
    runtime = manifests.only(objects, "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == RUNTIME_CONTAINER
    return container


def test_kserve_replaces_the_deployment_and_service(objects: list[Manifest]) -> None:
    kinds = sorted(obj["kind"] for obj in objects)
    assert "Deployment" not in kinds, kinds
    assert "Service" not in kinds, kinds
    assert {"InferenceService", "ServingRuntime", "ServiceAccount"} <= set(kinds)
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == NAME, manifests.describe(obj)


def test_kserve_leaves_the_namespace_to_the_platform_as_its_readme_says(
    objects: list[Manifest],
) -> None:
    """Nothing cluster-scoped: `kubectl apply -k` needs rights in the namespace only, and the
    README creates that namespace, the one every object lands in, before it applies."""
    cluster_scoped = [
        manifests.describe(obj) for obj in objects if obj["kind"] in CLUSTER_SCOPED_KINDS
    ]
    assert cluster_scoped == []
    assert {obj["metadata"].get("namespace") for obj in objects} == {NAMESPACE}
    commands = shell_lines(README)
    create = commands.index(f"kubectl create namespace {NAMESPACE}")
    apply = commands.index("kubectl apply -k kustomize/overlays/kserve")
    assert create < apply, commands


def shell_lines(readme: Path) -> list[str]:
    """The commands of a README's bash blocks, without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.DOTALL)
    return [
        line.partition("#")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.partition("#")[0].strip()
    ]


def test_kserve_objects_pass_the_sdk_models_with_unknown_fields_refused(
    objects: list[Manifest], tmp_path: Path
) -> None:
    report = schema_report(objects, tmp_path)
    assert sorted(report["checked"]) == [f"InferenceService/{NAME}", f"ServingRuntime/{NAME}"]
    assert report["errors"] == []


def test_the_sdk_model_check_refuses_unknown_fields_and_wrong_types(
    objects: list[Manifest], tmp_path: Path
) -> None:
    service = manifests.only(objects, "InferenceService")
    runtime = manifests.only(objects, "ServingRuntime")
    broken = []

    def variant(original: Manifest, name: str) -> Manifest:
        copied = copy.deepcopy(original)
        copied["metadata"]["name"] = name
        broken.append(copied)
        return copied

    variant(service, "top-level")["spec"]["predicter"] = {}
    variant(service, "model")["spec"]["predictor"]["model"]["protocolVersoin"] = "v2"
    variant(service, "pod")["spec"]["predictor"]["securityContext"]["runAsNonroot"] = True
    variant(service, "type")["spec"]["predictor"]["terminationGracePeriodSeconds"] = "40"
    variant(service, "list")["spec"]["predictor"]["volumes"] = {"name": "tmp"}
    variant(runtime, "container")["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    variant(runtime, "boolean")["spec"]["containers"][0]["ports"][0]["containerPort"] = True
    errors = schema_report(broken, tmp_path)["errors"]
    expected = {
        "InferenceService/top-level at spec.predicter: unknown field",
        "InferenceService/model at spec.predictor.model.protocolVersoin: unknown field",
        "InferenceService/pod at spec.predictor.securityContext.runAsNonroot: unknown field",
        "InferenceService/type at spec.predictor.terminationGracePeriodSeconds: expected int",
        "InferenceService/list at spec.predictor.volumes: expected a list",
        "ServingRuntime/container at spec.containers[0].securityContext.readOnlyRootFileSystem: "
        "unknown field",
        "ServingRuntime/boolean at spec.containers[0].ports[0].containerPort: expected int",
    }
    assert len(errors) == len(expected), errors
    for prefix in expected:
        assert any(error.startswith(prefix) for error in errors), (prefix, errors)


def test_inference_service_is_raw_v2_on_the_runtime(objects: list[Manifest]) -> None:
    service = manifests.only(objects, "InferenceService")
    runtime = manifests.only(objects, "ServingRuntime")
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {
        model_format["name"] for model_format in runtime["spec"]["supportedModelFormats"]
    }
    # The model is in the image: no storage initializer to download it.
    assert "storageUri" not in model


def test_runtime_has_the_base_container_hardening(
    objects: list[Manifest], base_objects: list[Manifest]
) -> None:
    base = manifests.container(manifests.only(base_objects, "Deployment"), NAME)
    container = runtime_container(objects)
    assert {field: container.get(field) for field in CONTAINER_FIELDS} == {
        field: base.get(field) for field in CONTAINER_FIELDS
    }


def test_runtime_requests_what_production_does(
    objects: list[Manifest], production_objects: list[Manifest], base_objects: list[Manifest]
) -> None:
    """The autoscaler's target is a share of the CPU request: the same range and target as
    production mean the same load per pod only with the same requests."""
    production = manifests.container(manifests.only(production_objects, "Deployment"), NAME)
    base = manifests.container(manifests.only(base_objects, "Deployment"), NAME)
    resources = runtime_container(objects)["resources"]
    assert resources == production["resources"]
    assert resources != base["resources"], "production's requests are no longer its own"


def test_runtime_image_is_productions_and_the_one_its_readme_names(
    objects: list[Manifest], production_objects: list[Manifest]
) -> None:
    image = runtime_container(objects)["image"]
    production = manifests.container(manifests.only(production_objects, "Deployment"), NAME)
    assert image == production["image"]
    (named,) = set(re.findall(r"`([a-z0-9.-]+\.[a-z]+/[^`:]+):<version>`", README.read_text()))
    version = project_image().rpartition(":")[2]
    assert image == f"{named}:{version}"


def test_an_image_set_in_the_overlay_reaches_the_runtime(tmp_path: Path) -> None:
    """What the README's `kustomize edit set image` writes: a name and a digest in `images:`."""
    tree = tmp_path / "kustomize"
    shutil.copytree(manifests.KUSTOMIZE_ROOT, tree)
    kustomization_path = tree / "overlays" / "kserve" / "kustomization.yaml"
    kustomization = manifests.load_yaml(kustomization_path)
    (entry,) = kustomization["images"]
    digest = "sha256:" + "0123456789abcdef" * 4
    entry.update(newName="registry.internal:5000/team/iris-classifier", digest=digest)
    kustomization_path.write_text(yaml.safe_dump(kustomization))
    image = runtime_container(manifests.render(kustomization_path.parent))["image"]
    assert image == f"registry.internal:5000/team/iris-classifier@{digest}"


def test_predictor_pod_has_the_base_pod_hardening(
    objects: list[Manifest], base_objects: list[Manifest]
) -> None:
    base = manifests.pod_spec(manifests.only(base_objects, "Deployment"))
    predictor = manifests.only(objects, "InferenceService")["spec"]["predictor"]
    assert {field: predictor.get(field) for field in POD_FIELDS} == {
        field: base.get(field) for field in POD_FIELDS
    }
    base_labels = manifests.pod_labels(manifests.only(base_objects, "Deployment"))
    name_label = "app.kubernetes.io/name"
    assert predictor["labels"][name_label] == base_labels[name_label]


def test_autoscaling_is_productions(objects: list[Manifest]) -> None:
    predictor = manifests.only(objects, "InferenceService")["spec"]["predictor"]
    production = manifests.render(manifests.overlay_dir("production"))
    hpa = manifests.only(production, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == (
        metric["resource"]["name"],
        metric["resource"]["target"]["averageUtilization"],
    )


def test_readiness_is_the_v2_route_with_the_base_timing(
    objects: list[Manifest], base_objects: list[Manifest]
) -> None:
    base = manifests.container(manifests.only(base_objects, "Deployment"), NAME)["readinessProbe"]
    probe = runtime_container(objects)["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    assert manifests.port_exists(probe["httpGet"]["port"], runtime_container(objects))
    timing = ("periodSeconds", "timeoutSeconds", "failureThreshold")
    assert {key: probe[key] for key in timing} == {key: base[key] for key in timing}


@pytest.mark.integration
def test_runtime_probe_paths_are_answered_by_the_running_service(
    objects: list[Manifest], live_server: str
) -> None:
    container = runtime_container(objects)
    paths = {
        container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert "/v2/health/ready" in paths
    for path in sorted(paths):
        with urllib.request.urlopen(f"{live_server}{path}", timeout=10) as response:
            assert response.status == 200, path


def kserve_pod(objects: list[Manifest]) -> Manifest:
    """The pod KServe builds: the predictor's pod fields around the runtime's container."""
    predictor = manifests.only(objects, "InferenceService")["spec"]["predictor"]
    spec = {key: value for key, value in predictor.items() if key not in KSERVE_PREDICTOR_FIELDS}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{NAME}-predictor", "namespace": NAMESPACE},
        "spec": {**spec, "containers": [runtime_container(objects)]},
    }


@pytest.mark.parametrize("version", REQUIRED_VERSIONS)
def test_known_kinds_and_the_pod_pass_strict_kubernetes_schemas(
    objects: list[Manifest], version: str
) -> None:
    known = [obj for obj in objects if not obj["apiVersion"].startswith(KSERVE_GROUP)]
    errors = [manifests.schema_error(obj, version) for obj in [*known, kserve_pod(objects)]]
    assert [error for error in errors if error] == []


def test_strict_pod_check_catches_a_misspelt_runtime_field(objects: list[Manifest]) -> None:
    pod = kserve_pod(objects)
    pod["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    assert manifests.schema_error(pod, "1.29") is not None


def test_component_and_overlay_have_readmes() -> None:
    for folder in (COMPONENT, OVERLAY):
        readme = folder / "README.md"
        assert readme.is_file(), readme
        assert readme.read_text().strip(), readme
