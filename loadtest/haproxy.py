"""HAProxy from Debian in front of the replicas, balancing TCP connections as kube-proxy does.

TCP mode (not HTTP) on purpose: kube-proxy is an L4 balancer that picks a backend per
connection, and a load test that passes behind an L7 proxy would hide the keep-alive pinning
that real clients see on Kubernetes. `/readyz` is checked every half second, so a dead replica
is out of rotation within about a second, like a pod whose readiness probe fails.
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

from harness.processes import start, stop_tree

logger = logging.getLogger(__name__)

BACKEND = "replicas"


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
    probe_period_s: float | None = None,
) -> str:
    """HAProxy's configuration; `probe_period_s` makes it balance as kube-proxy does.

    With a probe period, connections go to a random server, are never retried or sent
    elsewhere, and a server leaves rotation only after 2 failed `/readyz` checks that far
    apart: the readiness probe's timing standing in for the endpoint removal.
    """
    server_lines = "\n".join(
        f"    server {server.name} 127.0.0.1:{server.port}{' disabled' if server.spare else ''}"
        for server in servers
    )
    if probe_period_s is None:
        retries = """\
    # A refused connection (a replica that just died) is retried on the next server.
    retries 3
    option redispatch 1"""
        balancing = """\
    balance roundrobin"""
        checks = """\
    # Down after 2 failed checks 250 ms apart once one fails; back after 2 good ones.
    default-server check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2"""
    else:
        retries = """\
    timeout check 2s
    retries 0"""
        balancing = """\
    # One random draw, as kube-proxy's iptables rules make: HAProxy's default draws two and
    # takes the server with fewer connections, which steers fresh connections away from the
    # replicas that hold kept-alive ones. The highest weight gives each server the most points
    # on HAProxy's hash ring, so that the random choice is even.
    balance random(1)"""
        checks = f"""\
    default-server check inter {round(probe_period_s * 1000)}ms fall 2 rise 1 weight 256"""
    return f"""\
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
{retries}

frontend iris
    bind 127.0.0.1:{listen_port}
    default_backend {BACKEND}

backend {BACKEND}
{balancing}
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
{checks}
{server_lines}
"""


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As HAProxy does: connections of a previous run in TIME_WAIT must not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise RuntimeError(
                f"127.0.0.1:{port} is taken ({exc.strerror}); the kind cluster's node port "
                "mapping uses 8080 too: choose another one, e.g. make loadtest-local LB_PORT=18080"
            ) from exc


@contextlib.contextmanager
def running_haproxy(
    servers: Sequence[Server],
    *,
    listen_port: int,
    work_dir: Path,
    log_path: Path,
    probe_period_s: float | None = None,
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
            probe_period_s=probe_period_s,
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
