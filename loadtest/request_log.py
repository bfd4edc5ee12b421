"""Every request of a run, with the replica that served it, and summaries over time windows.

Locust's own statistics aggregate away two things this load test is about: which replica
answered (the `X-Served-By` header) and when each request happened relative to a fault. The
log keeps one small record per request so both can be computed afterwards for any window.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

SERVED_BY_HEADER = "X-Served-By"
# Appended to the request name of users that keep their connection: their requests all go to
# the replica the connection reached, so they are left out of the balance judgement.
KEPT_ALIVE_MARK = " (kept alive)"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    started: float  # seconds since the epoch, as locust reports it
    response_time_ms: float
    name: str
    served_by: str  # "" when no replica answered (connection refused, reset, timeout)
    ok: bool
    error: str

    @property
    def finished(self) -> float:
        return self.started + self.response_time_ms / 1000


class RequestLog:
    """An append-only list of records, reset when a locust test starts."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)

    def reset(self) -> None:
        self._records = []

    @property
    def records(self) -> Sequence[RequestRecord]:
        return self._records


def write_csv(records: Iterable[RequestRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [field.name for field in fields(RequestRecord)]
    with path.open("w", newline="", encoding="utf-8") as output:
        writer = csv.writer(output)
        writer.writerow(columns)
        for record in records:
            writer.writerow(
                [
                    record.started,  # repr precision: read back exactly
                    record.response_time_ms,
                    record.name,
                    record.served_by,
                    int(record.ok),
                    record.error,
                ]
            )


def read_csv(path: Path) -> list[RequestRecord]:
    with path.open(newline="", encoding="utf-8") as source:
        return [
            RequestRecord(
                started=float(row["started"]),
                response_time_ms=float(row["response_time_ms"]),
                name=row["name"],
                served_by=row["served_by"],
                ok=row["ok"] == "1",
                error=row["error"],
            )
            for row in csv.DictReader(source)
        ]


def finished_between(
    records: Iterable[RequestRecord], start: float, end: float
) -> list[RequestRecord]:
    """The requests whose outcome was known in [start, end).

    Completion time, not start time, places a request in a phase: a request in flight when a
    replica is killed fails in the phase of the kill, not in the phase before.
    """
    return [record for record in records if start <= record.finished < end]


def fresh_connections(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    """The requests of users that open connections anew, which the balancer spreads."""
    return [record for record in records if not record.name.endswith(KEPT_ALIVE_MARK)]


def replica_tally(records: Iterable[RequestRecord]) -> Counter[str]:
    """Successful requests per replica, as named by the `X-Served-By` header."""
    return Counter(record.served_by for record in records if record.ok and record.served_by)


@dataclass(frozen=True)
class WindowSummary:
    requests: int
    failures: int
    per_replica: Counter[str]
    p95_ms: float
    p99_ms: float
    errors: Counter[str]


def summarize(records: Sequence[RequestRecord]) -> WindowSummary:
    times = np.array([record.response_time_ms for record in records], dtype=float)
    p95, p99 = np.percentile(times, [95, 99]) if len(times) else (np.nan,) * 2
    return WindowSummary(
        requests=len(records),
        failures=sum(not record.ok for record in records),
        per_replica=replica_tally(records),
        p95_ms=float(p95),
        p99_ms=float(p99),
        errors=Counter(record.error for record in records if not record.ok),
    )
