"""What one request of each kind costs an otherwise idle replica, one at a time.

    python -m loadtest.request_kind_latency http://127.0.0.1:3000 --requests 40

Sends, in turn, a single flower, a batch of 20, the hostile body and the large batch of about
its size (both in loadtest/background.py), each on a connection of its
own and after a few to warm up, and prints each kind's status, sizes and median time. Nothing
else may load the replica meanwhile: the times are the replica's work per request plus the
loopback round trip.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from harness import cli
from loadtest.background import hostile_body, large_batch_body
from loadtest.flower_sampler import FlowerSampler

WARMUP_REQUESTS = 5


@dataclass(frozen=True)
class Cost:
    kind: str
    request_bytes: int
    status: int
    answer_bytes: int
    median_ms: float
    p90_ms: float

    def __str__(self) -> str:
        return (
            f"{self.kind:<12} {self.request_bytes:>9,} B  -> HTTP {self.status} "
            f"{self.answer_bytes:>9,} B  median {self.median_ms:6.1f} ms  p90 {self.p90_ms:6.1f} ms"
        )


def request_kinds() -> dict[str, tuple[str, bytes]]:
    sampler = FlowerSampler(seed=1)
    return {
        "single": ("/iris/classify_iris", json.dumps(sampler.flower()).encode()),
        "batch of 20": (
            "/iris/classify_batch",
            json.dumps({"flowers": sampler.flowers(20)}).encode(),
        ),
        "hostile": ("/iris/classify_iris", hostile_body()),
        "large batch": ("/iris/classify_batch", large_batch_body()),
    }


def timed_post(host: str, port: int, path: str, body: bytes) -> tuple[int, int, float]:
    """(status, answer bytes, seconds) of one POST on a new connection."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request(
            "POST", path, body, {"Content-Type": "application/json", "Connection": "close"}
        )
        response = connection.getresponse()
        answer = response.read()
        return response.status, len(answer), time.perf_counter() - started
    finally:
        connection.close()


def measure(url: str, requests: int) -> list[Cost]:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    costs = []
    for kind, (path, body) in request_kinds().items():
        for _ in range(WARMUP_REQUESTS):
            timed_post(host, port, path, body)
        results = [timed_post(host, port, path, body) for _ in range(requests)]
        times_ms = sorted(1000 * seconds for _, _, seconds in results)
        status, answer_bytes, _ = results[-1]
        costs.append(
            Cost(
                kind,
                len(body),
                status,
                answer_bytes,
                statistics.median(times_ms),
                times_ms[int(0.9 * (len(times_ms) - 1))],
            )
        )
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser("loadtest.request_kind_latency", __doc__.split("\n")[0])
    parser.add_argument("url", help="base URL of one replica, e.g. http://127.0.0.1:3000")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per kind")
    args = parser.parse_args(argv)
    for cost in measure(args.url, args.requests):
        print(cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
