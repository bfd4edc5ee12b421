"""One benchmark round against one server: cold start, single-flower load, batch load, memory."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.loadgen import WrkResult, run_wrk
from benchmarks.servers import Server
from harness.processes import (
    REPO_ROOT,
    on_free_port,
    process_tree,
    running,
    tree_memory_bytes,
)
from iris_classifier.serving.protocols.contract import SAMPLE_FLOWER

logger = logging.getLogger(__name__)

# Each round's server log, kept out of the results folder that is committed.
SERVER_LOG_DIR = REPO_ROOT / "build" / "benchmarks"


@dataclass(frozen=True)
class LoadSettings:
    single_seconds: float
    batch_seconds: float
    warmup_seconds: float
    single_connections: int
    batch_connections: int
    batch_rows: int
    server_cpus: str
    load_cpus: str


@dataclass(frozen=True)
class RoundResult:
    server: str
    round_index: int
    cold_start_s: float
    cold_start_cpu_s: float
    single: WrkResult
    batch: WrkResult
    batch_rows: int
    single_cpu_s: float
    batch_cpu_s: float
    rss_mb: float
    pss_mb: float | None  # None where PSS cannot be read (harness.processes.tree_memory_bytes)

    @property
    def flowers_per_second(self) -> float:
        return self.batch.requests_per_second * self.batch_rows

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.single_cpu_s / self.single.requests if self.single.requests else 0.0

    @property
    def flowers_per_cpu_second(self) -> float:
        flowers = self.batch.requests * self.batch_rows
        return flowers / self.batch_cpu_s if self.batch_cpu_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server,
            "round": self.round_index,
            "cold_start_s": self.cold_start_s,
            "cold_start_cpu_s": self.cold_start_cpu_s,
            "single_rps": self.single.requests_per_second,
            "single_p50_ms": self.single.p50_ms,
            "single_p99_ms": self.single.p99_ms,
            "single_failed": self.single.failed,
            "batch_rps": self.batch.requests_per_second,
            "batch_failed": self.batch.failed,
            "flowers_per_second": self.flowers_per_second,
            "cpu_us_per_request": self.cpu_us_per_request,
            "flowers_per_cpu_second": self.flowers_per_cpu_second,
            "rss_mb": self.rss_mb,
            "pss_mb": self.pss_mb,
        }


def tree_memory_mb(pid: int) -> tuple[float, float | None]:
    """Resident and proportional set sizes summed over the whole process tree, in MB (PSS None
    where it cannot be read)."""
    _, rss, pss = tree_memory_bytes(pid)
    return rss / 1e6, None if pss is None else pss / 1e6


def tree_cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by the whole process tree.

    CPU time per request barely moves when other work shares the machine, unlike requests per
    second, so it is the steadier figure for comparing servers on a busy host.
    """
    total = 0.0
    for proc in process_tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@dataclass(frozen=True)
class Access:
    """What a server is started with beyond its own settings, and what every request carries."""

    env: dict[str, str]
    authorization: str = ""  # the Authorization header, when the server requires a token


@contextlib.contextmanager
def access_for(server: Server) -> Iterator[Access]:
    """For a server with bearer tokens on, a fresh token in a file of its own while it runs."""
    if not server.bearer_token:
        yield Access(env=server.env)
        return
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as directory:
        token_file = Path(directory) / "tokens"
        token_file.write_text(token + "\n")
        yield Access(
            env={**server.env, "IRIS_TOKEN_FILE": str(token_file)},
            authorization=f"Bearer {token}",
        )


def check_answers(base_url: str, authorization: str = "") -> None:
    """Fail the round early if the server does not answer the contract at all."""
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(
        f"{base_url}/iris/classify_iris", data=json.dumps(SAMPLE_FLOWER).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    if "class" not in body or "probability" not in body:
        raise RuntimeError(f"{base_url} answered without a class: {body}")


def measure_round(
    server: Server, round_index: int, settings: LoadSettings, log_dir: Path
) -> RoundResult:
    with access_for(server) as access:
        return measure_started(server, access, round_index, settings, log_dir)


def measure_started(
    server: Server, access: Access, round_index: int, settings: LoadSettings, log_dir: Path
) -> RoundResult:
    log_path = log_dir / f"{server.name}-round{round_index}.log"

    @contextlib.contextmanager
    def timed_start(port: int) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
        """The server ready on `port`, and the seconds it took from launch."""
        started = time.monotonic()
        with running(
            ["taskset", "-c", settings.server_cpus, *server.command(port)],
            ready_url=f"http://127.0.0.1:{port}{server.ready_path}",
            env=access.env,
            log_path=log_path,
            cwd=REPO_ROOT,
            timeout=120,
        ) as process:
            yield process, time.monotonic() - started

    with on_free_port(timed_start) as ((process, cold_start_s), port):
        base_url = f"http://127.0.0.1:{port}"
        cold_start_cpu_s = tree_cpu_seconds(process.pid)
        check_answers(base_url, access.authorization)
        script_env = {"BENCH_AUTHORIZATION": access.authorization}
        if settings.warmup_seconds > 0:
            run_wrk(
                base_url,
                "single.lua",
                seconds=settings.warmup_seconds,
                connections=settings.single_connections,
                cpus=settings.load_cpus,
                script_env=script_env,
            )
        cpu_before_single = tree_cpu_seconds(process.pid)
        single = run_wrk(
            base_url,
            "single.lua",
            seconds=settings.single_seconds,
            connections=settings.single_connections,
            cpus=settings.load_cpus,
            script_env=script_env,
        )
        cpu_before_batch = tree_cpu_seconds(process.pid)
        batch = run_wrk(
            base_url,
            "batch.lua",
            seconds=settings.batch_seconds,
            connections=settings.batch_connections,
            cpus=settings.load_cpus,
            batch_rows=settings.batch_rows,
            script_env=script_env,
        )
        cpu_after_batch = tree_cpu_seconds(process.pid)
        rss_mb, pss_mb = tree_memory_mb(process.pid)
    result = RoundResult(
        server=server.name,
        round_index=round_index,
        cold_start_s=cold_start_s,
        cold_start_cpu_s=cold_start_cpu_s,
        single=single,
        batch=batch,
        batch_rows=settings.batch_rows,
        single_cpu_s=cpu_before_batch - cpu_before_single,
        batch_cpu_s=cpu_after_batch - cpu_before_batch,
        rss_mb=rss_mb,
        pss_mb=pss_mb,
    )
    logger.info(
        "round %d %-16s %8.0f req/s p99 %6.1f ms %6.0f CPU us/req %9.0f flowers/s "
        "%9.0f flowers/CPU-s %5.0f MB RSS cold %.2f s",
        round_index,
        server.name,
        single.requests_per_second,
        single.p99_ms,
        result.cpu_us_per_request,
        result.flowers_per_second,
        result.flowers_per_cpu_second,
        rss_mb,
        cold_start_s,
    )
    return result
