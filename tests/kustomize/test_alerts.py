"""The alert rules and the dashboard: promtool's checks and unit tests, runbooks, and that
every metric they read is one the live service really exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import SEED_FLOWER, SEED_TENSOR_REQUEST, require
from tests.support import manifests
from tests.support.manifests import Manifest

COMPONENTS = manifests.KUSTOMIZE_ROOT / "components"
RUNBOOKS = COMPONENTS / "servicemonitor" / "README.md"
RUNBOOK_BASE_ANNOTATION = "iris-classifier/runbook-base-url"
DASHBOARD = COMPONENTS / "grafana-dashboard" / "iris-classifier.json"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
# alerts_test.yaml writes this where each runbook_url has the component's base URL.
RUNBOOK_BASE_TOKEN = "RUNBOOK_BASE_URL"
# Series the rules read that no replica exports: Prometheus makes `up` for every target, and
# kube-state-metrics exports what Kubernetes knows of the Deployment.
NOT_FROM_THE_SERVICE = {
    "up",
    "kube_deployment_status_replicas_unavailable",
    "kube_deployment_spec_replicas",
}
# An aggregation, its modifier written before the parenthesis (`by` or `without`, or none) and
# the labels the modifier names. A modifier written after the aggregated expression is not
# read, so such an aggregation counts as keeping no label: the rules write it first.
AGGREGATION = re.compile(
    r"\b(sum|count|max|min|avg|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
    r"(?:(by|without)\s*\(([^)]*)\))?\s*\("
)
# A name right before a label matcher: the metric a selector reads.
SELECTED_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
RECORDED_METRIC = re.compile(r"\b([a-z_]+:[a-z_:0-9]+)\b")
# The overlays a team may add the monitoring components to, and those components.
MONITORED_OVERLAYS = ("kind", "production", "kserve")
MONITORING_COMPONENTS = ("servicemonitor", "grafana-dashboard")
MODEL = "/v2/models/iris_classifier"


@pytest.fixture(scope="module")
def prometheus_rule(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The PrometheusRule as kustomize renders the component (runbook URLs filled in)."""
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    rendered = manifests.render_overlay_of(
        tmp_path_factory.mktemp("alerts"), components=["servicemonitor"]
    )
    return manifests.only(rendered, "PrometheusRule")


@pytest.fixture(scope="module")
def rule_groups(prometheus_rule: dict) -> list[dict]:
    return prometheus_rule["spec"]["groups"]


@pytest.fixture(scope="module")
def rules(rule_groups: list[dict]) -> list[dict]:
    return [rule for group in rule_groups for rule in group["rules"]]


def runbook_base(prometheus_rule: dict) -> str:
    return prometheus_rule["metadata"]["annotations"][RUNBOOK_BASE_ANNOTATION]


def promtool() -> str:
    found = shutil.which("promtool")
    require(found is not None, "promtool is not installed (apt-get install prometheus)")
    return found


@pytest.fixture(scope="module")
def rules_dir(
    tmp_path_factory: pytest.TempPathFactory, prometheus_rule: dict, rule_groups: list[dict]
) -> Path:
    """The PrometheusRule's groups as a plain rule file, with the unit tests beside it."""
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}))
    unit_tests = UNIT_TESTS.read_text().replace(RUNBOOK_BASE_TOKEN, runbook_base(prometheus_rule))
    (directory / UNIT_TESTS.name).write_text(unit_tests)
    return directory


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "rules.yaml"], cwd=rules_dir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_and_stays_quiet_as_its_unit_tests_expect(rules_dir: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name],
        cwd=rules_dir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_that_expects_it_to_fire(rules: list[dict]) -> None:
    tested = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert alerts - firing == set()
    assert alerts - quiet == set()


def test_every_alert_has_a_summary_description_and_a_runbook_section(
    prometheus_rule: dict, rules: list[dict]
) -> None:
    headings = {
        line.lstrip("#").strip().lower()
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("#")
    }
    base = runbook_base(prometheus_rule)
    # Absolute, as Alertmanager's receivers link it; written once, in the annotation.
    assert base.startswith("https://"), base
    assert "#" not in base, base
    for rule in rules:
        if "alert" not in rule:
            continue
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), rule["alert"]
        assert annotations["description"].strip(), rule["alert"]
        assert "runbook" not in annotations, "the operator's convention is runbook_url"
        assert annotations["runbook_url"] == f"{base}#{rule['alert'].lower()}", rule["alert"]
        assert rule["alert"].lower() in headings, f"no runbook section for {rule['alert']}"


