"""A process's cgroup CPU time is found from /proc, whatever the cgroup layout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import cgroups, containers
from tests.conftest import require

ID = "4f0c1e0d9a7b"

# /proc/self/mountinfo lines, abridged to the fields that are read.
V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(
    ("proc_cgroup", "mountinfo", "expected"),
    [
        pytest.param(
            f"4:memory:/docker/{ID}\n3:cpu,cpuacct:/docker/{ID}\n0::/docker/{ID}\n",
            V1_MOUNTS,
            f"/sys/fs/cgroup/cpu,cpuacct/docker/{ID}/cpuacct.usage",
            id="v1-cgroupfs",
        ),
        pytest.param(
            f"3:cpu,cpuacct:/system.slice/docker-{ID}.scope\n0::/system.slice/docker-{ID}.scope\n",
            V1_MOUNTS,
            f"/sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{ID}.scope/cpuacct.usage",
            id="v1-systemd",
        ),
        pytest.param(
            f"0::/system.slice/docker-{ID}.scope\n",
            V2_MOUNTS,
            f"/sys/fs/cgroup/system.slice/docker-{ID}.scope/cpu.stat",
            id="v2-systemd",
        ),
        pytest.param(
            f"0::/docker/{ID}\n",
            V2_MOUNTS,
            f"/sys/fs/cgroup/docker/{ID}/cpu.stat",
            id="v2-cgroupfs",
        ),
        pytest.param(
            # Inside a container: the hierarchy mounted is its own subtree.
            f"0::/docker/{ID}/inner\n",
            f"30 23 0:26 /docker/{ID} /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "/sys/fs/cgroup/inner/cpu.stat",
            id="v2-subtree-mounted",
        ),
        pytest.param(
            f"0::/../../system.slice/docker-{ID}.scope\n", V2_MOUNTS, None, id="outside-namespace"
        ),
        pytest.param(f"0::/docker/{ID}\n", "", None, id="nothing-mounted"),
    ],
)
def test_the_cpu_usage_file_is_found_from_proc(
    proc_cgroup: str, mountinfo: str, expected: str | None
) -> None:
    found = cgroups.cpu_usage_file(proc_cgroup, mountinfo)
    assert found == (Path(expected) if expected else None)


def test_both_usage_formats_read_as_seconds(tmp_path: Path) -> None:
    (tmp_path / "cpuacct.usage").write_text("2500000000\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    assert cgroups.read_cpu_seconds(tmp_path / "cpuacct.usage") == 2.5
    assert cgroups.read_cpu_seconds(tmp_path / "cpu.stat") == 1.5


def test_this_processs_cgroup_counts_the_cpu_it_burns() -> None:
    before = cgroups.cgroup_cpu_seconds(os.getpid())
    require(before is not None, "no cgroup CPU accounting can be read on this machine")
    started = time.process_time()
    while time.process_time() - started < 0.3:
        pass
    after = cgroups.cgroup_cpu_seconds(os.getpid())
    assert after is not None
    assert after - before >= 0.25


def test_a_pid_whose_cgroup_is_not_the_containers_gives_no_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pid from another PID namespace names some other process here: its cgroup does not
    carry the container's id, so no figure is better than that process's."""
    monkeypatch.setattr(containers, "docker", lambda *args, **kwargs: f"{ID} {os.getpid()}")
    assert containers.container_cpu_seconds("probe") is None
    monkeypatch.setattr(containers, "docker", lambda *args, **kwargs: f"{ID} 0")
    assert containers.container_cpu_seconds("stopped") is None
