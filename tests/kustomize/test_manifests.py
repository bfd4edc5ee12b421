"""The kustomize overlays render, pass strict schema validation and keep their promises.

Everything here runs on the objects kustomize renders, so a patch that misses its target or
a transformer that rewrites a selector is caught the way a cluster would see it. Probe paths
are checked against the service itself, not against a list written down twice.
"""

from __future__ import annotations

import copy as copy_module
import dataclasses
import ipaddress
import os
import re
import shutil
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import pod_emulation
from harness.containers import project_image
from harness.processes import REPO_ROOT
from iris_classifier.serving.config import MAX_BATCH_ROWS
from tests.conftest import SEED_FLOWER, SEED_TENSOR_REQUEST
from tests.conftest import require as _require
from tests.support import gateway_api_schema, manifests
from tests.support.manifests import Manifest

NAME = "iris-classifier"
NAMESPACE = "iris-classifier"
BENTO_UID = 1034
KIND_REPLICAS = 3
PRODUCTION_MIN_REPLICAS = 3
# The release range the manifests promise to work on (the README states it); newer shipped
# schemas are checked too.
OLDEST_RELEASE, NEWEST_RELEASE = 29, 37
REQUIRED_VERSIONS = tuple(f"1.{minor}" for minor in range(OLDEST_RELEASE, NEWEST_RELEASE + 1))
KIND_CONFIG = manifests.overlay_dir("kind") / "kind-config.yaml"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Both label keys every selector uses: another instance in the same namespace can be told apart.
SELECTOR_LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/instance": NAME}
# Kinds that need cluster-scope rights to create (the ones a kustomization might plausibly add).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "IngressClass",
        "GatewayClass",
        "PersistentVolume",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "CiliumClusterwideNetworkPolicy",
    }
)


def _require_kustomize() -> None:
    _require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")


