"""The Flagger canary component, rendered into the production overlay: valid against Flagger's
own CRDs, routing what the gateway-api component publishes, selecting the pods and Services
Flagger makes, and querying only series a live replica exports."""

from __future__ import annotations

import copy
import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cluster import controlplane
from tests.conftest import require
from tests.kustomize.test_alerts import (
    MATCHER,
    SELECTOR,
    call,
    matches,
    prediction_calls,
    scrape,
)
from tests.support import manifests
from tests.support.manifests import Manifest

# The one Flagger release the component is validated against; its CRDs come from its Go module.
COMPONENT = manifests.KUSTOMIZE_ROOT / "components" / "flagger-canary"
HTTPROUTE = manifests.KUSTOMIZE_ROOT / "components" / "gateway-api" / "httproute.yaml"
FLAGGER_KINDS = ("Canary", "MetricTemplate")
# Flagger names the Deployment and Services it makes after the target, with these suffixes; the
# label it selects pods by (the Deployment's app.kubernetes.io/name) takes the same value.
PRIMARY, CANARY = "-primary", "-canary"
NAME_LABEL = "app.kubernetes.io/name"
# Labels of the series that Prometheus adds when it scrapes, and Flagger's template variables.
SCRAPE_LABELS = {"namespace", "job", "pod"}
TEMPLATE_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
METRIC_BEFORE_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def flagger_crd_file() -> Path:
    """Flagger's crd.yaml, pinned in cluster/build.sh, which copies it with the cluster's CRDs."""
    commands = controlplane.commands_dir()
    reason = controlplane.missing_commands(commands)
    require(reason is None, reason or "")
    return commands / "crds" / "flagger_crd.yaml"


def strict(schema: Any) -> Any:
    """The schema as an API server with strict field validation applies it: an object that
    lists its fields and neither allows others nor preserves unknown ones refuses any other."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        tightened["additionalProperties"] = False
    return tightened


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict]:
    """Each Flagger kind's strict openAPIV3Schema, by (apiVersion, kind)."""
    crds = yaml.safe_load_all(flagger_crd_file().read_text())
    return {
        (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"]): strict(
            version["schema"]["openAPIV3Schema"]
        )
        for crd in crds
        if crd
        for version in crd["spec"]["versions"]
    }


def schema_errors(manifest: Manifest, schemas: dict[tuple[str, str], dict]) -> list[str]:
    schema = schemas.get((manifest["apiVersion"], manifest["kind"]))
    if schema is None:
        return [f"{manifests.describe(manifest)}: Flagger has no such kind"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{manifests.describe(manifest)} at {'.'.join(map(str, error.path)) or '(top)'}: "
        f"{error.message}"
        for error in validator.iter_errors(manifest)
    ]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """The production overlay with the ServiceMonitor and this component added to its list."""
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    tree = tmp_path_factory.mktemp("flagger") / "kustomize"
    shutil.copytree(manifests.KUSTOMIZE_ROOT, tree)
    kustomization_path = tree / "overlays" / "production" / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_path.read_text())
    kustomization["components"] += [
        "../../components/servicemonitor",
        "../../components/flagger-canary",
    ]
    kustomization_path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return manifests.render(kustomization_path.parent)


def flagger_objects(rendered: list[Manifest]) -> list[Manifest]:
    objects = [manifest for manifest in rendered if manifest["kind"] in FLAGGER_KINDS]
    assert {manifest["kind"] for manifest in objects} == set(FLAGGER_KINDS)
    return objects


def test_each_flagger_object_is_valid_against_flaggers_crd(
    rendered: list[Manifest], crd_schemas: dict[tuple[str, str], dict]
) -> None:
    errors = [
        error for obj in flagger_objects(rendered) for error in schema_errors(obj, crd_schemas)
    ]
    assert errors == []


def test_the_crd_check_refuses_an_unknown_field_and_a_wrong_value(
    rendered: list[Manifest], crd_schemas: dict[tuple[str, str], dict]
) -> None:
    canary = copy.deepcopy(manifests.only(rendered, "Canary"))
    canary["spec"]["analysis"]["stepWieght"] = 10
    canary["spec"]["analysis"]["webhooks"][0]["type"] = "before-rollout"
    errors = schema_errors(canary, crd_schemas)
    assert any("stepWieght" in error for error in errors), errors
    assert any("before-rollout" in error for error in errors), errors


