"""Print the service image's size and its cold start, the two figures the README states.

    python -m image.stats iris-classifier:0.1.0 [--runs 5]    # or: make image-stats

Cold start is the time from `docker run` (hardened as in Kubernetes) to the first 200 from
/readyz, for fresh containers one after another; the median of several runs is printed
with the spread and the load average, since a busy machine stretches it; the CPU time the
container used until ready is printed too, a figure that load elsewhere does not change.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
from pathlib import Path

from harness import cli
from harness.containers import cold_start, docker_unavailable_reason, image_size_bytes

logger = logging.getLogger("image-stats")


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("image.stats", __doc__.split("\n")[0])
    parser.add_argument("image", help="image reference, e.g. iris-classifier:0.1.0")
    parser.add_argument("--runs", type=int, default=5, help="cold starts to time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if reason := docker_unavailable_reason():
        logger.error("%s", reason)
        return 1
    size = image_size_bytes(args.image)
    logger.info("image %s: %.0f MB (%d bytes)", args.image, size / 1e6, size)

    starts = []
    with tempfile.TemporaryDirectory(prefix="image-stats-") as scratch:
        for run in range(args.runs):
            log_path = Path(scratch, f"run-{run}.log")
            starts.append(cold_start(args.image, log_path=log_path, env={"POD_NAME": "stats"}))
    timings = [start.seconds for start in starts]
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    logger.info(
        "cold start, docker run to /readyz 200: median %.2f s (min %.2f, max %.2f, %d runs; "
        "load average %s on %d CPUs)",
        statistics.median(timings),
        min(timings),
        max(timings),
        len(timings),
        load,
        os.cpu_count() or 0,
    )
    cpu = [start.cpu_seconds for start in starts if start.cpu_seconds is not None]
    if cpu:
        logger.info(
            "CPU time the container used until ready: median %.2f s (min %.2f, max %.2f)",
            statistics.median(cpu),
            min(cpu),
            max(cpu),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
