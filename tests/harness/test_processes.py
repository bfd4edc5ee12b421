"""The process helpers every server runner shares: process trees, what they read and refuse to
guess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from harness.processes import (
    free_port,
    port_in_use,
    process_tree,
    running_on_free_port,
    stop_tree,
    tree_memory_bytes,
)
from tests.conftest import require

# A parent that forks one child and both wait: a tree of two sharing their pages.
FORKED_PAIR = "import os, time; os.fork(); time.sleep(60)"


@pytest.fixture
def forked_pair() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", FORKED_PAIR], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(process_tree(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield process
    stop_tree(process.pid, grace=5)
    process.wait(timeout=5)


def test_tree_memory_sums_the_whole_tree_and_splits_shared_pages(
    forked_pair: subprocess.Popen[bytes],
) -> None:
    processes, rss, pss = tree_memory_bytes(forked_pair.pid)
    assert processes == 2
    assert rss == sum(proc.memory_info().rss for proc in process_tree(forked_pair.pid))
    require(pss is not None, "PSS cannot be read on this machine (no readable smaps_rollup)")
    assert 0 < pss < rss


def test_tree_memory_gives_no_pss_rather_than_rss_where_pss_cannot_be_read(
    forked_pair: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(self: psutil.Process) -> None:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    processes, rss, pss = tree_memory_bytes(forked_pair.pid)
    assert (processes, pss) == (2, None)
    assert rss > 0, "RSS is still read"


def http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def test_a_port_in_use_is_told_from_a_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        assert port_in_use(listening.getsockname()[1])
    assert not port_in_use(free_port())


def test_a_server_whose_port_is_taken_before_it_binds_starts_on_another(tmp_path: Path) -> None:
    thief: list[socket.socket] = []
    ports: list[int] = []

    def command_for(port: int) -> list[str]:
        ports.append(port)
        if len(ports) == 1:  # another process binds the port first
            thief.append(socket.create_server(("127.0.0.1", port)))
        return http_server(port)

    try:
        with running_on_free_port(
            command_for, ready_path="/", log_path=tmp_path / "server.log", timeout=30
        ) as (process, url):
            assert process.poll() is None
            assert url == f"http://127.0.0.1:{ports[-1]}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
    finally:
        for sock in thief:
            sock.close()
    assert len(ports) == 2
    assert "Address already in use" in (tmp_path / "server.log").read_text()


def test_a_server_that_fails_for_another_reason_is_not_started_again() -> None:
    ports: list[int] = []

    def command_for(port: int) -> list[str]:
        ports.append(port)
        return [sys.executable, "-c", "raise SystemExit(3)"]

    with (
        pytest.raises(RuntimeError, match="exited with code 3"),
        running_on_free_port(command_for, timeout=30),
    ):
        pass
    assert len(ports) == 1