def route_matches(canary: Manifest) -> list[dict[str, Any]]:
    """The HTTPRoute matches Flagger's gatewayapi router writes for the Canary's `match`."""
    path_types = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}
    translated = []
    for match in canary["spec"]["service"]["match"]:
        ((how, value),) = match["uri"].items()
        translated.append(
            {"path": {"type": path_types[how], "value": value}, "method": match["method"]["exact"]}
        )
    return translated


def test_the_canary_routes_what_the_gateway_api_component_publishes(
    rendered: list[Manifest],
) -> None:
    """Flagger writes the HTTPRoute from the Canary: the same Gateway, host, matches and request
    timeout as the static route it replaces, which no longer renders (nor its Service)."""
    route = manifests.load_yaml(HTTPROUTE)
    canary = manifests.only(rendered, "Canary")
    service = canary["spec"]["service"]
    (rule,) = route["spec"]["rules"]
    assert service["gatewayRefs"] == route["spec"]["parentRefs"]
    assert service["hosts"] == route["spec"]["hostnames"]
    assert route_matches(canary) == rule["matches"]
    assert service["timeout"] == rule["timeouts"]["request"]
    assert service["port"] == rule["backendRefs"][0]["port"]
    assert manifests.all_of(rendered, "HTTPRoute") == []
    assert manifests.all_of(rendered, "Service") == []


