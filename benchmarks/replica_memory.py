"""Measure the memory one serving replica needs, to size the pods' requests and limits.

A pod runs exactly what `bentoml serve` starts here: the arbiter and its worker processes.
The container's memory cgroup charges each page once, so the sum of PSS (shared pages split
between the processes that map them) is the closest figure to what the kubelet sees; the sum
of RSS counts shared pages several times and is an upper bound. Both are taken after start,
polled for their peak during a bounded burst of the largest requests the API accepts (several
in flight at once), and taken again after it.

    python -m benchmarks.replica_memory            # or: make measure-memory
    python -m benchmarks.replica_memory --pod      # the kind image, run as its pod spec says

With --pod the figure is the container's memory as `docker stats` reports it (usage less
reclaimable page cache, which is what the kubelet compares with the limit).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import cli
from harness.processes import (
    REPO_ROOT,
    bentoml_serve_command,
    running_on_free_port,
    tree_memory_bytes,
)
from iris_classifier.serving.config import MAX_BATCH_ROWS
from iris_classifier.serving.protocols.contract import SAMPLE_FLOWER

logger = logging.getLogger(__name__)

MIB = 2**20


def tree_memory_mib(pid: int) -> dict[str, float | None]:
    """RSS and PSS summed over `pid` and its descendants, in MiB (PSS None where it cannot be
    read)."""
    processes, rss, pss = tree_memory_bytes(pid)
    return {
        "processes": processes,
        "rss_mib": rss / MIB,
        "pss_mib": None if pss is None else pss / MIB,
    }


def post_json(url: str, payload: object) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
        response.read()


def exercise(base_url: str, *, singles: int, batches: int, concurrency: int) -> None:
    """A bounded burst: `singles` one-flower requests, then `batches` maximal batches, each
    sent `concurrency` at a time so that many large bodies are in the server at once."""
    batch = {"flowers": [SAMPLE_FLOWER] * MAX_BATCH_ROWS}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(
            pool.map(
                lambda _: post_json(f"{base_url}/iris/classify_iris", SAMPLE_FLOWER), range(singles)
            )
        )
        list(
            pool.map(lambda _: post_json(f"{base_url}/iris/classify_batch", batch), range(batches))
        )


def peak_while(
    sample: Callable[[], dict[str, float]], action: Callable[[], object]
) -> dict[str, float]:
    """The largest value of each figure `sample` returns, polled while `action` runs."""
    peaks: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        while True:
            for key, value in sample().items():
                peaks[key] = max(peaks.get(key, value), value)
            if done.wait(0.25):
                return

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        action()
    finally:
        done.set()
        poller.join()
    return peaks


def measure(*, singles: int, batches: int, concurrency: int) -> dict[str, dict[str, float]]:
    with (
        tempfile.TemporaryDirectory() as logs,
        running_on_free_port(
            bentoml_serve_command, log_path=Path(logs) / "serve.log", cwd=REPO_ROOT, timeout=120
        ) as (server, base_url),
    ):
        idle = tree_memory_mib(server.pid)
        peak = peak_while(
            lambda: tree_memory_mib(server.pid),
            lambda: exercise(base_url, singles=singles, batches=batches, concurrency=concurrency),
        )
        loaded = tree_memory_mib(server.pid)
    return {"after_start": idle, "burst_peak": peak, "after_burst": loaded}


def measure_pod(*, singles: int, batches: int, concurrency: int) -> dict[str, dict[str, float]]:
    """The same burst against the kind overlay's image, started as its pod spec says."""
    from harness import deployment, pod_emulation

    kind = deployment.only(deployment.render(deployment.overlay_dir("kind")), "Deployment")
    container = pod_emulation.pod_container(kind, deployment.CONTAINER_NAME, pod_name="measure")
    pod = pod_emulation.RunningPod(container, name=f"iris-measure-{os.getpid()}")
    try:
        pod.wait_ready("/readyz", timeout=120)

        def usage() -> dict[str, float]:
            return {"container_mib": pod.memory_usage_bytes() / MIB}

        def burst() -> None:
            answers = pod.http(
                [
                    ("POST", "/iris/classify_iris", SAMPLE_FLOWER, singles),
                    (
                        "POST",
                        "/iris/classify_batch",
                        {"flowers": [SAMPLE_FLOWER] * MAX_BATCH_ROWS},
                        batches,
                    ),
                ],
                concurrency=concurrency,
            )
            if any(answer["status"] != 200 for answer in answers):
                raise RuntimeError(f"the burst failed: {answers}")

        idle = usage()
        peak = peak_while(usage, burst)
        loaded = usage()
    finally:
        pod.remove()
    return {"after_start": idle, "burst_peak": peak, "after_burst": loaded}


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("benchmarks.replica_memory", __doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=500, help="one-flower requests")
    parser.add_argument("--batches", type=int, default=40, help=f"{MAX_BATCH_ROWS}-row batches")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument(
        "--pod", action="store_true", help="measure the kind image in Docker instead"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pod:
        result = measure_pod(
            singles=args.singles, batches=args.batches, concurrency=args.concurrency
        )
        for stage, figures in result.items():
            logger.info("%-12s container %.0f MiB", stage, figures["container_mib"])
    else:
        result = measure(singles=args.singles, batches=args.batches, concurrency=args.concurrency)
        for stage, figures in result.items():
            logger.info(
                "%-12s %d processes  RSS %.0f MiB  PSS %s MiB",
                stage,
                figures["processes"],
                figures["rss_mib"],
                "n/a" if figures["pss_mib"] is None else f"{figures['pss_mib']:.0f}",
            )
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
