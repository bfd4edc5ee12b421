"""CPU time of the cgroup a process belongs to, found from the process itself.

A container's cgroup sits at a path that depends on the cgroup version (v1's cpuacct
hierarchy or v2's unified one), on the runtime's cgroup driver (systemd's
`system.slice/docker-<id>.scope` or cgroupfs's `docker/<id>`) and on where the hierarchies are
mounted. None of it is guessed here: /proc/<pid>/cgroup names the process's cgroup in each
hierarchy and /proc/self/mountinfo says where each hierarchy is mounted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)


def _unescape(field: str) -> str:
    """A mountinfo field with its octal escapes (`\\040` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _mounts(mountinfo: str) -> list[tuple[str, Path, str, set[str]]]:
    """(root, mount point, filesystem type, super options) of every cgroup mount."""
    mounts = []
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, fs_fields = before.split(), after.split()
        if not separator or len(fields) < 5 or len(fs_fields) < 3:
            continue
        if fs_fields[0] in ("cgroup", "cgroup2"):
            root, mount_point = _unescape(fields[3]), Path(_unescape(fields[4]))
            mounts.append((root, mount_point, fs_fields[0], set(fs_fields[2].split(","))))
    return mounts


def _under(mount_point: Path, mount_root: str, cgroup_path: str) -> Path | None:
    """Where `cgroup_path` appears below a hierarchy mounted from `mount_root`; None when the
    mount does not show it (a cgroup namespace or a bind mount of another subtree)."""
    if "/.." in cgroup_path:
        return None
    root = mount_root.rstrip("/")
    if cgroup_path != root and not cgroup_path.startswith(f"{root}/"):
        return None
    return mount_point / cgroup_path[len(root) :].lstrip("/")


def cpu_usage_file(proc_cgroup: str, mountinfo: str) -> Path | None:
    """The file holding the cumulative CPU time of the cgroup `proc_cgroup` describes:
    v1's cpuacct.usage where a cpuacct hierarchy is mounted, else v2's cpu.stat."""
    mounts = _mounts(mountinfo)
    unified = None
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            unified = path
            continue
        if "cpuacct" not in controllers.split(","):
            continue
        for root, mount_point, fs_type, options in mounts:
            if fs_type == "cgroup" and "cpuacct" in options:
                directory = _under(mount_point, root, path)
                if directory is not None:
                    return directory / "cpuacct.usage"
    if unified is not None:
        for root, mount_point, fs_type, _ in mounts:
            if fs_type == "cgroup2":
                directory = _under(mount_point, root, unified)
                if directory is not None:
                    return directory / "cpu.stat"
    return None


def read_cpu_seconds(usage_file: Path) -> float:
    """CPU seconds from v1's cpuacct.usage (nanoseconds) or v2's cpu.stat (usage_usec)."""
    text = usage_file.read_text()
    if usage_file.name == "cpuacct.usage":
        return int(text) / 1e9
    fields = dict(line.split() for line in text.splitlines() if line.strip())
    return int(fields["usage_usec"]) / 1e6


def cpu_usage_path(pid: int) -> Path | None:
    """The CPU usage file of the cgroup process `pid` is in; None where it cannot be found."""
    try:
        proc_cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as error:
        logger.info("cannot read the cgroup of pid %s: %s", pid, error)
        return None
    return cpu_usage_file(proc_cgroup, mountinfo)


def cgroup_cpu_seconds(pid: int, *, must_contain: str = "") -> float | None:
    """CPU seconds used so far by the cgroup process `pid` is in; None where it cannot be read.

    `must_contain` guards against a pid read in another PID namespace naming some other
    process: the cgroup's path must contain it (a container's id, which both of Docker's
    cgroup drivers put in the path).
    """
    usage_file = cpu_usage_path(pid)
    if usage_file is None or must_contain not in str(usage_file):
        logger.info("no CPU usage file for pid %s's cgroup (found %s)", pid, usage_file)
        return None
    try:
        return read_cpu_seconds(usage_file)
    except (OSError, ValueError, KeyError) as error:
        logger.info("cannot read %s: %s", usage_file, error)
        return None
