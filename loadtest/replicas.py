"""Replicas of the service that can be stopped the ways Kubernetes stops pods.

A replica is either a container of the built image (what runs on Kubernetes) or, where no
Docker engine or image is at hand, a `bentoml serve` process tree. Either way it gets its own
port and `POD_NAME`, so its answers carry `X-Served-By: <name>`, and it can be terminated
(SIGTERM to its main process, as the kubelet does on a rolling update or scale-down) or killed
(SIGKILL to everything in it, as in a crash or an OOM kill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import psutil

from harness.containers import (
    container_cpu_seconds,
    container_logs,
    docker,
    hardened_command,
)
from harness.processes import (
    REPO_ROOT,
    bentoml_serve_command,
    private_bentoml_home,
    process_tree,
    signal_tree,
    start,
    stop_tree,
    wait_http_ok,
)

logger = logging.getLogger(__name__)

# Startup loads the model and forks workers; on a busy 2-core machine that takes a while.
READY_TIMEOUT_S = 180.0


class Replica(Protocol):
    name: str
    port: int

    def launch(self) -> None:
        """Start without waiting; `wait_ready` blocks until it answers."""

    def wait_ready(self) -> float: ...

    def terminate(self) -> None: ...

    def kill(self) -> int:
        """SIGKILL everything in the replica; return how many processes were killed."""

    def wait_stopped(self) -> float: ...

    def cpu_seconds(self) -> float | None:
        """CPU time the running replica has used so far (None where it cannot be read)."""

    def remove(self) -> None:
        """Stop whatever is left, never raising: used on teardown."""


def _readyz(port: int) -> str:
    return f"http://127.0.0.1:{port}/readyz"


class ProcessReplica:
    """`bentoml serve` started from the repository, in its own session."""

    def __init__(
        self,
        name: str,
        port: int,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        stop_timeout_s: float,
    ) -> None:
        self.name = name
        self.port = port
        self.env = dict(env or {})
        # As long as the kubelet waits before it kills a stopping pod (its grace period).
        self.stop_timeout_s = stop_timeout_s
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._tree: list[psutil.Process] = []

    def launch(self) -> None:
        home = private_bentoml_home(self.log_path.with_name(f"{self.name}-bentoml-home"))
        self.process = start(
            bentoml_serve_command(self.port),
            env={**self.env, "POD_NAME": self.name, "BENTOML_HOME": str(home)},
            log_path=self.log_path,
            cwd=REPO_ROOT,
        )

    def wait_ready(self) -> float:
        assert self.process is not None, "launch() first"
        return wait_http_ok(_readyz(self.port), timeout=READY_TIMEOUT_S, process=self.process)

    def terminate(self) -> None:
        assert self.process is not None
        self._tree = process_tree(self.process.pid)
        # Only the main process, as the kubelet signals PID 1; it stops its workers itself.
        os.kill(self.process.pid, signal.SIGTERM)

    def kill(self) -> int:
        assert self.process is not None
        self._tree = signal_tree(self.process.pid, signal.SIGKILL)
        return len(self._tree)

    def wait_stopped(self) -> float:
        """Seconds until every process of the replica has exited."""
        assert self.process is not None
        started = time.monotonic()
        _, alive = psutil.wait_procs(self._tree, timeout=self.stop_timeout_s)
        if alive:
            raise TimeoutError(f"{self.name}: {len(alive)} processes still alive")
        self.process.wait(timeout=5)
        return time.monotonic() - started

    def cpu_seconds(self) -> float | None:
        if self.process is None:
            return None
        total = 0.0
        for process in process_tree(self.process.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def remove(self) -> None:
        if self.process is not None:
            stop_tree(self.process.pid, grace=10)
        for leftover in self._tree:  # workers of a killed arbiter, if any survived
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()


class ContainerReplica:
    """A container of the built image on the host network, as one pod of the Deployment."""

    def __init__(
        self,
        name: str,
        port: int,
        image: str,
        run_label: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        *,
        stop_timeout_s: float,
    ) -> None:
        self.name = name
        self.port = port
        self.env = dict(env or {})
        self.stop_timeout_s = stop_timeout_s
        self.image = image
        self.run_label = run_label
        self.container = f"iris-loadtest-{run_label}-{name}"
        self.log_path = log_dir / f"{name}.log"

    def launch(self) -> None:
        self._save_logs()
        with contextlib.suppress(subprocess.CalledProcessError):
            docker("rm", "--force", self.container)
        command = hardened_command(
            self.image,
            name=self.container,
            port=self.port,
            env={"POD_NAME": self.name, **self.env},
            labels={"iris-loadtest": self.run_label},
            detach=True,
        )
        docker(*command[1:])

    def wait_ready(self) -> float:
        return wait_http_ok(_readyz(self.port), timeout=READY_TIMEOUT_S)

    def terminate(self) -> None:
        docker("kill", "--signal", "SIGTERM", self.container)

    def kill(self) -> int:
        # Straight to the container's processes as seen from the host: `docker kill` goes
        # through the engine and takes a few hundred ms, which would blur the kill moment.
        pid = int(docker("inspect", "--format", "{{.State.Pid}}", self.container))
        if pid > 0 and (tree := signal_tree(pid, signal.SIGKILL)):
            return len(tree)
        docker("kill", "--signal", "SIGKILL", self.container)
        return 1

    def wait_stopped(self) -> float:
        started = time.monotonic()
        docker("wait", self.container, timeout=self.stop_timeout_s)
        return time.monotonic() - started

    def cpu_seconds(self) -> float | None:
        return container_cpu_seconds(self.container)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._save_logs()
            docker("rm", "--force", self.container)

    def _save_logs(self) -> None:
        """Append the container's output to its log file before the container goes away."""
        if logs := container_logs(self.container):
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(logs)
