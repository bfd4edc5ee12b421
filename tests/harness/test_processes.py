"""The process-tree helpers every server runner shares: what they read and what they refuse to
guess."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from harness.processes import process_tree, stop_tree, tree_memory_bytes
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