def test_runbook_urls_follow_the_one_base_url(tmp_path: Path) -> None:
    """Changing the annotation moves every runbook_url: the base is written in one place."""
    rendered = manifests.render_overlay_of(tmp_path, components=["servicemonitor"])
    rule_file = tmp_path / "kustomize" / "components" / "servicemonitor" / "prometheusrule.yaml"
    document = yaml.safe_load(rule_file.read_text())
    original = document["metadata"]["annotations"][RUNBOOK_BASE_ANNOTATION]
    moved = "https://runbooks.example.org/iris.html"
    rule_file.write_text(rule_file.read_text().replace(original, moved))
    rerendered = manifests.render_overlay_of(tmp_path, components=["servicemonitor"])
    urls = {
        rule["annotations"]["runbook_url"]
        for group in manifests.only(rerendered, "PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert urls
    assert {url.partition("#")[0] for url in urls} == {moved}
    assert manifests.only(rendered, "PrometheusRule") != manifests.only(
        rerendered, "PrometheusRule"
    )


def labels_added_together(expr: str, needed: set[str]) -> list[str]:
    """Each aggregation in `expr` that does not keep every label of `needed`, and what it loses."""
    lost = []
    for operator, modifier, names in AGGREGATION.findall(expr):
        labels = {label.strip() for label in names.split(",") if label.strip()}
        dropped = needed & labels if modifier == "without" else needed - labels
        if dropped:
            written = f"{operator} {modifier} ({names})" if modifier else operator
            lost.append(f"{written} adds up {', '.join(sorted(dropped))}")
    return lost


@pytest.mark.parametrize(
    ("expr", "lost"),
    [
        ("sum by (namespace, job) (rate(x[5m]))", []),
        ("sum without (instance, pod) (rate(x[5m]))", []),
        ("sum by (namespace) (rate(x[5m]))", ["sum by (namespace) adds up job"]),
        ("sum(rate(x[5m]))", ["sum adds up job, namespace"]),
        ("max without (namespace) (x)", ["max without (namespace) adds up namespace"]),
        ("count without(pod,job)(x)", ["count without (pod,job) adds up job"]),
        ("sum(rate(x[5m])) by (namespace, job)", ["sum adds up job, namespace"]),
        ("x / on (namespace) group_left y", []),
    ],
)
def test_the_aggregation_check_reads_by_and_without(expr: str, lost: list[str]) -> None:
    assert labels_added_together(expr, {"namespace", "job"}) == lost


def test_every_aggregation_keeps_namespace_and_job_apart(rules: list[dict]) -> None:
    """Staging and production in one Prometheus: no rule may add their series together.

    The scoping joins on kube-state-metrics series keep `namespace` only: their `job` is
    kube-state-metrics', not the service's.
    """
    for rule in rules:
        name = rule.get("record") or rule["alert"]
        needed = {"namespace"} if "kube_" in rule["expr"] else {"namespace", "job"}
        assert not labels_added_together(rule["expr"], needed), name
    recorded = [rule["record"] for rule in rules if "record" in rule]
    assert recorded
    assert all(name.startswith("namespace_job:") for name in recorded)


def test_every_burn_rate_window_is_a_recording_rule(rules: list[dict]) -> None:
    recorded = {rule["record"]: rule["expr"] for rule in rules if "record" in rule}
    windows = {"5m", "30m", "1h", "2h", "6h", "1d", "3d"}
    ratios = {f"namespace_job:iris_prediction_errors:ratio_rate{window}" for window in windows}
    assert ratios <= set(recorded)
    # The long windows add up recorded rates: no days of raw samples on every evaluation.
    for window in ("1d", "3d"):
        expr = recorded[f"namespace_job:iris_prediction_errors:ratio_rate{window}"]
        assert "bentoml_service_request_total" not in expr, expr
    burn = [rule["expr"] for rule in rules if rule.get("alert", "").endswith("BurnFast")]
    burn += [rule["expr"] for rule in rules if rule.get("alert", "").endswith("BurnSlow")]
    assert len(burn) == 2
    for expr in burn:
        assert "bentoml_service_request_total" not in expr
        assert set(re.findall(r"ratio_rate(\w+)", expr)) <= windows


def dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_dashboard_has_each_panel_the_operators_need() -> None:
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert titles == {
        "Requests per pod",
        "Prediction latency",
        "Server errors (share of prediction requests)",
        "Class mix",
        "Out-of-range flowers",
        "Model per pod",
        "Drift (population stability index per feature)",
    }


def test_dashboard_shows_one_namespace_at_a_time() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    namespace = variables["namespace"]
    assert namespace["type"] == "query"
    assert namespace["query"]["query"].startswith("label_values(")
    assert namespace["query"]["query"].endswith(", namespace)")
    assert namespace.get("multi") is False
    assert namespace.get("includeAll") is False
    for expr in dashboard_expressions():
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors, expr
        for selector in selectors:
            assert 'namespace="$namespace"' in selector, expr
            assert 'job="iris-classifier"' in selector, expr


def test_dashboard_configmap_carries_the_grafana_sidecar_label(tmp_path: Path) -> None:
    rendered = manifests.render_overlay_of(
        tmp_path, components=["grafana-dashboard"], namespace="staging"
    )
    configmap = manifests.only(rendered, "ConfigMap")
    assert configmap["metadata"]["name"] == "iris-classifier-dashboard"
    assert configmap["metadata"]["namespace"] == "staging"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["iris-classifier.json"]) == json.loads(
        DASHBOARD.read_text()
    )


@pytest.fixture(scope="module", params=MONITORED_OVERLAYS)
def monitored_overlay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[Manifest]]:
    """An overlay with the monitoring components added to its own, as their READMEs say."""
    require(manifests.kustomize_command() is not None, "rendering needs kustomize or kubectl")
    tree = tmp_path_factory.mktemp(request.param) / "kustomize"
    shutil.copytree(manifests.KUSTOMIZE_ROOT, tree)
    path = tree / "overlays" / request.param / "kustomization.yaml"
    kustomization = manifests.load_yaml(path)
    kustomization["components"] = [
        *kustomization.get("components", []),
        *(f"../../components/{name}" for name in MONITORING_COMPONENTS),
    ]
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return request.param, manifests.render(path.parent)


