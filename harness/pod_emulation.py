"""Run the container of a rendered Deployment the way the kubelet would, with Docker.

No cluster runs where the tests run, but the parts of the pod spec that decide whether the
container starts and serves can be reproduced with `docker run`: the user, a read-only root
with the emptyDir mounts, no capabilities, no privilege escalation, the memory limit and the
environment (downward API fields filled in). The container gets no network but its own
loopback, as production's NetworkPolicy leaves it no egress, so every HTTP check runs inside
it against the container port the Service targets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import deployment
from harness.containers import container_logs, docker, docker_run_command, hardening_flags
from harness.deployment import Manifest

logger = logging.getLogger(__name__)

# Runs inside the container with its own Python: GET or POST on the container port, report
# status, X-Served-By and body; meanwhile sample the container's memory from its own cgroup
# (v2 or v1, as the container sees it). Standard library only, the image has nothing else for it.
_HTTP_SCRIPT = """
import json, os, sys, threading, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, job = int(sys.argv[1]), json.load(sys.stdin)

def call(method, path, body):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, text = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, text = error.code, error.headers, error.read()
    except OSError as error:
        status, headers, text = 0, {}, str(error).encode()
    return {"path": path, "status": status, "served_by": headers.get("X-Served-By"),
            "body": text.decode(errors="replace")[:500]}

V2, V1 = "/sys/fs/cgroup", "/sys/fs/cgroup/memory"

def read(path):
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return None

def stat(directory):
    return dict((key, int(value)) for key, value in
                (line.split() for line in read(f"{directory}/memory.stat").splitlines()))

def working_set():
    # What the kubelet calls the working set: usage less the inactive page cache.
    if os.path.exists(f"{V2}/memory.current"):
        return int(read(f"{V2}/memory.current")) - stat(V2).get("inactive_file", 0)
    return int(read(f"{V1}/memory.usage_in_bytes")) - stat(V1).get("total_inactive_file", 0)

def kernel_marks():
    if os.path.exists(f"{V2}/memory.current"):
        events = dict(line.split() for line in read(f"{V2}/memory.events").splitlines())
        peak = read(f"{V2}/memory.peak")
        return (int(peak) if peak else None), int(events.get("max", 0))
    return int(read(f"{V1}/memory.max_usage_in_bytes")), int(read(f"{V1}/memory.failcnt"))

done, samples = threading.Event(), []

def sample():
    while not done.is_set():
        samples.append(working_set())
        time.sleep(0.01)

sampler = threading.Thread(target=sample)
sampler.start()
answers = []
try:
    with ThreadPoolExecutor(max_workers=job["concurrency"]) as pool:
        for method, path, body, times in job["requests"]:
            results = list(pool.map(lambda _: call(method, path, body), range(times)))
            failed = [result for result in results if result["status"] != 200]
            answers.append(failed[0] if failed else results[-1])
finally:
    done.set()
    sampler.join()
samples.append(working_set())
peak, limit_hits = kernel_marks()
print(json.dumps({"answers": answers, "memory": {"working_set_peak": max(samples),
    "samples": len(samples), "kernel_peak": peak, "limit_hits": limit_hits}}))
"""

# Addresses the container listens on for `port`, from the kernel's socket tables.
_LISTEN_SCRIPT = """
import sys
port = int(sys.argv[1])
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except FileNotFoundError:
        continue
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.rsplit(":", 1)
        if state == "0A" and int(hex_port, 16) == port:
            print(address)
"""

WILDCARD_ADDRESSES = {"00000000", "00000000000000000000000000000000"}


@dataclass(frozen=True)
class MemoryPeak:
    """The container's memory while requests were sent, read from its own cgroup."""

    # The highest working set sampled every 10 ms (usage less inactive page cache: what the
    # kubelet reports and evicts on).
    working_set_bytes: int
    samples: int
    # The kernel's high-water mark of usage, page cache included, since the container started
    # (memory.peak, or cgroup v1's max_usage_in_bytes; None where the kernel has no such file).
    kernel_peak_bytes: int | None
    # How often usage reached the limit and the kernel had to reclaim or kill (memory.events
    # `max`, or v1's failcnt): 0 means the limit was never touched.
    limit_hits: int


