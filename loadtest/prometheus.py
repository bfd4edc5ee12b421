"""A real Prometheus beside the load test: it scrapes every replica's `/metrics` each second,
and at the end says what it saw of the run, next to what locust saw.

Counts are compared per replica between two scrapes of that replica: Prometheus's counter
difference against locust's answers carrying that replica's `X-Served-By` that finished in
between. Both sides count the same requests; only answers that finish within milliseconds of a
scrape can land on different sides of it, hence the small tolerance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from harness.processes import on_free_port, start, stop_tree, wait_http_ok
from loadtest.gates import GateResult
from loadtest.request_log import RequestRecord

logger = logging.getLogger(__name__)

SCRAPE_INTERVAL_S = 1
JOB = "iris-classifier"
PREDICTIONS = 'endpoint=~"/iris/.+"'
# Per replica, the two counts may differ by this share of the replica's requests, or by
# REQUEST_TOLERANCE requests, whichever is larger.
SHARE_TOLERANCE = 0.01
REQUEST_TOLERANCE = 5


class PrometheusError(RuntimeError):
    """Prometheus could not be started or queried."""


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "prometheus is not installed (Debian: apt-get install prometheus), "
            "or run without it: --no-prometheus"
        )
    return binary


def render_config(targets: dict[str, int]) -> str:
    """Scrape config: one static target a replica, labelled with the replica's name."""
    static = [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"replica": name}}
        for name, port in sorted(targets.items())
    ]
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [{"job_name": JOB, "static_configs": static}],
    }
    # JSON is YAML, and needs no YAML writer here.
    return json.dumps(config, indent=2) + "\n"


@dataclass(frozen=True)
class Sample:
    timestamp: float
    value: float


class Prometheus:
    """Queries to a running Prometheus's HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str, at: float) -> list[dict]:
        parameters = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{parameters}", timeout=10) as r:
                answer = json.load(r)
        except OSError as exc:
            raise PrometheusError(f"query {expr!r} failed: {exc}") from exc
        if answer.get("status") != "success":
            raise PrometheusError(f"query {expr!r}: {answer.get('error')}")
        return answer["data"]["result"]

    def scalar(self, expr: str, at: float) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def wait_scraped(self, targets: int, *, timeout: float) -> None:
        """Wait until every target has been scraped once: Prometheus hands new targets to its
        scrapers only every few seconds after it starts."""
        deadline = time.monotonic() + timeout
        healthy = 0
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
                active = json.load(response)["data"]["activeTargets"]
            healthy = sum(target["health"] == "up" for target in active)
            if healthy == targets:
                return
            time.sleep(0.2)
        raise PrometheusError(f"{healthy} of {targets} targets scraped after {timeout:.0f}s")

    def request_totals(self, since: float, until: float) -> dict[str, list[Sample]]:
        """Each replica's prediction-request count at every scrape in [since, until]."""
        seconds = max(1, round(until - since))
        series = self.query(
            f'bentoml_service_request_total{{job="{JOB}",{PREDICTIONS}}}[{seconds}s]', until
        )
        totals: dict[str, Counter[float]] = {}
        for one in series:
            per_scrape = totals.setdefault(one["metric"]["replica"], Counter())
            for timestamp, value in one["values"]:
                per_scrape[float(timestamp)] += float(value)
        return {
            replica: [Sample(t, v) for t, v in sorted(per_scrape.items())]
            for replica, per_scrape in totals.items()
        }

    def rate_by_replica(self, since: float, until: float) -> dict[str, list[Sample]]:
        """Prediction requests per second of each replica, every second of the run."""
        parameters = urllib.parse.urlencode(
            {
                "query": f'sum by (replica) (rate(bentoml_service_request_total{{job="{JOB}",{PREDICTIONS}}}[5s]))',
                "start": f"{since:.3f}",
                "end": f"{until:.3f}",
                "step": "1",
            }
        )
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{parameters}", timeout=10) as r:
            result = json.load(r)["data"]["result"]
        return {
            one["metric"]["replica"]: [Sample(float(t), float(v)) for t, v in one["values"]]
            for one in result
        }


