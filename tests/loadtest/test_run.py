"""How `python -m loadtest.run` treats the processes it starts."""

from __future__ import annotations

import signal
import subprocess
import sys

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