def scraped_service_and_deployment(objects: list[Manifest]) -> tuple[Manifest, str]:
    """The Service the ServiceMonitor selects and the name of the Deployment behind it: the
    overlay's own, or the ones KServe makes for its InferenceService."""
    monitor = manifests.only(objects, "ServiceMonitor")
    services = manifests.all_of(objects, "Service")
    deployments = [obj["metadata"]["name"] for obj in manifests.all_of(objects, "Deployment")]
    if manifests.all_of(objects, "InferenceService"):
        services.append(manifests.kserve_predictor_service(objects))
        deployments.append(services[-1]["metadata"]["name"])
    selected = [
        service
        for service in services
        if service["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and manifests.selector_matches(
            monitor["spec"]["selector"], service["metadata"].get("labels", {})
        )
    ]
    assert monitor["spec"]["selector"].get("matchLabels"), "an empty selector takes every Service"
    (service,) = selected
    (deployment,) = deployments
    return service, deployment


def job_of(monitor: Manifest, service: Manifest) -> str:
    """The `job` the Prometheus Operator gives the scraped series: the value of the Service's
    `jobLabel` label, or the Service's name when it has no such label."""
    labels = service["metadata"].get("labels", {})
    return labels.get(monitor["spec"].get("jobLabel", ""), service["metadata"]["name"])


