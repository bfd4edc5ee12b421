"""HAProxy from Debian in front of the replicas, balancing TCP connections as kube-proxy does.

kube-proxy (iptables mode, the default) picks a ready endpoint at random for each new
connection and never retries: a connection sent to a replica that just died fails. So HAProxy
runs in TCP mode (an L7 proxy would hide the keep-alive pinning real clients see), chooses a
server uniformly at random per connection, and neither retries nor redispatches. Its health
check on `/readyz` stands in for the readiness probe that takes a pod out of the Service's
endpoints, with the probe's own timing read from the base Deployment: period, timeout and
failure threshold. loadtest/README.md lists what still differs from a cluster.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.deployment import (
    BASE_DEPLOYMENT,
    CONTAINER_NAME,
    Manifest,
    base_deployment,
    container,
    pod_spec,
)
from harness.processes import REPO_ROOT, port_in_use, start, stop_tree

logger = logging.getLogger(__name__)

BACKEND = "replicas"
KIND_CONFIG = REPO_ROOT / "kustomize" / "overlays" / "kind" / "kind-config.yaml"


@dataclass(frozen=True)
class ReadinessProbe:
    """The readiness probe's timing, which decides how long a dead pod keeps getting traffic."""

    path: str
    period_s: float
    timeout_s: float
    failure_threshold: int
    success_threshold: int

    @property
    def worst_detection_s(self) -> float:
        """Longest time from a replica going dark to its removal from rotation.

        It may die just after a passing probe; then `failure_threshold` probes must fail, the
        last one possibly only at its timeout.
        """
        return self.period_s * self.failure_threshold + self.timeout_s


def _service_container(deployment_path: Path) -> Manifest:
    return container(base_deployment(deployment_path), CONTAINER_NAME)


def manifest_readiness_probe(deployment_path: Path = BASE_DEPLOYMENT) -> ReadinessProbe:
    """The readiness probe of the service container in the base Deployment (Kubernetes defaults
    for the fields it leaves out)."""
    probe = _service_container(deployment_path)["readinessProbe"]
    return ReadinessProbe(
        path=probe["httpGet"]["path"],
        period_s=probe.get("periodSeconds", 10),
        timeout_s=probe.get("timeoutSeconds", 1),
        failure_threshold=probe.get("failureThreshold", 3),
        success_threshold=probe.get("successThreshold", 1),
    )


def manifest_drain_seconds(deployment_path: Path = BASE_DEPLOYMENT) -> float:
    """IRIS_DRAIN_SECONDS as the base Deployment sets it for the service container."""
    env = {item["name"]: item.get("value") for item in _service_container(deployment_path)["env"]}
    return float(env["IRIS_DRAIN_SECONDS"])


def manifest_grace_seconds(deployment_path: Path = BASE_DEPLOYMENT) -> float:
    """The pod's terminationGracePeriodSeconds in the base Deployment (Kubernetes' default 30)."""
    spec = pod_spec(base_deployment(deployment_path))
    return float(spec.get("terminationGracePeriodSeconds", 30))


def kind_host_port(config_path: Path = KIND_CONFIG) -> int:
    """The host port kind-config.yaml maps to the Service's node port (the one place it is set)."""
    config = yaml.safe_load(config_path.read_text())
    (port,) = [m["hostPort"] for node in config["nodes"] for m in node.get("extraPortMappings", [])]
    return int(port)


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    # A spare slot (a pod a rolling update has yet to create): out of rotation until set "ready".
    spare: bool = False


@dataclass(frozen=True)
class ServerState:
    status: str  # "UP", "DOWN", "DRAIN", "MAINT", or a transition such as "UP 1/2"
    current_sessions: int  # open connections to the server right now