@dataclass(frozen=True)
class PodContainer:
    """What `docker run` needs to stand in for one container of a pod."""

    image: str
    docker_args: list[str]
    port: int
    memory_limit_bytes: int | None


def pod_container(pod: Manifest, container_name: str, *, pod_name: str) -> PodContainer:
    """The pod spec's hardening (as every container here gets it), env and limits as
    `docker run` flags."""
    app = deployment.container(pod, container_name)
    args = hardening_flags(pod, container_name)

    for variable in app.get("env", []):
        args += ["--env", f"{variable['name']}={_env_value(variable, pod_name)}"]

    limit = app.get("resources", {}).get("limits", {}).get("memory")
    memory_limit = int(deployment.quantity(limit)) if limit else None
    if memory_limit:
        # Same limit with no swap on top, as the kubelet sets it.
        args += ["--memory", str(memory_limit), "--memory-swap", str(memory_limit)]

    (port,) = [port["containerPort"] for port in app["ports"] if port.get("name") == "http"]
    return PodContainer(app["image"], args, port, memory_limit)


def _env_value(variable: Manifest, pod_name: str) -> str:
    if "value" in variable:
        return str(variable["value"])
    field = variable["valueFrom"]["fieldRef"]["fieldPath"]
    if field == "metadata.name":
        return pod_name
    raise ValueError(f"cannot fill in {field} for {variable['name']}")


class RunningPod:
    """One container started with `docker run --network none`, removed by `remove()`."""

    def __init__(self, container: PodContainer, name: str) -> None:
        self.container = container
        self.name = name
        command = docker_run_command(
            container.image,
            name=name,
            flags=container.docker_args,
            network="none",
            detach=True,
        )
        docker(*command[1:])

    def http(
        self, requests: Sequence[tuple[str, str, Any, int]], *, concurrency: int = 1
    ) -> list[dict[str, Any]]:
        """(method, path, JSON body or None, times) each, sent `concurrency` at a time from
        inside the container; per entry, its first failed answer, else its last one."""
        return self.burst(requests, concurrency=concurrency)[0]

    def burst(
        self, requests: Sequence[tuple[str, str, Any, int]], *, concurrency: int
    ) -> tuple[list[dict[str, Any]], MemoryPeak]:
        """The answers as `http` gives them, and the container's memory meanwhile (the
        sending client runs in the container and is counted too)."""
        output = docker(
            "exec",
            "--interactive",
            self.name,
            "python",
            "-c",
            _HTTP_SCRIPT,
            str(self.container.port),
            stdin=json.dumps({"concurrency": concurrency, "requests": list(requests)}),
            timeout=None,  # a burst's length is bounded by the requests it is given
        )
        result = json.loads(output)
        memory = result["memory"]
        return result["answers"], MemoryPeak(
            working_set_bytes=memory["working_set_peak"],
            samples=memory["samples"],
            kernel_peak_bytes=memory["kernel_peak"],
            limit_hits=memory["limit_hits"],
        )

    def wait_ready(self, path: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"container exited:\n{self.logs()}")
            last = self.http([("GET", path, None, 1)])[0]
            if last["status"] == 200:
                return
            time.sleep(1)
        raise TimeoutError(f"{path} not ready after {timeout:.0f}s: {last}\n{self.logs()}")

    def listen_addresses(self) -> set[str]:
        return set(self.exec("python", "-c", _LISTEN_SCRIPT, str(self.container.port)).split())

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command)

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.name).strip()

    def memory_usage_bytes(self) -> int:
        """Usage as `docker stats` reports it: without reclaimable page cache, like the kubelet."""
        usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", self.name)
        return int(deployment.quantity(_docker_size(usage.split("/")[0])))

    def stop(self, *, grace_seconds: int) -> int:
        """SIGTERM, SIGKILL after `grace_seconds`; the exit code (137 means it was killed)."""
        docker("stop", "--time", str(grace_seconds), self.name, timeout=grace_seconds + 60)
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self) -> str:
        return container_logs(self.name, tail=40)

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            docker("rm", "--force", self.name)


def _docker_size(text: str) -> str:
    """'242.2MiB' -> '242.2Mi', the quantity syntax deployment.quantity reads."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]i)?B\s*", text)
    if not match:
        raise ValueError(f"unexpected docker size {text!r}")
    return match.group(1) + (match.group(2) or "")
