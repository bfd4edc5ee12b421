"""The commands BentoML's and locust's documentation teach, typed in the checkout as they are.

`bentoml serve` with no argument (bentofile.yaml names the service) and `locust -f
loadtest/locustfile.py --host URL` with locust's own command line, not through the Makefile.
The third plain command, `kubectl apply -k kustomize/overlays/kind` after `make kind-load`, is
tests/kustomize/test_kind_targets.py's. Ports come from the tools' own environment variables
(BENTOML_PORT, BENTOML_HOST) or flags (--web-port), so every port is a free one.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.processes import (
    on_free_port,
    private_bentoml_home,
    running,
    start,
    stop_tree,
    wait_http_ok,
)
from tests.conftest import REPO_ROOT, SEED_FLOWER

pytestmark = pytest.mark.integration

# The seed project's contract: its example flower, its answer and its health check.
SEED_ANSWER = ("setosa", 0.99)
SEED_HEALTH = "Iris classifier is ready!"


def post_json(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def plain_bentoml_serve(
    trained_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`bentoml serve`, typed in the checkout with no argument, on a free port of 127.0.0.1."""
    directory = tmp_path_factory.mktemp("plain-serve")
    home = private_bentoml_home(directory / "bentoml-home")
    bentoml = str(Path(sys.executable).with_name("bentoml"))

    def serving_on(port: int) -> contextlib.AbstractContextManager[object]:
        return running(
            [bentoml, "serve"],
            ready_url=f"http://127.0.0.1:{port}/readyz",
            env={
                "BENTOML_PORT": str(port),
                "BENTOML_HOST": "127.0.0.1",
                "BENTOML_HOME": str(home),
            },
            log_path=directory / "serve.log",
            cwd=REPO_ROOT,
            timeout=120,
        )

    with on_free_port(serving_on) as (_, port):
        yield f"http://127.0.0.1:{port}"


def test_bentoml_serve_in_the_checkout_serves_the_seed_contract(plain_bentoml_serve: str) -> None:
    status, answer = post_json(f"{plain_bentoml_serve}/iris/classify_iris", SEED_FLOWER)
    assert status == 200
    assert (answer["class"], answer["probability"]) == SEED_ANSWER
    with urllib.request.urlopen(f"{plain_bentoml_serve}/healthcheck", timeout=15) as response:
        assert (response.status, json.loads(response.read())) == (200, SEED_HEALTH)


def locust_requests(web_url: str) -> int:
    with urllib.request.urlopen(f"{web_url}/stats/requests", timeout=10) as response:
        stats = json.loads(response.read())
    return sum(entry["num_requests"] for entry in stats["stats"] if entry["name"] == "Aggregated")


@contextlib.contextmanager
def locust_web_ui(
    host: str, log: Path, options: tuple[str, ...], web_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """locust with its web UI on `web_port`, ready on entry, stopped on exit if still running."""
    # An ignored SIGINT stays ignored across exec, and a shell starts background jobs (a CI
    # runner's, say) with SIGINT ignored: locust would never see the Ctrl-C. A handler of our
    # own for the moment of the start gives the child the default, as a terminal would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        locust = start(
            [
                str(Path(sys.executable).with_name("locust")),
                *("-f", "loadtest/locustfile.py", "--host", host),
                *("--web-host", "127.0.0.1", "--web-port", str(web_port)),
                *options,
            ],
            log_path=log,
            cwd=REPO_ROOT,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_http_ok(f"http://127.0.0.1:{web_port}", timeout=60, process=locust)
        yield locust
    finally:
        if locust.poll() is None:
            stop_tree(locust.pid)
            locust.wait(timeout=10)


def locust_as_typed(host: str, log: Path, *options: str) -> tuple[int, str]:
    """`locust -f loadtest/locustfile.py --host URL` with `options`, run as a user runs it:
    started from its web UI (what the Start button posts), stopped with Ctrl-C once it has made
    100 requests or after 30 s. Returns its exit code and output."""
    with on_free_port(lambda port: locust_web_ui(host, log, options, port)) as (locust, port):
        web_url = f"http://127.0.0.1:{port}"
        # 6 users, 4 of them keeping their connection (locust.conf's kept-alive-users), so 2
        # open a fresh connection per request: those are the ones the balance gate judges.
        form = urllib.parse.urlencode({"user_count": 6, "spawn_rate": 6}).encode()
        with urllib.request.urlopen(f"{web_url}/swarm", data=form, timeout=10) as response:
            assert json.loads(response.read())["success"] is True
        deadline = time.monotonic() + 30
        while locust_requests(web_url) < 100 and time.monotonic() < deadline:
            time.sleep(0.5)
        locust.send_signal(signal.SIGINT)
        try:
            exit_code = locust.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"locust still runs 120 s after Ctrl-C; its log ends:\n{log.read_text()[-3000:]}"
            )
    return exit_code, log.read_text()


def test_locust_as_typed_gates_the_run_with_locust_conf_defaults(
    plain_bentoml_serve: str, tmp_path: Path
) -> None:
    """With no option, the gates use locust.conf's values: against one replica, where 3 are
    expected, the balance gate fails the run."""
    exit_code, output = locust_as_typed(plain_bentoml_serve, tmp_path / "locust.log")
    assert "[FAIL] balance: 1 replicas served, expected 3" in output, output[-3000:]
    assert "[PASS] failure ratio" in output, output[-3000:]
    assert "Load test gates FAILED" in output
    assert exit_code == 1, output[-3000:]


def test_locust_as_typed_passes_when_the_replicas_are_as_expected(
    plain_bentoml_serve: str, tmp_path: Path
) -> None:
    """The replica count given as locust gives any setting, on its command line."""
    exit_code, output = locust_as_typed(
        plain_bentoml_serve,
        tmp_path / "locust.log",
        *("--expected-replicas", "1"),
        # Latency is the benchmarks' to judge, never a test's: only the balance is at stake.
        *("--p95-limit-ms", "60000", "--p99-limit-ms", "60000"),
    )
    assert "[PASS] balance" in output, output[-3000:]
    assert "Load test gates passed" in output, output[-3000:]
    assert exit_code == 0, output[-3000:]
