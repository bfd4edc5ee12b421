"""The load test's defaults come from loadtest/locust.conf and the Deployment, not from copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadtest import replicas, run, settings
from loadtest.haproxy import manifest_drain_seconds, manifest_grace_seconds
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


def test_the_runner_drains_replicas_as_the_deployment_does(tmp_path: Path) -> None:
    deployment = yaml.safe_load((REPO_ROOT / "kustomize/base/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        if variable["name"] == "IRIS_DRAIN_SECONDS":
            variable["value"] = "7"
    edited = tmp_path / "deployment.yaml"
    edited.write_text(yaml.safe_dump(deployment))
    assert manifest_drain_seconds(edited) == 7.0
    assert run.parse_args([]).drain_seconds == manifest_drain_seconds()


def test_replicas_get_the_deployments_grace_period_to_stop(tmp_path: Path) -> None:
    deployment = yaml.safe_load((REPO_ROOT / "kustomize/base/deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 55
    edited = tmp_path / "deployment.yaml"
    edited.write_text(yaml.safe_dump(deployment))
    assert manifest_grace_seconds(edited) == 55.0
    del deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    edited.write_text(yaml.safe_dump(deployment))
    assert manifest_grace_seconds(edited) == 30.0  # Kubernetes' default
    assert manifest_grace_seconds() == replicas.STOP_TIMEOUT_S
