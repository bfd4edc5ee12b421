"""The load test's defaults come from loadtest/locust.conf and the Deployment, not from copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.deployment import CONTAINER_NAME, base_deployment, container, pod_spec
from loadtest import run, settings
from loadtest.haproxy import manifest_drain_seconds, manifest_readiness_probe
from tests.conftest import REPO_ROOT

# The locustfile's options as a locust started with that conf would default them. In a process
# of its own: importing locust monkey-patches the interpreter's sockets with gevent.
PRINT_LOCUSTFILE_DEFAULTS = """
import json, sys
from pathlib import Path
from loadtest import settings
settings.LOCUST_CONF = Path(sys.argv[1])
from locust.argument_parser import LocustArgumentParser
from loadtest.locustfile import add_settings
parser = LocustArgumentParser()
add_settings(parser)
print(json.dumps(vars(parser.parse_args([]))))
"""


@pytest.fixture
def edited_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of locust.conf with other values, in the place the load test reads it from."""
    lines = []
    edits = {"expected-replicas": "5", "kept-alive-users": "2", "p95-limit-ms": "99"}
    edits |= {"max-failure-ratio": "0.07", "user-rps": "3.5"}
    for line in settings.LOCUST_CONF.read_text().splitlines():
        key = line.partition("=")[0].strip()
        lines.append(f"{key} = {edits.pop(key)}" if key in edits else line)
    assert not edits, f"locust.conf no longer sets {sorted(edits)}"
    conf = tmp_path / "locust.conf"
    conf.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(settings, "LOCUST_CONF", conf)
    return conf


def test_the_locustfile_options_default_to_locust_conf(edited_conf: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-c", PRINT_LOCUSTFILE_DEFAULTS, str(edited_conf)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    options = json.loads(printed.stdout.splitlines()[-1])
    assert options["expected_replicas"] == 5
    assert options["kept_alive_users"] == 2
    assert options["p95_limit_ms"] == 99.0
    assert options["max_failure_ratio"] == 0.07
    assert options["user_rps"] == 3.5


def test_the_runner_starts_as_many_replicas_as_locust_conf_expects(edited_conf: Path) -> None:
    args = run.parse_args([])
    assert args.replicas == 5
    # Not passed to locust unless asked for, so locust.conf's value applies.
    assert args.kept_alive_users is None
    command = run.locust_command("http://127.0.0.1:1", Path("reports"))
    assert "--kept-alive-users" not in command
    assert command[command.index("--config") + 1] == str(edited_conf)


def edited_deployment(tmp_path: Path, *, grace_seconds: int | None, drain: str) -> Path:
    """A copy of the base Deployment with another grace period (None: left out) and drain."""
    deployment = base_deployment()
    spec = pod_spec(deployment)
    spec.pop("terminationGracePeriodSeconds")
    if grace_seconds is not None:
        spec["terminationGracePeriodSeconds"] = grace_seconds
    env = container(deployment, CONTAINER_NAME)["env"]
    (drain_variable,) = [item for item in env if item["name"] == "IRIS_DRAIN_SECONDS"]
    drain_variable["value"] = drain
    spec["containers"][0]["readinessProbe"]["periodSeconds"] = 9
    edited = tmp_path / "deployment.yaml"
    edited.write_text(yaml.safe_dump(deployment))
    return edited


def test_the_base_deployment_differs_from_the_edited_values() -> None:
    """Otherwise the tests below could not tell a value read from the file from a constant."""
    spec = pod_spec(base_deployment())
    assert spec["terminationGracePeriodSeconds"] not in (55, 30)
    assert manifest_drain_seconds() != 7.0
    assert manifest_readiness_probe().period_s != 9


def test_the_runner_follows_the_deployments_drain_probe_and_grace_period(
    tmp_path: Path,
) -> None:
    edited = edited_deployment(tmp_path, grace_seconds=55, drain="7")
    args = run.parse_args(["--deployment", str(edited), "--mode", "process"])
    assert args.drain_seconds == 7.0
    assert run.readiness_probe(args).period_s == 9
    started = run.choose_replicas(args, tmp_path)
    assert [replica.stop_timeout_s for replica in started] == [55.0] * args.replicas
    assert {replica.env["IRIS_DRAIN_SECONDS"] for replica in started} == {"7"}
    # Given on the command line, the drain wins over the Deployment's.
    assert run.parse_args(["--deployment", str(edited), "--drain-seconds", "3"]).drain_seconds == 3


def test_a_deployment_without_a_grace_period_gets_kubernetes_default(tmp_path: Path) -> None:
    edited = edited_deployment(tmp_path, grace_seconds=None, drain="7")
    args = run.parse_args(["--deployment", str(edited), "--mode", "process"])
    (replica, *_) = run.choose_replicas(args, tmp_path)
    assert replica.stop_timeout_s == 30.0