def test_the_canary_targets_the_deployment_and_its_autoscaler(rendered: list[Manifest]) -> None:
    canary = manifests.only(rendered, "Canary")
    deployment = manifests.only(rendered, "Deployment")
    autoscaler = manifests.only(rendered, "HorizontalPodAutoscaler")
    assert canary["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert canary["spec"]["provider"] == "gatewayapi:v1"
    for reference, target in (
        (canary["spec"]["targetRef"], deployment),
        (canary["spec"]["autoscalerRef"], autoscaler),
    ):
        assert (reference["apiVersion"], reference["kind"], reference["name"]) == (
            target["apiVersion"],
            target["kind"],
            target["metadata"]["name"],
        )
    container = manifests.container(deployment, deployment["metadata"]["name"])
    assert manifests.port_exists(canary["spec"]["service"]["targetPort"], container)


def flagger_pod_labels(deployment: Manifest) -> dict[str, dict[str, str]]:
    labels = manifests.pod_labels(deployment)
    name = labels[NAME_LABEL]
    return {"canary": labels, "primary": {**labels, NAME_LABEL: name + PRIMARY}}


def test_the_policy_and_budget_select_the_primary_and_canary_pods(
    rendered: list[Manifest],
) -> None:
    pods = flagger_pod_labels(manifests.only(rendered, "Deployment"))
    policy = manifests.only(rendered, "NetworkPolicy")["spec"]["podSelector"]
    budget = manifests.only(rendered, "PodDisruptionBudget")["spec"]["selector"]
    for selector in (policy, budget):
        assert all(manifests.selector_matches(selector, labels) for labels in pods.values())
        assert not manifests.selector_matches(selector, {NAME_LABEL: "iris-classifier-other"})


def test_prometheus_scrapes_the_canary_and_primary_services_once_each(
    rendered: list[Manifest],
) -> None:
    """Flagger labels each Service it makes with its own name under the pod label's key, plus
    the Canary's labels for it; the apex Service's pods are the primary's, scraped once."""
    canary = manifests.only(rendered, "Canary")
    monitor = manifests.only(rendered, "ServiceMonitor")
    target = canary["spec"]["targetRef"]["name"]
    service = canary["spec"]["service"]
    made = {
        role: {**service[role]["labels"], NAME_LABEL: target + suffix}
        for role, suffix in (("apex", ""), ("primary", PRIMARY), ("canary", CANARY))
    }
    selected = {
        role
        for role, labels in made.items()
        if manifests.selector_matches(monitor["spec"]["selector"], labels)
    }
    assert selected == {"primary", "canary"}
    job = {labels[monitor["spec"]["jobLabel"]] for labels in made.values()}
    assert job == {"iris-classifier"}


def test_the_pre_rollout_webhook_checks_the_canarys_answers(rendered: list[Manifest]) -> None:
    canary = manifests.only(rendered, "Canary")
    (webhook,) = [
        hook for hook in canary["spec"]["analysis"]["webhooks"] if hook["type"] == "pre-rollout"
    ]
    assert webhook["metadata"]["type"] == "cmd"
    command = webhook["metadata"]["cmd"].split()
    assert command[:3] == ["python", "-m", "loadtest.answers"]
    name, namespace = canary["spec"]["targetRef"]["name"], canary["metadata"]["namespace"]
    port = canary["spec"]["service"]["port"]
    assert command[3:] == ["--url", f"http://{name}{CANARY}.{namespace}:{port}"]
    # The loadtester's pods may reach the canary through the policy.
    policy = manifests.only(rendered, "NetworkPolicy")
    assert any(
        peer.get("podSelector", {}).get("matchLabels") == {"app": "flagger-loadtester"}
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    )


def analysis_queries(rendered: list[Manifest]) -> dict[str, str]:
    """Each metric of the analysis and its template's query."""
    templates = {
        template["metadata"]["name"]: template["spec"]["query"]
        for template in manifests.all_of(rendered, "MetricTemplate")
    }
    metrics = manifests.only(rendered, "Canary")["spec"]["analysis"]["metrics"]
    assert {metric["templateRef"]["name"] for metric in metrics} == set(templates)
    return {metric["name"]: templates[metric["templateRef"]["name"]] for metric in metrics}


def instantiated(query: str) -> str:
    """The query as Flagger sends it for the Canary's target in namespace `ns`."""
    values = {"namespace": "ns", "target": "iris-classifier", "interval": "1m"}
    return TEMPLATE_VARIABLE.sub(lambda variable: values[variable.group(1)], query)


def test_the_analysis_reads_only_the_canary_pods_of_its_namespace(
    rendered: list[Manifest],
) -> None:
    """Every selector names the namespace, the job the rules read and the canary's pods: Flagger's
    pattern for a Deployment's pod names, which the primary's (`<target>-primary-...`) miss."""
    for name, query in analysis_queries(rendered).items():
        selectors = SELECTOR.findall(instantiated(query))
        assert selectors, name
        for _, body in selectors:
            found = {(label, op): value for label, op, value in MATCHER.findall(body)}
            assert found[("namespace", "=")] == "ns", name
            assert found[("job", "=")] == "iris-classifier", name
            pattern = re.compile(found[("pod", "=~")])
            assert pattern.fullmatch("iris-classifier-5d4f8b7c9-x2x7q"), name
            assert not pattern.fullmatch("iris-classifier-primary-5d4f8b7c9-x2x7q"), name


@pytest.mark.integration
def test_every_series_the_analysis_queries_is_on_a_live_replica(
    live_server: str, rendered: list[Manifest]
) -> None:
    """After a request on every prediction route, each metric the analysis reads is on the live
    `/metrics`, and each selector, label values included, matches one of its series."""
    from tests.support.live import metric_samples

    with urllib.request.urlopen(f"{live_server}/v2/models/iris_classifier", timeout=10) as reply:
        (version,) = json.load(reply)["versions"]
    for path, body in prediction_calls(version):
        call(live_server, path, body)
    exposed = scrape(live_server)
    samples = metric_samples(live_server)
    queries = [instantiated(query) for query in analysis_queries(rendered).values()]
    read = {metric for query in queries for metric in METRIC_BEFORE_SELECTOR.findall(query)}
    assert read
    assert read - exposed == set()
    unmatched = []
    for query in queries:
        for metric, body in SELECTOR.findall(query):
            matchers = [m for m in MATCHER.findall(body) if m[0] not in SCRAPE_LABELS]
            if not any(name == metric and matches(labels, matchers) for name, labels, _ in samples):
                unmatched.append((metric, matchers))
    assert unmatched == []
