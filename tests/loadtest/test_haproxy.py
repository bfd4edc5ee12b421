"""The local balancer behaves like kube-proxy: random per connection, no retry, probe timing.

The behaviour is checked on a running HAProxy in front of three small HTTP servers that name
themselves, not on the text of its configuration: the split of fresh connections, what a
client sees right after a server dies, and how long the health check takes to notice.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.processes import on_free_port
from loadtest.gates import balance_gate
from loadtest.haproxy import (
    HAProxy,
    Server,
    haproxy_binary,
    kind_host_port,
    manifest_readiness_probe,
    render_config,
    running_haproxy,
)
from tests.conftest import REPO_ROOT, require

REPLICAS = ("replica-1", "replica-2", "replica-3")


class _NamedHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("X-Served-By", self.server.replica_name)  # type: ignore[attr-defined]
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Replica:
    """An HTTP server on a free port that answers every GET with 200 and its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _NamedHandler)
        self.server.replica_name = name  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kill(self) -> None:
        """Stop listening at once: new connections are refused, as to a killed pod."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def require_haproxy() -> None:
    try:
        haproxy_binary()
    except FileNotFoundError as missing:
        require(False, str(missing))


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [Replica(name) for name in REPLICAS]
    yield started
    for replica in started:
        if replica.thread.is_alive():
            replica.kill()


@pytest.fixture
def balancer(replicas: list[Replica], tmp_path: Path) -> Iterator[tuple[HAProxy, int]]:
    require_haproxy()
    servers = [Server(replica.name, replica.port) for replica in replicas]

    def balancing_on(port: int) -> contextlib.AbstractContextManager[HAProxy]:
        return running_haproxy(
            servers, listen_port=port, work_dir=tmp_path, log_path=tmp_path / "haproxy.log"
        )

    with on_free_port(balancing_on) as (proxy, port):
        yield proxy, port


def served_by(port: int, count: int) -> list[str]:
    """The replica behind each of `count` requests on fresh connections; "" when one failed."""
    answers = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            answers.append(response.getheader("X-Served-By", ""))
        except (ConnectionError, http.client.HTTPException):
            answers.append("")
        finally:
            connection.close()
    return answers


@pytest.mark.integration
def test_each_connection_goes_to_a_random_replica(balancer: tuple[HAProxy, int]) -> None:
    _, port = balancer
    answers = served_by(port, 600)
    tally = Counter(answers)
    assert set(tally) == set(REPLICAS), tally
    assert balance_gate(tally, 3, 0.001).passed, tally
    # Round-robin never sends two connections in a row to the same replica; a random choice
    # does so a third of the time.
    repeats = sum(first == second for first, second in itertools.pairwise(answers))
    assert 120 <= repeats <= 280, f"{repeats} repeats in 599 pairs: not a random choice"


@pytest.mark.integration
def test_a_dead_replica_fails_connections_until_its_health_check_removes_it(
    balancer: tuple[HAProxy, int], replicas: list[Replica]
) -> None:
    proxy, port = balancer
    probe = manifest_readiness_probe()
    victim = replicas[0]
    victim.kill()
    killed_at = time.monotonic()
    # Sent well within one probe period: nothing has noticed the death yet.
    before_removal = served_by(port, 60)
    assert time.monotonic() - killed_at < probe.period_s
    failed = before_removal.count("")
    # No retry and no redispatch: about a third fail, as with kube-proxy (never 0 of 60 unless
    # the balancer retried them on another replica: (2/3)^60 < 1e-10).
    assert 0 < failed < 45, before_removal
    assert set(before_removal) <= {"", "replica-2", "replica-3"}

    proxy.wait_for(victim.name, "DOWN", timeout=probe.worst_detection_s + 5)
    detected_s = time.monotonic() - killed_at
    # Removed no sooner than failureThreshold - 1 periods after the first failing check,
    # no later than the probe's worst case (plus scheduling slack).
    assert (probe.failure_threshold - 1) * probe.period_s - 0.5 <= detected_s
    assert detected_s <= probe.worst_detection_s + 1.0
    after_removal = served_by(port, 60)
    assert "" not in after_removal
    assert victim.name not in after_removal


def test_health_checks_use_the_readiness_probe_of_the_manifests(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text(
        (REPO_ROOT / "kustomize" / "base" / "deployment.yaml")
        .read_text()
        .replace(
            "periodSeconds: 5\n            timeoutSeconds: 2",
            "periodSeconds: 7\n            timeoutSeconds: 3",
        )
    )
    probe = manifest_readiness_probe(deployment)
    assert (probe.path, probe.period_s, probe.timeout_s) == ("/readyz", 7, 3)
    config = render_config(
        [Server("replica-1", 3001)], listen_port=8080, stats_socket=tmp_path / "s", probe=probe
    )
    directives = [line.split() for line in config.splitlines() if line.strip()]
    (default_server,) = [words for words in directives if words[0] == "default-server"]
    options = dict(zip(default_server[2::2], default_server[3::2], strict=False))
    assert options["inter"] == options["fastinter"] == options["downinter"] == "7000ms"
    assert options["fall"] == str(probe.failure_threshold)
    assert options["rise"] == str(probe.success_threshold)
    assert ["timeout", "check", "3000ms"] in directives


def test_a_taken_port_is_refused_with_the_kind_host_port_named(tmp_path: Path) -> None:
    config = tmp_path / "kind-config.yaml"
    original = REPO_ROOT / "kustomize" / "overlays" / "kind" / "kind-config.yaml"
    config.write_text(re.sub(r"hostPort: *\d+", "hostPort: 18123", original.read_text()))
    assert kind_host_port(config) == 18123
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(RuntimeError, match=rf"maps 127\.0\.0\.1:{kind_host_port()} "),
            running_haproxy([], listen_port=port, work_dir=tmp_path, log_path=tmp_path / "log"),
        ):
            pass
