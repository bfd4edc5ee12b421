"""Measure the memory one serving replica needs, to size the pods' requests and limits.

A pod runs exactly what `bentoml serve` starts here: the arbiter and its worker processes.
The container's memory cgroup charges each page once, so the sum of PSS (shared pages split
between the processes that map them) is the closest figure to what the kubelet sees; the sum
of RSS counts shared pages several times and is an upper bound. Both are taken after start
and again after a bounded burst of the largest requests the API accepts.

    python -m harness.replica_memory            # or: make measure-memory
    python -m harness.replica_memory --pod      # the kind image, run as its pod spec says

With --pod the figure is the container's memory as `docker stats` reports it (usage less
reclaimable page cache, which is what the kubelet compares with the limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import psutil

from harness.processes import REPO_ROOT, bentoml_serve_command, free_port, process_tree, running

logger = logging.getLogger(__name__)

MIB = 2**20
LARGEST_BATCH = 5000
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def tree_memory_mib(pid: int) -> dict[str, float]:
    """RSS and PSS summed over `pid` and its descendants, in MiB."""
    rss = pss = 0
    processes = process_tree(pid)
    for proc in processes:
        try:
            info = proc.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"processes": len(processes), "rss_mib": rss / MIB, "pss_mib": pss / MIB}


def post_json(url: str, payload: object) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        response.read()


def exercise(base_url: str, *, singles: int, batches: int) -> None:
    """A bounded burst: `singles` one-flower requests, then `batches` maximal batches."""
    for _ in range(singles):
        post_json(f"{base_url}/iris/classify_iris", FLOWER)
    for _ in range(batches):
        post_json(f"{base_url}/iris/classify_batch", {"flowers": [FLOWER] * LARGEST_BATCH})


def measure(*, singles: int, batches: int) -> dict[str, dict[str, float]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as logs,
        running(
            bentoml_serve_command(port),
            ready_url=f"{base_url}/readyz",
            log_path=Path(logs) / "serve.log",
            cwd=REPO_ROOT,
            timeout=120,
        ) as server,
    ):
        idle = tree_memory_mib(server.pid)
        exercise(base_url, singles=singles, batches=batches)
        loaded = tree_memory_mib(server.pid)
    return {"after_start": idle, "after_burst": loaded}


def measure_pod(*, singles: int, batches: int) -> dict[str, dict[str, float]]:
    """The same burst against the kind overlay's image, started as its pod spec says."""
    from harness import manifests, pod_emulation

    deployment = manifests.only(manifests.render(manifests.overlay_dir("kind")), "Deployment")
    container = pod_emulation.pod_container(deployment, "iris-classifier", pod_name="measure")
    pod = pod_emulation.RunningPod(container, name=f"iris-measure-{os.getpid()}")
    try:
        pod.wait_ready("/readyz", timeout=120)
        idle = pod.memory_usage_bytes() / MIB
        answers = pod.http(
            [
                ("POST", "/iris/classify_iris", FLOWER, singles),
                ("POST", "/iris/classify_batch", {"flowers": [FLOWER] * LARGEST_BATCH}, batches),
            ]
        )
        if any(answer["status"] != 200 for answer in answers):
            raise RuntimeError(f"the burst failed: {answers}")
        loaded = pod.memory_usage_bytes() / MIB
    finally:
        pod.remove()
    return {"after_start": {"container_mib": idle}, "after_burst": {"container_mib": loaded}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=500, help="one-flower requests")
    parser.add_argument("--batches", type=int, default=20, help=f"{LARGEST_BATCH}-row batches")
    parser.add_argument(
        "--pod", action="store_true", help="measure the kind image in Docker instead"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pod:
        result = measure_pod(singles=args.singles, batches=args.batches)
        for stage, figures in result.items():
            logger.info("%-12s container %.0f MiB", stage, figures["container_mib"])
    else:
        result = measure(singles=args.singles, batches=args.batches)
        for stage, figures in result.items():
            logger.info(
                "%-12s %d processes  RSS %.0f MiB  PSS %.0f MiB",
                stage,
                figures["processes"],
                figures["rss_mib"],
                figures["pss_mib"],
            )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