@contextlib.contextmanager
def running_prometheus(
    targets: dict[str, int], *, work_dir: Path, log_path: Path
) -> Iterator[Prometheus]:
    """Prometheus on a free 127.0.0.1 port, scraping `targets` ({replica: port}) each second."""
    binary = prometheus_binary()
    config = work_dir / "prometheus.yml"
    config.write_text(render_config(targets))

    def prometheus_on(port: int) -> contextlib.AbstractContextManager[Prometheus]:
        return _prometheus(binary, config, port, targets, work_dir=work_dir, log_path=log_path)

    with on_free_port(prometheus_on) as (prometheus, _):
        yield prometheus


@contextlib.contextmanager
def _prometheus(
    binary: str,
    config: Path,
    port: int,
    targets: dict[str, int],
    *,
    work_dir: Path,
    log_path: Path,
) -> Iterator[Prometheus]:
    process = start(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log_path=log_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/-/ready", timeout=30, process=process)
        prometheus = Prometheus(url)
        prometheus.wait_scraped(len(targets), timeout=30)
        logger.info(
            "Prometheus (pid %s) on %s scrapes %d replicas every %ss",
            process.pid,
            url,
            len(targets),
            SCRAPE_INTERVAL_S,
        )
        yield prometheus
    finally:
        stop_tree(process.pid, grace=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@dataclass(frozen=True)
class ReplicaCount:
    replica: str
    prometheus: float
    locust: int
    window_s: float

    @property
    def agrees(self) -> bool:
        allowed = max(REQUEST_TOLERANCE, SHARE_TOLERANCE * max(self.prometheus, self.locust))
        return abs(self.prometheus - self.locust) <= allowed


def compare_counts(
    totals: dict[str, list[Sample]], records: Sequence[RequestRecord]
) -> list[ReplicaCount]:
    """Per replica: requests between its first and last scrape, by Prometheus and by locust."""
    counts = []
    for replica, samples in sorted(totals.items()):
        first, last = samples[0], samples[-1]
        answered = sum(
            1
            for record in records
            if record.served_by == replica and first.timestamp < record.finished <= last.timestamp
        )
        counts.append(
            ReplicaCount(
                replica, last.value - first.value, answered, last.timestamp - first.timestamp
            )
        )
    return counts


@dataclass(frozen=True)
class RunView:
    counts: list[ReplicaCount]
    error_ratio: float | None
    p99_s: float | None
    out_of_range_ratio: float | None


def view_of_run(
    prometheus: Prometheus, since: float, until: float, records: Sequence[RequestRecord]
) -> RunView:
    # The last answers must have been scraped before the counts are read.
    time.sleep(2 * SCRAPE_INTERVAL_S + 0.5)
    window = f"{max(1, round(until - since))}s"
    # Counted from the first scrape after locust's first request: what reached the replicas
    # before it is not in locust's log.
    first_scrape_from = max(since, min((record.started for record in records), default=since))
    selector = f'job="{JOB}",{PREDICTIONS}'
    return RunView(
        counts=compare_counts(
            prometheus.request_totals(first_scrape_from, until + SCRAPE_INTERVAL_S), records
        ),
        error_ratio=prometheus.scalar(
            f'sum(increase(bentoml_service_request_total{{{selector},http_response_code=~"5.."}}[{window}]))'
            f" / sum(increase(bentoml_service_request_total{{{selector}}}[{window}]))",
            until,
        ),
        p99_s=prometheus.scalar(
            "histogram_quantile(0.99, sum by (le) "
            f"(increase(bentoml_service_request_duration_seconds_bucket{{{selector}}}[{window}])))",
            until,
        ),
        out_of_range_ratio=prometheus.scalar(
            f'sum(increase(iris_out_of_range_flowers_total{{job="{JOB}"}}[{window}]))'
            f' / sum(increase(iris_predictions_total{{job="{JOB}"}}[{window}]))',
            until,
        ),
    )


def locust_p99_ms(records: Sequence[RequestRecord]) -> float | None:
    times = sorted(record.response_time_ms for record in records if record.ok)
    return times[min(len(times) - 1, int(0.99 * len(times)))] if times else None


def format_view(view: RunView, records: Sequence[RequestRecord]) -> str:
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

    failed = sum(not record.ok for record in records)
    locust_p99 = locust_p99_ms(records)
    lines = [
        f"{'':<28}{'Prometheus':>14}{'locust':>14}",
        *(
            f"{'requests, ' + count.replica:<28}{count.prometheus:>14.0f}{count.locust:>14d}"
            f"   ({count.window_s:.0f} s between scrapes{'' if count.agrees else ', DISAGREE'})"
            for count in view.counts
        ),
        f"{'error ratio':<28}{percent(view.error_ratio):>14}"
        f"{percent(failed / len(records) if records else None):>14}",
        f"{'p99 latency':<28}"
        f"{'n/a' if view.p99_s is None else f'{1000 * view.p99_s:.1f} ms':>14}"
        f"{'n/a' if locust_p99 is None else f'{locust_p99:.1f} ms':>14}",
        f"{'out-of-range flowers':<28}{percent(view.out_of_range_ratio):>14}{'':>14}",
        "Prometheus's latency is the replica's (bucketed), locust's the client's through the "
        "balancer; its errors are 5xx answers, locust's every failed request.",
    ]
    return "\n".join(lines)


def agreement_gate(view: RunView, expected_replicas: int) -> GateResult:
    disagree = [count.replica for count in view.counts if not count.agrees]
    passed = len(view.counts) == expected_replicas and not disagree
    detail = ", ".join(f"{c.replica} {c.prometheus:.0f}/{c.locust}" for c in view.counts)
    return GateResult(
        f"Prometheus and X-Served-By agree per replica (within {SHARE_TOLERANCE:.0%} or "
        f"{REQUEST_TOLERANCE} requests)",
        passed,
        detail + (f"; disagree: {', '.join(disagree)}" if disagree else ""),
    )


def write_view_chart(
    prometheus: Prometheus, view: RunView, since: float, until: float, path: Path
) -> None:
    rates = prometheus.rate_by_replica(since, until)
    figure, (rate_axes, count_axes) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[3, 2])
    styles = ("-", "--", ":", "-.")
    for index, (replica, samples) in enumerate(sorted(rates.items())):
        rate_axes.plot(
            [s.timestamp - since for s in samples],
            [s.value for s in samples],
            styles[index % len(styles)],
            label=replica,
        )
    rate_axes.set_xlabel("seconds into the run")
    rate_axes.set_ylabel("prediction requests/s (Prometheus, 5 s rate)")
    rate_axes.legend(loc="lower right")
    rate_axes.grid(alpha=0.3)
    names = [count.replica for count in view.counts]
    positions = range(len(names))
    count_axes.bar(
        [p - 0.2 for p in positions], [c.prometheus for c in view.counts], 0.4, label="Prometheus"
    )
    count_axes.bar(
        [p + 0.2 for p in positions],
        [c.locust for c in view.counts],
        0.4,
        label="locust (X-Served-By)",
    )
    count_axes.set_xticks(list(positions), names)
    count_axes.set_ylabel("requests between first and last scrape")
    count_axes.legend(loc="lower right")
    extra = []
    if view.p99_s is not None:
        extra.append(f"p99 {1000 * view.p99_s:.1f} ms")
    if view.error_ratio is not None:
        extra.append(f"5xx {100 * view.error_ratio:.2f} %")
    if view.out_of_range_ratio is not None:
        extra.append(f"out of range {100 * view.out_of_range_ratio:.1f} %")
    figure.suptitle(
        "What Prometheus saw of the steady run" + (f" ({', '.join(extra)})" if extra else "")
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