@pytest.fixture(scope="module", params=manifests.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    _require_kustomize()
    return request.param, manifests.render(manifests.overlay_dir(request.param))


@pytest.fixture(scope="module")
def kind_objects() -> list[Manifest]:
    _require_kustomize()
    return manifests.render(manifests.overlay_dir("kind"))


@pytest.fixture(scope="module")
def production_objects() -> list[Manifest]:
    _require_kustomize()
    return manifests.render(manifests.overlay_dir("production"))


def _production_with(workdir: Path, components: list[str]) -> list[Manifest]:
    """Production with its components replaced by `components` (names under components/)."""
    tree = workdir / "kustomize"
    shutil.copytree(manifests.KUSTOMIZE_ROOT, tree)
    kustomization_path = tree / "overlays" / "production" / "kustomization.yaml"
    kustomization = manifests.load_yaml(kustomization_path)
    kustomization["components"] = [f"../../components/{name}" for name in components]
    kustomization_path.write_text(yaml.safe_dump(kustomization))
    return manifests.render(tree / "overlays" / "production")


@pytest.fixture(scope="module")
def production_with_components(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """Production with every component enabled (each gateway-access way at once, for the
    schemas), the way its README says to do it."""
    _require_kustomize()
    return _production_with(tmp_path_factory.mktemp("all-components"), list(manifests.COMPONENTS))


@pytest.fixture(scope="module", params=manifests.GATEWAY_ACCESS)
def production_with_gateway_access(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[Manifest]]:
    """Production as it ships, with one gateway-access component in place of its own."""
    _require_kustomize()
    name = request.param
    return name, _production_with_access(tmp_path_factory.mktemp(name.replace("/", "-")), name)


def _production_with_access(workdir: Path, access: str) -> list[Manifest]:
    enabled = [
        component if not component.startswith("gateway-access/") else access
        for component in _production_components()
    ]
    return _production_with(workdir, enabled)


def _production_components() -> list[str]:
    kustomization = manifests.load_yaml(manifests.overlay_dir("production") / "kustomization.yaml")
    return [
        entry.removeprefix("../../components/") for entry in kustomization.get("components", [])
    ]


def _project_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["version"]


# --- rendering and schemas ---------------------------------------------------------------------


def test_every_overlay_renders_each_object_once(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    keys = [
        (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) for obj in objects
    ]
    assert len(keys) == len(set(keys)), keys
    assert {"ServiceAccount", "Service", "Deployment"} <= {key[0] for key in keys}


def test_kind_creates_its_namespace_and_production_leaves_it_to_the_platform(
    kind_objects: list[Manifest], production_objects: list[Manifest]
) -> None:
    """`kubectl apply -k` on kind creates what it needs; on production it needs only rights in
    the namespace, and `kubectl delete -k` cannot take the namespace with it."""
    (namespace,) = manifests.all_of(kind_objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    cluster_scoped = [
        manifests.describe(obj) for obj in production_objects if obj["kind"] in CLUSTER_SCOPED_KINDS
    ]
    assert cluster_scoped == []
    for obj in production_objects:
        assert obj["metadata"].get("namespace") == NAMESPACE, manifests.describe(obj)


# kserve too, though it belongs to overlays/kserve rather than to production.
@pytest.mark.parametrize("component", [*manifests.COMPONENTS, "kserve"])
@pytest.mark.parametrize("namespace", [None, "staging"])
def test_every_component_renders_into_the_namespace_of_the_overlay(
    component: str, namespace: str | None, tmp_path: Path
) -> None:
    """A throwaway overlay with only the base and the component: without a `namespace:` line
    (as kind has none) everything lands in the base's namespace, with one in that one."""
    _require_kustomize()
    # The production NetworkPolicy too, which some components only patch, in the base's
    # namespace like every object of the base.
    policy = tmp_path / "networkpolicy.yaml"
    document = manifests.load_yaml(manifests.overlay_dir("production") / policy.name)
    document["metadata"]["namespace"] = NAMESPACE
    policy.write_text(yaml.safe_dump(document))
    resources = ["../../base", policy.name]
    without = manifests.render_overlay_of(
        tmp_path, resources=resources, files=[policy], namespace=namespace
    )
    rendered = manifests.render_overlay_of(
        tmp_path, resources=resources, files=[policy], components=[component], namespace=namespace
    )
    assert rendered != without, f"{component} changes nothing"
    expected = namespace or NAMESPACE
    for obj in rendered:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == expected
        else:
            assert obj["metadata"].get("namespace") == expected, manifests.describe(obj)


def test_every_object_carries_the_app_labels(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == NAME, manifests.describe(obj)
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", manifests.describe(obj)


def test_every_namespaced_object_lands_in_the_app_namespace(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, manifests.describe(obj)


def test_the_targeted_kubernetes_releases_have_schemas() -> None:
    assert set(REQUIRED_VERSIONS) <= set(manifests.schema_versions())


def test_readmes_promise_the_release_range_that_is_validated() -> None:
    claims = [
        (str(path.relative_to(REPO_ROOT)), claim.groups())
        for path in [REPO_ROOT / "README.md", *manifests.KUSTOMIZE_ROOT.rglob("README.md")]
        for claim in re.finditer(
            r"(?:validated\s+for|release\s+from)\s+(1\.\d+)\s+to\s+(1\.\d+)", path.read_text()
        )
    ]
    assert claims, "no README states the validated Kubernetes releases"
    assert {range_ for _, range_ in claims} == {(REQUIRED_VERSIONS[0], REQUIRED_VERSIONS[-1])}, (
        claims
    )


@pytest.mark.parametrize("version", manifests.schema_versions())
def test_overlays_pass_strict_schema_validation(
    overlay: tuple[str, list[Manifest]], version: str
) -> None:
    name, objects = overlay
    errors = [
        manifests.schema_error(obj, version)
        for obj in objects
        if not manifests.is_custom_resource(obj)
    ]
    assert [error for error in errors if error] == [], f"overlay {name}, Kubernetes {version}"


@pytest.mark.parametrize("version", REQUIRED_VERSIONS)
def test_components_pass_strict_schema_validation(
    production_with_components: list[Manifest], version: str
) -> None:
    errors = [
        manifests.schema_error(obj, version)
        for obj in production_with_components
        if not manifests.is_custom_resource(obj)
    ]
    assert [error for error in errors if error] == []


def test_strict_validation_rejects_a_misspelt_field(kind_objects: list[Manifest]) -> None:
    deployment = manifests.only(kind_objects, "Deployment")
    security = manifests.container(deployment, NAME)["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    assert manifests.schema_error(deployment, REQUIRED_VERSIONS[0]) is not None


def test_kustomizations_use_no_deprecated_fields() -> None:
    deprecated = ("commonLabels", "patchesStrategicMerge", "patchesJson6902", "bases", "vars")
    for path in manifests.KUSTOMIZE_ROOT.rglob("kustomization.yaml"):
        used = set(manifests.load_yaml(path)) & set(deprecated)
        assert not used, f"{path.relative_to(REPO_ROOT)} uses {sorted(used)}"


# --- selectors and ports -----------------------------------------------------------------------


def test_deployment_selector_matches_its_pod_labels(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    deployment = manifests.only(objects, "Deployment")
    selector = deployment["spec"]["selector"]
    assert selector.get("matchLabels"), "an empty selector would adopt foreign pods"
    assert manifests.selector_matches(selector, manifests.pod_labels(deployment))


def test_every_selector_in_the_overlay_selects_the_pods(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    labels = manifests.pod_labels(manifests.only(objects, "Deployment"))
    service = manifests.only(objects, "Service")
    assert service["spec"]["selector"], "a Service without selector gets no endpoints"
    assert manifests.selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    for budget in manifests.all_of(objects, "PodDisruptionBudget"):
        assert manifests.selector_matches(budget["spec"]["selector"], labels)
    for policy in manifests.all_of(objects, "NetworkPolicy"):
        assert policy["spec"]["podSelector"], "an empty podSelector would govern every pod"
        assert manifests.selector_matches(policy["spec"]["podSelector"], labels)
    spec = manifests.pod_spec(manifests.only(objects, "Deployment"))
    for constraint in spec.get("topologySpreadConstraints", []):
        assert manifests.selector_matches(constraint["labelSelector"], labels)


def test_service_target_port_exists_on_the_container(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    (port,) = manifests.only(objects, "Service")["spec"]["ports"]
    assert port["port"] == 8080
    assert port["targetPort"] == "http"
    assert manifests.port_exists(port["targetPort"], app)
    assert manifests.port_exists(3000, app)


def test_probes_and_network_policy_use_ports_of_the_container(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert manifests.port_exists(app[probe]["httpGet"]["port"], app), probe
    for policy in manifests.all_of(objects, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for port in rule["ports"]:
                assert manifests.port_exists(port["port"], app)


def test_probes_use_bentoml_health_endpoints(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    assert app["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_probe_paths_are_answered_by_the_running_service(
    kind_objects: list[Manifest], live_server: str
) -> None:
    app = manifests.container(manifests.only(kind_objects, "Deployment"), NAME)
    for path in sorted(_probe_paths(app)):
        with urllib.request.urlopen(f"{live_server}{path}", timeout=10) as response:
            assert response.status == 200, path


def test_grace_period_covers_the_drain_and_the_request_timeout(
    kind_objects: list[Manifest], service_class: Any
) -> None:
    deployment = manifests.only(kind_objects, "Deployment")
    drain = _drain_seconds(manifests.container(deployment, NAME))
    request_timeout = service_class.config["traffic"]["timeout"]
    grace = manifests.pod_spec(deployment)["terminationGracePeriodSeconds"]
    # The last request may start just before the drain ends; workers then need a moment to exit.
    assert grace >= drain + request_timeout + 5


# --- per-overlay promises ----------------------------------------------------------------------


def test_kind_runs_the_image_make_image_builds(kind_objects: list[Manifest]) -> None:
    app = manifests.container(manifests.only(kind_objects, "Deployment"), NAME)
    assert app["image"] == project_image()
    # Loaded onto the nodes, never in a registry: a pull could only wait and fail.
    assert app["imagePullPolicy"] == "Never"


def test_the_version_is_written_once_in_the_manifests(
    kind_objects: list[Manifest], production_objects: list[Manifest]
) -> None:
    version = _project_version()
    naming = [
        path.relative_to(REPO_ROOT)
        for path in manifests.KUSTOMIZE_ROOT.rglob("*.yaml")
        if version in path.read_text()
    ]
    assert naming == [Path("kustomize/base/kustomization.yaml")]
    for objects in (kind_objects, production_objects):
        image = manifests.container(manifests.only(objects, "Deployment"), NAME)["image"]
        assert image.endswith(project_image()), image


def test_kind_has_three_replicas_behind_the_mapped_node_port(kind_objects: list[Manifest]) -> None:
    assert manifests.only(kind_objects, "Deployment")["spec"]["replicas"] == KIND_REPLICAS
    service = manifests.only(kind_objects, "Service")
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    config = manifests.load_yaml(KIND_CONFIG)
    mappings = [
        mapping for node in config["nodes"] for mapping in node.get("extraPortMappings", [])
    ]
    assert [m["containerPort"] for m in mappings] == [port["nodePort"]]
    assert isinstance(mappings[0]["hostPort"], int)
    assert all(m.get("listenAddress") == "127.0.0.1" for m in mappings), "keep it off the LAN"


def test_kind_config_has_one_control_plane_and_two_workers() -> None:
    config = manifests.load_yaml(KIND_CONFIG)
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert sorted(node["role"] for node in config["nodes"]) == ["control-plane", "worker", "worker"]


def test_production_image_is_pinned_from_a_registry(production_objects: list[Manifest]) -> None:
    image = manifests.container(manifests.only(production_objects, "Deployment"), NAME)["image"]
    name, _, digest = image.partition("@")
    registry, _, repository = name.partition("/")
    # A first path part with a dot or a port is a registry host; otherwise Docker Hub is implied.
    assert repository, image
    assert "." in registry or ":" in registry, image
    tag = repository.rpartition(":")[2] if ":" in repository else ""
    assert digest.startswith("sha256:") or tag not in ("", "latest"), image


def test_production_replicas_are_owned_by_the_autoscaler(
    production_objects: list[Manifest],
) -> None:
    deployment = manifests.only(production_objects, "Deployment")
    assert "replicas" not in deployment["spec"], "apply would reset what the autoscaler set"
    autoscaler = manifests.only(production_objects, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= PRODUCTION_MIN_REPLICAS
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_production_disruptions_and_rollouts_keep_pods_serving(
    production_objects: list[Manifest],
) -> None:
    budget = manifests.only(production_objects, "PodDisruptionBudget")["spec"]
    assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable", 0) >= 2
    deployment = manifests.only(production_objects, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_pods_spread_over_nodes_in_every_overlay(overlay: tuple[str, list[Manifest]]) -> None:
    """Strictly on kind, where every worker has room; as a preference in production, where a
    full node must not hold a scale-up Pending (kustomize/README.md#scheduling)."""
    name, objects = overlay
    spec = manifests.pod_spec(manifests.only(objects, "Deployment"))
    by_key = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    expected = "ScheduleAnyway" if name == "production" else "DoNotSchedule"
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == expected
    for constraint in by_key.values():
        # Ignoring taints would count an unusable control plane as an empty node: never met.
        assert constraint["nodeTaintsPolicy"] == "Honor"
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_kind_spread_gives_every_worker_a_pod_before_any_gets_a_second(
    kind_objects: list[Manifest],
) -> None:
    """Replays the scheduler's spread filter on kind's nodes, choosing at each step the worst
    node the constraint still allows (the fullest): a node may take the next pod only if its
    count plus one exceeds the smallest count over the counted nodes by at most maxSkew. With
    nodeTaintsPolicy Ignore the tainted control plane is counted, at 0, and the third pod
    could not be placed; with a maxSkew of 2, or ScheduleAnyway, one worker could get two pods
    while the other has none."""
    deployment = manifests.only(kind_objects, "Deployment")
    spec = manifests.pod_spec(deployment)
    (by_node,) = [
        c for c in spec["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"
    ]
    # The control plane is tainted and the pods do not tolerate it: only workers take pods.
    assert not spec.get("tolerations")
    roles = [node["role"] for node in manifests.load_yaml(KIND_CONFIG)["nodes"]]
    workers = [index for index, role in enumerate(roles) if role == "worker"]
    honours_taints = by_node.get("nodeTaintsPolicy", "Ignore") == "Honor"
    counted = workers if honours_taints else list(range(len(roles)))
    enforced = by_node["whenUnsatisfiable"] == "DoNotSchedule"
    pods = [0] * len(roles)
    for pod in range(1, deployment["spec"]["replicas"] + 1):
        lowest = min(pods[index] for index in counted)
        allowed = [
            index
            for index in workers
            if not enforced or pods[index] + 1 - lowest <= by_node["maxSkew"]
        ]
        assert allowed, f"pod {pod} cannot be scheduled; pods per node {pods}"
        pods[max(allowed, key=pods.__getitem__)] += 1
        on_workers = [pods[index] for index in workers]
        assert max(on_workers) - min(on_workers) <= 1, f"pods per node after pod {pod}: {pods}"
    assert min(pods[index] for index in workers) >= 1, f"a worker serves nothing: {pods}"


def test_pods_run_on_linux_nodes_only(overlay: tuple[str, list[Manifest]]) -> None:
    """Windows nodes could not run the image, and would count as empty spread domains."""
    _, objects = overlay
    spec = manifests.pod_spec(manifests.only(objects, "Deployment"))
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint.get("nodeAffinityPolicy", "Honor") == "Honor"


def test_every_selector_names_the_app_and_its_instance(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """The Deployment's selector is immutable: it carries the instance label from the start, so
    a second instance in the namespace never needs it changed."""
    _, objects = overlay
    deployment = manifests.only(objects, "Deployment")
    assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR_LABELS}
    assert manifests.only(objects, "Service")["spec"]["selector"] == SELECTOR_LABELS
    selectors = [
        budget["spec"]["selector"] for budget in manifests.all_of(objects, "PodDisruptionBudget")
    ]
    selectors += [
        policy["spec"]["podSelector"] for policy in manifests.all_of(objects, "NetworkPolicy")
    ]
    selectors += [
        constraint["labelSelector"]
        for constraint in manifests.pod_spec(deployment)["topologySpreadConstraints"]
    ]
    for selector in selectors:
        assert selector == {"matchLabels": SELECTOR_LABELS}, selector


def test_production_also_spreads_pods_over_zones(production_objects: list[Manifest]) -> None:
    spec = manifests.pod_spec(manifests.only(production_objects, "Deployment"))
    keys = {constraint["topologyKey"] for constraint in spec["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_production_network_policy_admits_only_labelled_clients(
    production_objects: list[Manifest],
) -> None:
    policy = manifests.only(production_objects, "NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["egress"] == [], "the service opens no connection"
    # The first rule is the overlay's own; components append theirs.
    clients = policy["ingress"][0]
    (peer,) = clients["from"]
    assert peer["podSelector"]["matchLabels"] == {"iris-classifier/client": "true"}
    _assert_admits_named_namespaces_only(peer)
    assert clients["ports"] == [{"port": "http", "protocol": "TCP"}]


def _assert_admits_named_namespaces_only(peer: Manifest) -> None:
    """A peer that needs its namespace to be one named here AND its pod labels: a label alone
    (an empty or missing namespaceSelector) would admit a pod any tenant labels."""
    namespaces = peer.get("namespaceSelector")
    assert namespaces, f"any namespace may label a pod and get in: {peer}"
    named = namespaces.get("matchLabels", {}).get(NAMESPACE_NAME_LABEL)
    expressions = namespaces.get("matchExpressions", [])
    assert named or any(
        expression["key"] == NAMESPACE_NAME_LABEL
        and expression["operator"] == "In"
        and expression["values"]
        for expression in expressions
    ), peer
    assert peer.get("podSelector", {}).get("matchLabels"), peer


def test_every_network_policy_peer_is_a_named_namespace_and_label_or_a_range(
    production_with_components: list[Manifest],
) -> None:
    policy = manifests.only(production_with_components, "NetworkPolicy")["spec"]
    for rule in policy["ingress"]:
        assert rule["from"], "a rule without `from` admits everyone"
        assert rule["ports"], "a rule without `ports` admits every port"
        for peer in rule["from"]:
            if "ipBlock" in peer:
                network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert network.prefixlen > 0, "a range of every address admits everyone"
                assert set(peer) == {"ipBlock"}
            else:
                _assert_admits_named_namespaces_only(peer)


def test_production_requests_at_least_what_kind_does(
    kind_objects: list[Manifest], production_objects: list[Manifest]
) -> None:
    def resources(objects: list[Manifest]) -> Manifest:
        return manifests.container(manifests.only(objects, "Deployment"), NAME)["resources"]

    kind, production = resources(kind_objects), resources(production_objects)
    assert production["limits"]["memory"] == production["requests"]["memory"]
    assert manifests.quantity(production["requests"]["cpu"]) >= manifests.quantity(
        kind["requests"]["cpu"]
    )
    assert manifests.quantity(production["limits"]["memory"]) >= manifests.quantity(
        kind["limits"]["memory"]
    )


# --- hardening, the same in every overlay ------------------------------------------------------


def test_pods_run_as_the_bentoml_user_read_only_and_unprivileged(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    deployment = manifests.only(objects, "Deployment")
    spec = manifests.pod_spec(deployment)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == BENTO_UID
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    for app in spec["containers"]:
        security = app["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "add" not in security["capabilities"]
        assert security.get("runAsUser", BENTO_UID) == BENTO_UID
        assert security.get("privileged", False) is False
    assert not any("hostPath" in volume for volume in spec.get("volumes", []))
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_namespace), host_namespace


def test_pods_get_a_writable_tmp_and_no_api_token(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    spec = manifests.pod_spec(manifests.only(objects, "Deployment"))
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {
        mount["mountPath"]: mount["name"]
        for mount in manifests.container(manifests.only(objects, "Deployment"), NAME)[
            "volumeMounts"
        ]
    }
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert spec["automountServiceAccountToken"] is False
    account = manifests.only(objects, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False


def test_namespace_enforces_the_restricted_pod_security_standard(
    kind_objects: list[Manifest],
) -> None:
    labels = manifests.only(kind_objects, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_know_their_name_for_the_served_by_header(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    env = {
        var["name"]: var
        for var in manifests.container(manifests.only(objects, "Deployment"), NAME)["env"]
    }
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BENTOML_DO_NOT_TRACK"]["value"] == "true"


def test_pods_drain_until_balancers_have_taken_them_out(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """SIGTERM starts the drain (no preStop hook): it must outlast a failing readiness probe."""
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    assert "lifecycle" not in app, "the service drains on SIGTERM; a preStop pause would add to it"
    readiness = app["readinessProbe"]
    detected = readiness["periodSeconds"] * readiness["failureThreshold"]
    assert _drain_seconds(app) >= detected + readiness["timeoutSeconds"] + 3


def test_pods_log_json_lines(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    env = {
        var["name"]: var
        for var in manifests.container(manifests.only(objects, "Deployment"), NAME)["env"]
    }
    assert env["IRIS_LOG_FORMAT"]["value"] == "json"


def test_pods_recycle_connections_and_outlast_balancers_idle_timeouts(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """Pooled clients reach every pod only if connections end; an idle one must be closed by
    the balancer in front (GCP's 600 s is the longest common one), never by the pod."""
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    env = {var["name"]: var.get("value") for var in app["env"]}
    assert int(env["IRIS_CONNECTION_MAX_REQUESTS"]) > 0
    assert float(env["IRIS_CONNECTION_MAX_SECONDS"]) > 0
    args = app.get("args", [])
    assert "--timeout-keep-alive" in args, "BentoML's default idle timeout is 5 s"
    assert int(args[args.index("--timeout-keep-alive") + 1]) > 600


def test_pods_close_slow_heads_and_bound_their_connections(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """A NodePort leaves the pod alone with slow clients; the defaults are stated in the spec."""
    _, objects = overlay
    app = manifests.container(manifests.only(objects, "Deployment"), NAME)
    env = {var["name"]: var.get("value") for var in app["env"]}
    assert 0 < float(env["IRIS_HEAD_TIMEOUT_SECONDS"]) <= 10
    # Below the soft limit of open files containerd 2 gives a container.
    assert 0 < int(env["IRIS_MAX_CONNECTIONS"]) < 1024


def test_resources_request_cpu_and_memory_and_limit_memory(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    resources = manifests.container(manifests.only(objects, "Deployment"), NAME)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert manifests.quantity(resources["limits"]["memory"]) >= manifests.quantity(
        resources["requests"]["memory"]
    )


# The kubelet's default log rotation (containerLogMaxFiles 5 x containerLogMaxSize 10Mi): the
# most log a container keeps, which counts against its ephemeral-storage limit.
KUBELET_DEFAULT_LOG_BYTES = 5 * 10 * 2**20


def test_ephemeral_storage_covers_tmp_and_the_rotated_log(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """Without a limit one pod could fill the node's disk; with one below what /tmp and the log
    may hold, the kubelet would evict a healthy pod."""
    _, objects = overlay
    deployment = manifests.only(objects, "Deployment")
    resources = manifests.container(deployment, NAME)["resources"]
    request = manifests.quantity(resources["requests"]["ephemeral-storage"])
    limit = manifests.quantity(resources["limits"]["ephemeral-storage"])
    tmp_volumes = [
        volume["emptyDir"]
        for volume in manifests.pod_spec(deployment)["volumes"]
        if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory"
    ]
    on_disk = sum(manifests.quantity(volume["sizeLimit"]) for volume in tmp_volumes)
    assert 0 < request <= limit
    assert limit >= on_disk + KUBELET_DEFAULT_LOG_BYTES


# --- optional components -----------------------------------------------------------------------


# What the HTTPRoute publishes, as (method, path match type, path): the calls clients make and
# nothing else. The V2 model metadata is public: a V2 client reads the tensors' names, shapes and
# types, and the class and feature order, from it. The versioned prefix is POST only, and the
# service answers POST under it on `.../versions/<version>/infer` alone.
PUBLISHED_ROUTES = {
    ("POST", "Exact", "/iris/classify_iris"),
    ("POST", "Exact", "/iris/classify_batch"),
    ("POST", "Exact", "/v2/models/iris_classifier/infer"),
    ("POST", "PathPrefix", "/v2/models/iris_classifier/versions"),
    ("GET", "Exact", "/v2/models/iris_classifier"),
}
# Paths that answer for one replica (probes), for the operators (metrics, the model card with
# its hyper-parameters and data digest, the API page) or that clients do not call; the
# Deployment's own probe paths and the served version's ready route are added to these.
UNPUBLISHED_PATHS = (
    "/iris/model",
    "/healthcheck",
    "/livez",
    "/readyz",
    "/healthz",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/iris_classifier/ready",
    "/metrics",
    "/v2",
    "/",
    "/docs",
    "/docs.json",
    "/schema.json",
)
# A match without a method takes every method.
ANY_METHOD = "*"
# Methods that read a path: a route that forwards one of them on an unpublished path publishes it.
READING_METHODS = {"GET", "HEAD", ANY_METHOD}


def _published(route: Manifest) -> set[tuple[str, str, str]]:
    """(method, path match type, path) of every match, with the Gateway API's defaults: a rule
    without matches, or a match without a path, takes every path; one without a method, every
    method ("*")."""
    return {
        (match.get("method", ANY_METHOD), *_path_match(match).values())
        for rule in route["spec"]["rules"]
        for match in rule.get("matches") or [{}]
    }


def _path_match(match: Manifest) -> dict[str, str]:
    path = match.get("path", {})
    return {"type": path.get("type", "PathPrefix"), "value": path.get("value", "/")}


def _forwarded_methods(route: Manifest, path: str) -> set[str]:
    """The methods the route sends on to the Service for `path` ("*": any)."""
    return {
        method
        for method, match_type, value in _published(route)
        if _route_matches({"type": match_type, "value": value}, path)
    }


def test_httproute_publishes_only_what_clients_call(
    production_with_components: list[Manifest],
) -> None:
    route = manifests.only(production_with_components, "HTTPRoute")
    assert _published(route) == PUBLISHED_ROUTES


def test_httproute_publishes_no_probe_metrics_or_model_card(
    production_with_components: list[Manifest], service_client: Any
) -> None:
    """No unpublished path is forwarded with a method that reads it; any other method the route
    forwards there (POST under the versioned prefix) is one the service refuses."""
    route = manifests.only(production_with_components, "HTTPRoute")
    app = manifests.container(manifests.only(production_with_components, "Deployment"), NAME)
    (version,) = service_client.get("/v2/models/iris_classifier").json()["versions"]
    versioned = f"/v2/models/iris_classifier/versions/{version}"
    unpublished = {*UNPUBLISHED_PATHS, *_probe_paths(app), f"{versioned}/ready", versioned}
    for path in sorted(unpublished):
        forwarded = _forwarded_methods(route, path)
        assert forwarded & READING_METHODS == set(), (path, forwarded)
        for method in sorted(forwarded):
            assert service_client.request(method, path).status_code in {404, 405}, (method, path)


def test_httproute_forwards_every_call_clients_make_to_the_service(
    production_with_components: list[Manifest], service_client: Any
) -> None:
    route = manifests.only(production_with_components, "HTTPRoute")
    (version,) = service_client.get("/v2/models/iris_classifier").json()["versions"]
    calls = [
        ("POST", "/iris/classify_iris", SEED_FLOWER),
        ("POST", "/iris/classify_batch", {"flowers": [SEED_FLOWER]}),
        ("POST", "/v2/models/iris_classifier/infer", SEED_TENSOR_REQUEST),
        ("POST", f"/v2/models/iris_classifier/versions/{version}/infer", SEED_TENSOR_REQUEST),
        ("GET", "/v2/models/iris_classifier", None),
    ]
    for method, path, body in calls:
        assert method in _forwarded_methods(route, path), (method, path)
        assert service_client.request(method, path, json=body).status_code == 200, (method, path)
    (rule,) = route["spec"]["rules"]
    service = manifests.only(production_with_components, "Service")
    assert route["metadata"]["namespace"] == service["metadata"]["namespace"]
    (parent,) = route["spec"]["parentRefs"]
    assert (parent["group"], parent["kind"]) == ("gateway.networking.k8s.io", "Gateway")
    port_numbers = {port["port"] for port in service["spec"]["ports"]}
    for backend in rule["backendRefs"]:
        assert backend.get("kind", "Service") == "Service"
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] in port_numbers


def test_the_route_check_counts_a_match_without_method_or_path_as_everything() -> None:
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/iris"}}, {"method": "POST"}]}
    route = {"spec": {"rules": [rule, {}]}}
    assert _published(route) == {
        ("*", "PathPrefix", "/iris"),
        ("POST", "PathPrefix", "/"),
        ("*", "PathPrefix", "/"),
    }
    assert _forwarded_methods(route, "/iris/model") == {"*", "POST"}
    assert _forwarded_methods({"spec": {"rules": [{"matches": [rule["matches"][1]]}]}}, "/x") == {
        "POST"
    }


def test_httproute_waits_for_the_services_own_timeout_answer(
    production_with_components: list[Manifest], service_class: Any
) -> None:
    (rule,) = manifests.only(production_with_components, "HTTPRoute")["spec"]["rules"]
    timeouts = rule["timeouts"]
    backend, request = _duration_s(timeouts["backendRequest"]), _duration_s(timeouts["request"])
    assert backend <= request, "the Gateway API requires backendRequest <= request"
    assert backend > service_class.config["traffic"]["timeout"]


def _route_matches(path_match: Manifest, path: str) -> bool:
    """Gateway API path matching: Exact, or PathPrefix by whole path elements."""
    value = path_match["value"]
    if path_match["type"] == "Exact":
        return path == value
    assert path_match["type"] == "PathPrefix", path_match
    prefix = value.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _duration_s(duration: str) -> float:
    """A Gateway API duration ("15s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(int(number) * units[unit] for number, unit in parts)


def _require_gateway_api_schema() -> None:
    reason = gateway_api_schema.unavailable_reason()
    _require(reason is None, reason or "")


def test_production_publishes_an_httproute_that_passes_the_gateway_api_schema(
    production_objects: list[Manifest],
) -> None:
    _require_gateway_api_schema()
    route = manifests.only(production_objects, "HTTPRoute")
    assert gateway_api_schema.schema_errors([route]) == [[]]


def test_gateway_api_schema_check_rejects_what_the_api_would(
    production_with_components: list[Manifest],
) -> None:
    _require_gateway_api_schema()
    route = manifests.only(production_with_components, "HTTPRoute")

    def broken(change: Any) -> Manifest:
        copy = copy_module.deepcopy(route)
        change(copy["spec"]["rules"][0])
        return copy

    misspelt = broken(lambda rule: rule.update(backendRef=rule.pop("backendRefs")))
    bad_duration = broken(lambda rule: rule["timeouts"].update(request="15 seconds"))
    bad_match = broken(lambda rule: rule["matches"][0]["path"].update(type="Prefix"))
    errors = gateway_api_schema.schema_errors([misspelt, bad_duration, bad_match])
    assert errors[0] == ["/spec/rules/0/backendRef: not a field of the schema"]
    assert [error.split(":")[0] for error in errors[1]] == ["/spec/rules/0/timeouts/request"]
    assert [error.split(":")[0] for error in errors[2]] == ["/spec/rules/0/matches/0/path/type"]


def test_servicemonitor_component_scrapes_the_service(
    production_with_components: list[Manifest],
) -> None:
    service = manifests.only(production_with_components, "Service")
    monitor = manifests.only(production_with_components, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert manifests.selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"


def test_bearer_tokens_component_mounts_the_secret_read_only_and_names_the_file(
    production_with_components: list[Manifest],
) -> None:
    deployment = manifests.only(production_with_components, "Deployment")
    spec = manifests.pod_spec(deployment)
    app = manifests.container(deployment, "iris-classifier")
    token_file = {item["name"]: item.get("value") for item in app["env"]}["IRIS_TOKEN_FILE"]
    volume = {item["name"]: item for item in spec["volumes"]}["tokens"]
    assert volume["secret"]["secretName"] == "iris-classifier-tokens"
    assert volume["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]
    mount = {item["name"]: item for item in app["volumeMounts"]}["tokens"]
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the Secret's updates
    assert token_file == f"{mount['mountPath']}/tokens"
    # The Secret is created by hand: no token value is rendered from the repository.
    assert not [item for item in production_with_components if item["kind"] == "Secret"]


def test_servicemonitor_component_admits_prometheus(
    production_with_components: list[Manifest],
) -> None:
    policy = manifests.only(production_with_components, "NetworkPolicy")["spec"]
    peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    } in peers


def test_production_sets_the_prometheus_selector_label_once_for_both(
    production_with_components: list[Manifest],
) -> None:
    kustomization = (manifests.overlay_dir("production") / "kustomization.yaml").read_text()
    assert kustomization.count("/metadata/labels/release") == 1
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = manifests.only(production_with_components, kind)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack", kind


def test_servicemonitor_readme_patch_drops_only_the_rules(tmp_path: Path) -> None:
    """The patch its README gives for a second overlay on the same Prometheus."""
    _require_kustomize()
    readme = (manifests.KUSTOMIZE_ROOT / "components" / "servicemonitor" / "README.md").read_text()
    (block,) = [
        block for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "$patch" in block
    ]
    rendered = manifests.render_overlay_of(
        tmp_path, components=["servicemonitor"], extra=yaml.safe_load(block)
    )
    assert manifests.all_of(rendered, "PrometheusRule") == []
    assert len(manifests.all_of(rendered, "ServiceMonitor")) == 1


def test_production_names_one_gateway_access_way() -> None:
    access = [name for name in _production_components() if name.startswith("gateway-access/")]
    assert len(access) == 1, access
    assert access[0] in manifests.GATEWAY_ACCESS
    assert "gateway-api" in _production_components()


def test_each_gateway_access_admits_exactly_its_gateway(
    production_with_gateway_access: tuple[str, list[Manifest]],
) -> None:
    """Each way adds one peer (or, for Cilium, one policy) and nothing else: the clients' rule
    stays as it is, and the Gateway named in the HTTPRoute is the one let in."""
    name, objects = production_with_gateway_access
    (gateway,) = manifests.only(objects, "HTTPRoute")["spec"]["parentRefs"]
    policy = manifests.only(objects, "NetworkPolicy")["spec"]
    clients, *added = policy["ingress"]
    assert clients["from"][0]["podSelector"]["matchLabels"] == {"iris-classifier/client": "true"}
    cilium_policies = manifests.all_of(objects, "CiliumNetworkPolicy")
    if name == "gateway-access/cilium":
        assert added == []
        (cilium_policy,) = cilium_policies
        _assert_cilium_policy_admits_the_ingress_entity(cilium_policy, objects)
        return
    assert cilium_policies == []
    (rule,) = added
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    (peer,) = rule["from"]
    if name == "gateway-access/load-balancer-cidr":
        assert set(peer) == {"ipBlock"}
        assert ipaddress.ip_network(peer["ipBlock"]["cidr"]).prefixlen > 0
        return
    namespace = peer["namespaceSelector"]["matchLabels"][NAMESPACE_NAME_LABEL]
    pods = peer["podSelector"]["matchLabels"]
    if name == "gateway-access/istio":
        assert namespace == gateway["namespace"]
        assert pods == {"gateway.networking.k8s.io/gateway-name": gateway["name"]}
    else:
        assert name == "gateway-access/envoy-gateway", name
        assert namespace == "envoy-gateway-system"
        assert pods == {
            "gateway.envoyproxy.io/owning-gateway-name": gateway["name"],
            "gateway.envoyproxy.io/owning-gateway-namespace": gateway["namespace"],
        }


def _assert_cilium_policy_admits_the_ingress_entity(
    policy: Manifest, objects: list[Manifest]
) -> None:
    """Cilium's schema (offline, unknown fields refused) and what the policy must say: the
    `ingress` entity, on the container's port, for these pods only."""
    _require_gateway_api_schema()
    assert gateway_api_schema.schema_errors([policy]) == [[]]
    deployment = manifests.only(objects, "Deployment")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    spec = policy["spec"]
    assert spec["endpointSelector"] == {"matchLabels": SELECTOR_LABELS}
    assert manifests.selector_matches(spec["endpointSelector"], manifests.pod_labels(deployment))
    assert "egress" not in spec, "the NetworkPolicy already allows no egress"
    app = manifests.container(deployment, NAME)
    (rule,) = spec["ingress"]
    assert rule["fromEntities"] == ["ingress"]
    (to_ports,) = rule["toPorts"]
    (port,) = to_ports["ports"]
    assert port["protocol"] == "TCP"
    assert manifests.port_exists(int(port["port"]), app)


def test_cilium_schema_check_rejects_what_cilium_would(tmp_path: Path) -> None:
    _require_kustomize()
    _require_gateway_api_schema()
    objects = _production_with_access(tmp_path, "gateway-access/cilium")
    policy = manifests.only(objects, "CiliumNetworkPolicy")

    def broken(change: Any) -> Manifest:
        copy = copy_module.deepcopy(policy)
        change(copy["spec"]["ingress"][0])
        return copy

    misspelt = broken(lambda rule: rule.update(fromEntity=rule.pop("fromEntities")))
    bad_entity = broken(lambda rule: rule.update(fromEntities=["gateway"]))
    numeric_port = broken(lambda rule: rule["toPorts"][0]["ports"][0].update(port=3000))
    errors = gateway_api_schema.schema_errors([misspelt, bad_entity, numeric_port])
    assert errors[0] == ["/spec/ingress/0/fromEntity: not a field of the schema"]
    assert [error.split(":")[0] for error in errors[1]] == ["/spec/ingress/0/fromEntities/0"]
    assert [error.split(":")[0] for error in errors[2]] == [
        "/spec/ingress/0/toPorts/0/ports/0/port"
    ]


def test_every_component_has_a_readme() -> None:
    """Each component's folder has one, or (for the gateway-access ways) the folder above."""
    components = manifests.KUSTOMIZE_ROOT / "components"
    found = {
        str(path.parent.relative_to(components))
        for path in components.rglob("kustomization.yaml")
        if manifests.load_yaml(path)["kind"] == "Component"
    }
    assert set(manifests.COMPONENTS) <= found
    for name in sorted(found):
        folder = components / name
        readme = next(
            (
                path / "README.md"
                for path in (folder, folder.parent)
                if (path / "README.md").is_file()
            ),
            None,
        )
        assert readme is not None, name
        assert readme.read_text().strip(), name
        assert name.rpartition("/")[2] in readme.read_text(), f"{readme} does not mention {name}"


# --- the image, run as the pod spec says -------------------------------------------------------

POD_NAME = "iris-classifier-7d9f8b6c5-x2x4q"
# The burst of largest batches in the pod test: more in flight at once than a replica's worker
# takes in one go, and enough of them to keep it busy for a while.
BURST_CONCURRENCY = 8
BURST_BATCHES = 32
# What the peak working set must leave free below the memory limit: room for a larger heap
# after a dependency update, or a busier moment than the test's, before the kernel reclaims
# or the kubelet kills.
MEMORY_HEADROOM = 0.25
MIB = 2**20


@pytest.fixture(scope="module")
def kind_image(kind_objects: list[Manifest], service_image: str) -> str:
    """The kind overlay's image as this checkout builds it: the overlay names the version tag
    `make image` gives every build, and the build of this session is run by its reference."""
    image = manifests.container(manifests.only(kind_objects, "Deployment"), NAME)["image"]
    assert image == project_image()
    return service_image


@pytest.mark.integration
def test_image_serves_under_the_pod_spec(kind_objects: list[Manifest], kind_image: str) -> None:
    """Start the kind overlay's image as its pod spec says and walk through a pod's life.

    Read-only root, uid 1034, no capabilities, the memory limit, no network: if the image
    needed to write outside /tmp, run as root, bind to loopback only or reach out at start,
    it would fail here rather than in a crash-looping pod.
    """
    deployment = manifests.only(kind_objects, "Deployment")
    app = manifests.container(deployment, NAME)
    container = pod_emulation.pod_container(deployment, NAME, pod_name=POD_NAME)
    assert container.image == project_image()
    container = dataclasses.replace(container, image=kind_image)
    startup = app["startupProbe"]
    pod = pod_emulation.RunningPod(container, name=f"iris-manifest-check-{os.getpid()}")
    try:
        pod.wait_ready(
            startup["httpGet"]["path"],
            timeout=startup["periodSeconds"] * startup["failureThreshold"],
        )
        assert pod.listen_addresses() & pod_emulation.WILDCARD_ADDRESSES, (
            "the kubelet and the Service reach the pod IP, not its loopback"
        )

        probes = pod.http([("GET", path, None, 1) for path in sorted(_probe_paths(app))])
        assert [answer["status"] for answer in probes] == [200] * len(probes), probes

        # A burst of the largest requests the API takes, BURST_CONCURRENCY in flight at once,
        # with single flowers after them; the container's memory is sampled throughout.
        answers, memory = pod.burst(
            [
                (
                    "POST",
                    "/iris/classify_batch",
                    {"flowers": [SEED_FLOWER] * MAX_BATCH_ROWS},
                    BURST_BATCHES,
                ),
                ("POST", "/iris/classify_iris", SEED_FLOWER, 200),
            ],
            concurrency=BURST_CONCURRENCY,
        )
        assert [answer["status"] for answer in answers] == [200, 200], answers
        assert answers[-1]["served_by"] == POD_NAME
        assert pod.inspect("{{.State.OOMKilled}}") == "false"
        allowed = int(container.memory_limit_bytes * (1 - MEMORY_HEADROOM))
        assert memory.samples > 10, memory
        assert memory.working_set_bytes <= allowed, (
            f"peak working set {memory.working_set_bytes / MIB:.0f} MiB, more than "
            f"{allowed / MIB:.0f} MiB ({MEMORY_HEADROOM:.0%} below the limit): {memory}"
        )
        assert memory.limit_hits == 0, f"usage reached the memory limit: {memory}"

        grace = manifests.pod_spec(deployment)["terminationGracePeriodSeconds"]
        exit_code = pod.stop(grace_seconds=grace)
        assert exit_code == 0, f"SIGTERM ended in exit code {exit_code}:\n{pod.logs()}"
    finally:
        pod.remove()


def _probe_paths(app: Manifest) -> set[str]:
    return {
        app[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }


def _drain_seconds(app: Manifest) -> float:
    env = {var["name"]: var.get("value") for var in app["env"]}
    return float(env["IRIS_DRAIN_SECONDS"])


def test_readme_shows_the_command_for_the_overlay_difference_not_its_output() -> None:
    """Pasted output goes stale; the command that prints the difference does not."""
    readmes = [REPO_ROOT / "README.md", *manifests.KUSTOMIZE_ROOT.rglob("README.md")]
    kustomize_readme = (manifests.KUSTOMIZE_ROOT / "README.md").read_text()
    assert (
        "diff -u <(kubectl kustomize kustomize/overlays/kind) "
        "<(kubectl kustomize kustomize/overlays/production)"
    ) in kustomize_readme
    assert not [path for path in readmes if "```diff" in path.read_text()]
