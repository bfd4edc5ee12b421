"""How `python -m loadtest.run` treats the processes it starts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from harness.processes import free_port
from loadtest import run
from tests.conftest import REPO_ROOT


def test_the_runner_gives_locust_a_sigint_it_obeys_when_started_in_the_background() -> None:
    """A background job inherits SIGINT ignored; locust must not, or it never stops."""
    child_sigint = (
        "import signal, subprocess, sys; from loadtest import run; run.install_signal_handlers(); "
        "subprocess.run([sys.executable, '-c', "
        "'import signal; print(signal.getsignal(signal.SIGINT))'], check=True)"
    )
    printed = subprocess.run(
        [sys.executable, "-c", child_sigint],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        # What `cmd &` in a non-interactive shell does to the command.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert printed.stdout.strip() == "<built-in function default_int_handler>", printed.stdout


class FlakyReplica:
    """A replica whose first start fails, as one does when its port is taken before it binds."""

    def __init__(self, port: int) -> None:
        self.name, self.port = "replica-1", port
        self.launched_on: list[int] = []
        self.removed = 0

    def launch(self) -> None:
        self.launched_on.append(self.port)

    def wait_ready(self) -> float:
        if self.removed == 0:
            raise RuntimeError("server exited with code 1 before it was ready")
        return 1.5

    def remove(self) -> None:
        self.removed += 1


def test_a_replica_whose_port_was_taken_is_started_again_on_another() -> None:
    with socket.create_server(("127.0.0.1", 0)) as thief:
        taken = thief.getsockname()[1]
        replica = FlakyReplica(taken)
        replica.launch()
        name, port, seconds = run.ready_on_a_free_port(replica)
    assert (name, seconds) == ("replica-1", 1.5)
    assert port == replica.port != taken
    assert replica.launched_on == [taken, port]


def test_a_replica_that_fails_on_a_free_port_is_not_started_again() -> None:
    replica = FlakyReplica(free_port())
    replica.launch()
    with pytest.raises(RuntimeError, match="exited with code 1"):
        run.ready_on_a_free_port(replica)
    assert len(replica.launched_on) == 1
