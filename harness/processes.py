"""Start servers in their own process group and stop their whole process tree.

`bentoml serve` runs an arbiter whose workers sit in process groups of their own, so
stopping the arbiter's group alone can leave an orphan worker serving the port. Every
helper here therefore walks the process tree with psutil.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

logger = logging.getLogger(__name__)

Opened = TypeVar("Opened")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Another process can take it before the caller's server binds it: servers started on it go
    through `on_free_port` (or `running_on_free_port`), which tries another port then.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """True when a socket listens on 127.0.0.1:`port` (or on every interface at `port`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections of an earlier server left in TIME_WAIT must not count, as servers
        # themselves set this option before they bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


# Starts on ports taken in between by someone else before a start is given up.
PORT_ATTEMPTS = 3


@contextlib.contextmanager
def on_free_port(
    open_on: Callable[[int], contextlib.AbstractContextManager[Opened]],
    *,
    attempts: int = PORT_ATTEMPTS,
) -> Iterator[tuple[Opened, int]]:
    """(server, port) of the context `open_on(port)` opens on a free port: a server that is
    ready on entry and stopped on exit.

    When entering fails and something else now listens on that port, the port was taken
    between `free_port()` and the server's bind: the server is started again on another
    port. Any other failure is raised at once.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        with contextlib.ExitStack() as stack:
            try:
                server = stack.enter_context(open_on(port))
            except Exception:
                if attempt == attempts or not port_in_use(port):
                    raise
                logger.warning("port %d was taken before the server bound it; trying another", port)
                continue
            yield server, port
            return


def start(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` as the leader of a new session, its output sent to `log_path`."""
    full_env = {**os.environ, **(env or {})}
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(command),
            env=full_env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log_path:
            output.close()


def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and all its descendants, parents first; empty if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory_bytes(pid: int) -> tuple[int, int, int | None]:
    """(processes, RSS, PSS) summed over `pid` and its descendants; PSS is None where it
    cannot be read for every process of the tree.

    RSS counts pages shared between forked workers once per process, so it overstates what a
    multi-process server costs; PSS splits shared pages fairly and is close to what a
    container's memory cgroup is charged. PSS comes from /proc/<pid>/smaps_rollup (or smaps),
    which some kernels and sandboxes do not offer or do not let a process read, and which other
    systems do not have at all: RSS alone is then all there is, never a stand-in for PSS.
    """
    rss = 0
    pss: int | None = 0
    processes = process_tree(pid)
    for proc in processes:
        try:
            rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        try:
            proc_pss = getattr(proc.memory_full_info(), "pss", None)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            proc_pss = None
        pss = None if pss is None or proc_pss is None else pss + proc_pss
    if pss is None:
        logger.info("PSS cannot be read for the process tree of %s: RSS only", pid)
    return len(processes), rss, pss


def signal_tree(pid: int, signum: int) -> list[psutil.Process]:
    """Send `signum` to `pid` and every descendant; return the processes signalled."""
    tree = process_tree(pid)
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signum)
    return tree


def stop_tree(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM the whole tree, wait up to `grace` seconds, then SIGKILL what is left."""
    tree = signal_tree(pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            logger.warning("pid %s ignored SIGTERM for %.0fs, killing it", proc.pid, grace)
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def wait_http_ok(
    url: str, *, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> float:
    """Poll `url` until it answers 200; return the seconds it took.

    Fails early when `process` exits, so a server that crashes on start is reported at once
    rather than after the whole timeout.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {process.returncode} before {url} was ready"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last_error}")


@contextlib.contextmanager
def running(
    command: Sequence[str],
    *,
    ready_url: str,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; its whole process tree is stopped afterwards."""
    process = start(command, env=env, log_path=log_path, cwd=cwd)
    try:
        wait_http_ok(ready_url, timeout=timeout, process=process)
        yield process
    finally:
        stop_tree(process.pid)
        # Collect the exit status so Popen does not warn that the server is still running.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def running_on_free_port(
    command_for: Callable[[int], Sequence[str]],
    *,
    ready_path: str = "/readyz",
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`running` on a free port of 127.0.0.1: (process, base URL) of the server
    `command_for(port)` starts, started again elsewhere if the port is taken before it binds."""

    def running_on(port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        url = f"http://127.0.0.1:{port}{ready_path}"
        return running(
            command_for(port), ready_url=url, env=env, log_path=log_path, cwd=cwd, timeout=timeout
        )

    with on_free_port(running_on) as (process, port):
        yield process, f"http://127.0.0.1:{port}"


REPO_ROOT = Path(__file__).resolve().parent.parent


def private_bentoml_home(directory: Path) -> Path:
    """A BentoML home for one `bentoml serve` of its own, sharing the current store's models.

    Each server empties and reuses `<home>/prometheus_multiproc_dir` for its /metrics, so two
    servers on one home report each other's counts (or lose their own).
    """
    models = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml") / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's
    directory.mkdir(parents=True)
    (directory / "models").symlink_to(models.resolve(), target_is_directory=True)
    return directory


def bentoml_serve_command(port: int, *, host: str = "127.0.0.1") -> list[str]:
    """argv that serves this repository's service with the venv's bentoml (run it in REPO_ROOT)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", "service:IrisClassifier", "--host", host, "--port", str(port)]