def test_the_monitoring_components_render_on_every_overlay(
    monitored_overlay: tuple[str, list[Manifest]],
) -> None:
    name, objects = monitored_overlay
    namespaces = {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"}
    assert len(namespaces) == 1, (name, namespaces)
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap"):
        assert manifests.only(objects, kind)["metadata"]["namespace"] in namespaces, (name, kind)


def test_the_rules_and_dashboard_select_the_job_and_deployment_of_every_overlay(
    monitored_overlay: tuple[str, list[Manifest]], rules: list[dict]
) -> None:
    """The `job` Prometheus gives each overlay's replicas (KServe's Service is
    iris-classifier-predictor) and the Deployment kube-state-metrics reports for it (KServe's
    too) are the ones every selector of the rules and the dashboard asks for."""
    name, objects = monitored_overlay
    monitor = manifests.only(objects, "ServiceMonitor")
    service, deployment = scraped_service_and_deployment(objects)
    ports = {port.get("name") for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports, name
    scraped = {"job": job_of(monitor, service), "deployment": deployment}
    dashboard = json.loads(DASHBOARD.read_text())
    variables = [
        variable["query"]["query"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    expressions = [rule["expr"] for rule in rules] + dashboard_expressions() + variables
    checked = set()
    for expr in expressions:
        for _, body in SELECTOR.findall(expr):
            for label, op, value in MATCHER.findall(body):
                if label in scraped:
                    assert matches(scraped, [(label, op, value)]), (name, scraped, expr)
                    checked.add(label)
    assert checked == set(scraped), checked


def scrape(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


@pytest.mark.integration
def test_every_metric_the_rules_and_dashboard_read_is_on_the_live_metrics(
    live_server: str, rules: list[dict]
) -> None:
    # Latency histograms appear once a route has answered.
    for route in ("/iris/classify_iris", "/iris/classify_batch"):
        body = SEED_FLOWER if route.endswith("iris") else {"flowers": [SEED_FLOWER]}
        request = urllib.request.Request(
            f"{live_server}{route}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).close()
    exposed = scrape(live_server)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    expressions = [rule["expr"] for rule in rules] + dashboard_expressions()
    read = {name for expr in expressions for name in SELECTED_METRIC.findall(expr)}
    read |= {name for expr in expressions for name in RECORDED_METRIC.findall(expr)}
    assert read - recorded - NOT_FROM_THE_SERVICE
    assert read - recorded - NOT_FROM_THE_SERVICE - exposed == set()
    # Recording rules are used by name only where they are defined.
    assert {name for name in read if ":" in name} <= recorded


# A selector `metric{label op "value", ...}` and each matcher in it.
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Labels Prometheus adds when it scrapes (the ServiceMonitor's job), not the replica.
SCRAPE_LABELS = {"job"}


def matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    tests = {
        "=": lambda value, wanted: value == wanted,
        "!=": lambda value, wanted: value != wanted,
        "=~": lambda value, wanted: re.fullmatch(wanted, value) is not None,
        "!~": lambda value, wanted: re.fullmatch(wanted, value) is None,
    }
    return all(tests[op](labels.get(name, ""), wanted) for name, op, wanted in matchers)


def rule_selectors(rules: list[dict]) -> set[tuple[str, tuple[tuple[str, str, str], ...]]]:
    """Each (metric, matchers without scrape labels) a rule selects from the replicas."""
    return {
        (metric, tuple(m for m in MATCHER.findall(body) if m[0] not in SCRAPE_LABELS))
        for rule in rules
        for metric, body in SELECTOR.findall(rule["expr"])
        if metric not in NOT_FROM_THE_SERVICE
    }


def test_the_selector_check_tells_a_label_value_that_is_not_there() -> None:
    samples = [("requests_total", {"code": "200", "endpoint": "/iris/x"}, 1.0)]
    assert matches(samples[0][1], [("code", "=~", "2.."), ("endpoint", "=~", "/iris/.+")])
    assert not matches(samples[0][1], [("code", "=~", "5..")])
    assert not matches(samples[0][1], [("endpoint", "=~", "/iris")])


def prediction_calls(version: str) -> list[tuple[str, dict]]:
    """Every prediction a client can make: the service's two routes, and Open Inference
    Protocol inference (KServe's clients) with and without the model's version."""
    return [
        ("/iris/classify_iris", SEED_FLOWER),
        ("/iris/classify_batch", {"flowers": [SEED_FLOWER]}),
        (f"{MODEL}/infer", SEED_TENSOR_REQUEST),
        (f"{MODEL}/versions/{version}/infer", SEED_TENSOR_REQUEST),
    ]


# Requests that are not predictions, whatever they answer: the model card and metadata, probes.
NOT_PREDICTIONS = ("/iris/model", MODEL, "/v2/health/ready", "/healthcheck")


def call(url: str, path: str, body: dict | None = None) -> None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as error:
        error.close()


@pytest.mark.integration
def test_every_selector_of_the_rules_selects_a_series_of_a_live_replica(
    live_server: str, rules: list[dict]
) -> None:
    """After one real 5xx (BentoML's timeout) and one request on every prediction route, each
    selector of the rules, label values included, matches a series on the live `/metrics`: a
    label renamed or a value spelt otherwise (`5xx` for `5..`, a route prefix) would leave an
    alert blind. Every route selector, of the rules and of the dashboard, counts each prediction
    route, the V2 ones that KServe's clients call included, and nothing else."""
    from tests.support.live import metric_samples, timed_out_request

    assert timed_out_request(live_server)[0] == 504
    with urllib.request.urlopen(f"{live_server}{MODEL}", timeout=10) as response:
        (version,) = json.load(response)["versions"]
    predictions = prediction_calls(version)
    for path, body in predictions:
        call(live_server, path, body)
    for path in NOT_PREDICTIONS:
        call(live_server, path)
    samples = metric_samples(live_server)
    selectors = rule_selectors(rules)
    assert any(matchers for _, matchers in selectors), "the rules select no label value"
    unmatched = [
        (metric, matchers)
        for metric, matchers in selectors
        if not any(
            name == metric and matches(labels, list(matchers)) for name, labels, _ in samples
        )
    ]
    assert unmatched == []
    endpoints = {labels["endpoint"] for _, labels, _ in samples if "endpoint" in labels}
    prediction_paths = {path for path, _ in predictions}
    assert prediction_paths | set(NOT_PREDICTIONS) <= endpoints
    with_the_dashboard = selectors | rule_selectors([{"expr": e} for e in dashboard_expressions()])
    route_matchers = {
        matcher
        for _, matchers in with_the_dashboard
        for matcher in matchers
        if matcher[0] == "endpoint"
    }
    assert route_matchers
    for matcher in sorted(route_matchers):
        counted = {endpoint for endpoint in endpoints if matches({"endpoint": endpoint}, [matcher])}
        assert counted == prediction_paths, matcher