def render_config(
    servers: Sequence[Server],
    *,
    listen_port: int,
    stats_socket: Path,
    probe: ReadinessProbe | None = None,
) -> str:
    probe = probe or manifest_readiness_probe()
    server_lines = "\n".join(
        f"    server {server.name} 127.0.0.1:{server.port}{' disabled' if server.spare else ''}"
        for server in servers
    )
    return f"""\
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # As kube-proxy: a connection sent to a replica that just died fails; it is neither
    # retried nor sent to another replica.
    retries 0
    no option redispatch

frontend iris
    bind 127.0.0.1:{listen_port}
    default_backend {BACKEND}

backend {BACKEND}
    # One server per connection, uniformly at random among the live ones, as kube-proxy's
    # iptables rules pick an endpoint: a random key mapped onto the live servers. (`balance
    # random` hashes onto a ring whose uneven arcs favour some servers for good.)
    balance hash rand
    hash-type map-based crc32
    option httpchk
    http-check send meth GET uri {probe.path} ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    # The readiness probe's timing: checked every periodSeconds (also while failing), each
    # check failing after timeoutSeconds; out after failureThreshold failures in a row, back
    # after successThreshold passes.
    timeout check {_ms(probe.timeout_s)}
    default-server check inter {_ms(probe.period_s)} fastinter {_ms(probe.period_s)} \
downinter {_ms(probe.period_s)} fall {probe.failure_threshold} rise {probe.success_threshold}
{server_lines}
"""


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if binary is None:
        raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
    return binary


class HAProxy:
    """A running HAProxy whose servers can be inspected through its admin socket."""

    def __init__(self, process: subprocess.Popen[bytes], stats_socket: Path) -> None:
        self.process = process
        self.stats_socket = stats_socket

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            connection.connect(str(self.stats_socket))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, ServerState]:
        rows = csv.DictReader(io.StringIO(self._command("show stat").lstrip("# ")))
        return {
            row["svname"]: ServerState(row["status"], int(row["scur"] or 0))
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def connections_accepted(self) -> int:
        """Client connections the frontend has accepted since HAProxy started."""
        rows = csv.DictReader(io.StringIO(self._command("show stat").lstrip("# ")))
        return sum(int(row["stot"] or 0) for row in rows if row["svname"] == "FRONTEND")

    def set_state(self, server: str, state: str) -> None:
        """Change a server's admin state: "drain" (no new connections) or "ready"."""
        answer = self._command(f"set server {BACKEND}/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"haproxy refused to set {server} {state}: {answer}")

    def wait_for(self, server: str, status: str, *, timeout: float = 30.0) -> float:
        """Wait until `server` has `status` ("UP" or "DOWN"); return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with code {self.process.returncode}")
            with contextlib.suppress(OSError):
                # "DOWN (agent)", "DOWN 1/2" and the like do not count: only the settled state.
                if self.server_states()[server].status == status:
                    return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"haproxy did not see {server} {status} within {timeout:.0f}s")


def _require_free(port: int) -> None:
    """Fail with a useful message when another server listens on `port`."""
    if port_in_use(port):
        raise RuntimeError(
            f"127.0.0.1:{port} is taken; a kind cluster maps 127.0.0.1:{kind_host_port()} "
            f"(kind-config.yaml): choose another port, e.g. make loadtest-local LB_PORT={port + 10000}"
        )


@contextlib.contextmanager
def running_haproxy(
    servers: Sequence[Server],
    *,
    listen_port: int,
    work_dir: Path,
    log_path: Path,
    probe: ReadinessProbe | None = None,
) -> Iterator[HAProxy]:
    """HAProxy on 127.0.0.1:`listen_port` until the block ends, all but spares UP on entry."""
    _require_free(listen_port)
    stats_socket = work_dir / "haproxy.sock"
    config = work_dir / "haproxy.cfg"
    config.write_text(
        render_config(
            servers,
            listen_port=listen_port,
            stats_socket=stats_socket,
            probe=probe,
        )
    )
    binary = haproxy_binary()
    subprocess.run([binary, "-c", "-q", "-f", str(config)], check=True)
    process = start([binary, "-db", "-f", str(config)], log_path=log_path)
    logger.info("HAProxy (pid %s) on 127.0.0.1:%s, config %s", process.pid, listen_port, config)
    try:
        proxy = HAProxy(process, stats_socket)
        for server in servers:
            if not server.spare:
                proxy.wait_for(server.name, "UP")
        yield proxy
    finally:
        stop_tree(process.pid, grace=5)
        process.wait(timeout=5)  # collect its exit status, as the Popen object never saw it
