"""Drive a server with wrk, a C load generator, and read back its numbers.

Python load generators (locust included) saturate before a server this fast does, so they
would measure themselves. wrk runs pinned to CPUs the server does not use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from iris_classifier.serving.protocols.contract import SAMPLE_FLOWER

WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"
RESULT_MARKER = "WRK_RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise FileNotFoundError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def parse_wrk_output(output: str) -> WrkResult:
    """Read the line that `wrk/report.lua` prints at the end of a run."""
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            raw = json.loads(line.removeprefix(RESULT_MARKER))
            failed = sum(
                raw[key]
                for key in ("connect_errors", "read_errors", "write_errors", "timeouts", "non_2xx")
            )
            return WrkResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1e3,
                p99_ms=raw["p99_us"] / 1e3,
                failed=failed,
            )
    raise ValueError(f"wrk printed no {RESULT_MARKER.strip()} line:\n{output}")


def run_wrk(
    base_url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    cpus: str,
    batch_rows: int = 1000,
    script_env: dict[str, str] | None = None,
) -> WrkResult:
    """Run one wrk load of `seconds` on `cpus` with one thread and `connections` connections."""
    command = [
        "taskset", "-c", cpus, wrk_path(),
        "--threads", "1",
        "--connections", str(connections),
        "--duration", f"{max(1, round(seconds))}s",
        "--timeout", "10s",
        "--script", str(WRK_SCRIPTS / script),
        base_url,
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_FLOWER": json.dumps(SAMPLE_FLOWER),
        "BENCH_BATCH_ROWS": str(batch_rows),
        **(script_env or {}),
    }
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 60, check=True
    )
    return parse_wrk_output(completed.stdout)


def add_load_arguments(
    parser: argparse.ArgumentParser, *, rounds: int, seconds: float, warmup_help: str
) -> None:
    """The options every wrk benchmark shares: rounds, the length and width of each load."""
    parser.add_argument(
        "--rounds", type=int, default=rounds, help="rounds; each runs every server once, in turn"
    )
    parser.add_argument(
        "--seconds", type=float, default=seconds, help="length of each measured load, in seconds"
    )
    parser.add_argument("--warmup", type=float, default=2, help=warmup_help)
    parser.add_argument(
        "--connections", type=int, default=16, help="wrk connections for single flowers"
    )
    parser.add_argument(
        "--batch-connections", type=int, default=4, help="wrk connections for batches"
    )
    parser.add_argument("--batch-rows", type=int, default=1000, help="flowers in each batch")
