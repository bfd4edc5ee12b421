"""Load test of the iris classifier's HTTP API, gated for CI.

Users post realistic flowers (single and batch), check every answer, and note which replica
served it (`X-Served-By`). Most open a fresh connection per request, so an L4 balancer spreads
them; `--kept-alive-users` of them keep one connection open as pooled clients do (a requests
Session, an HTTP client library, a sidecar), which is what a graceful stop must not break. When the run ends, gates on failures, p95/p99 latency and the spread
over replicas set the exit code, and a per-request CSV and a PNG chart are written next to the
HTML report.

    locust --config loadtest/locust.conf --host http://127.0.0.1:8080      # from the repo root
    LOCUST_RUN_TIME=5m LOCUST_USERS=20 make loadtest HOST=http://127.0.0.1:30080

Every setting below (and locust's own) can be set in locust.conf, on the command line, or with
its LOCUST_* environment variable; `python -m loadtest.locustfile --help` lists them (locust's
--help prints before it reads a locustfile, so it lists only locust's own).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant_throughput, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

from harness import cli
from iris_classifier.serving.config import MAX_BATCH_ROWS
from loadtest.answers import (
    ReferenceAnswers,
    batch_problem,
    classification_problem,
    load_fixed_answers,
)
from loadtest.background import (
    HOSTILE_NAME,
    LARGE_BATCH_NAME,
    MAX_REFUSAL_BYTES,
    good_requests,
    hostile_body,
    large_batch_body,
    large_batch_problem,
    user_role,
)
from loadtest.chart import write_chart
from loadtest.flower_sampler import FlowerSampler
from loadtest.gates import (
    GateResult,
    balance_gate,
    failure_ratio_gate,
    format_tally,
    latency_gate,
    pooled_balance_gate,
)
from loadtest.request_log import (
    KEPT_ALIVE_MARK,
    SERVED_BY_HEADER,
    RequestLog,
    RequestRecord,
    fresh_connections,
    replica_tally,
    summarize,
    write_csv,
)
from loadtest.settings import conf_float, conf_int

logger = logging.getLogger(__name__)

# One log per locust process; it is emptied when a test starts.
REQUEST_LOG = RequestLog()
# The reference flowers and their fixed answers; the tally of checks starts anew with each test.
REFERENCE = ReferenceAnswers(load_fixed_answers())
# Numbers users in the order they start; the first --kept-alive-users keep their connection,
# the next --hostile-users send refusals, the next --large-batch-users send the largest batches.
USER_NUMBERS = itertools.count()


@events.init_command_line_parser.add_listener
def add_settings(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("iris load test")
    group.add_argument(
        "--expected-replicas",
        type=int,
        default=conf_int("expected-replicas"),
        env_var="LOCUST_EXPECTED_REPLICAS",
        help="replicas that must all serve, evenly (balance gate); 0 skips the balance gate",
    )
    group.add_argument(
        "--requests-per-connection",
        type=int,
        default=conf_int("requests-per-connection"),
        env_var="LOCUST_REQUESTS_PER_CONNECTION",
        help="close the connection after this many requests (1: a fresh connection for every "
        "request, so an L4 balancer spreads requests; 0: keep-alive, each user stays on the "
        "replica its connection reached)",
    )
    group.add_argument(
        "--kept-alive-users",
        type=int,
        default=conf_int("kept-alive-users"),
        env_var="LOCUST_KEPT_ALIVE_USERS",
        help="this many users keep one connection for all their requests, as pooled clients "
        "do; --requests-per-connection applies to the others",
    )
    group.add_argument(
        "--hostile-users",
        type=int,
        default=0,
        env_var="LOCUST_HOSTILE_USERS",
        help="this many users send a 0.8 MB body of 60,000 unknown fields instead, which must "
        "be refused with a small 400; the latency gates judge the other requests only",
    )
    group.add_argument(
        "--large-batch-users",
        type=int,
        default=0,
        env_var="LOCUST_LARGE_BATCH_USERS",
        help=f"this many users send a valid batch of {MAX_BATCH_ROWS:,} flowers instead, about "
        "as many bytes as the hostile body, which must be answered in full: what reading a "
        "request of that size costs; the latency gates judge the other requests only",
    )
    group.add_argument(
        "--user-rps",
        type=float,
        default=conf_float("user-rps"),
        env_var="LOCUST_USER_RPS",
        help="requests per second each user aims at (the load is users x this)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=conf_int("batch-size"),
        env_var="LOCUST_BATCH_SIZE",
        help="flowers per /iris/classify_batch request",
    )
    group.add_argument(
        "--max-failure-ratio",
        type=float,
        default=conf_float("max-failure-ratio"),
        env_var="LOCUST_MAX_FAILURE_RATIO",
        help="gate: the failed share of requests must stay below this",
    )
    group.add_argument(
        "--p95-limit-ms",
        type=float,
        default=conf_float("p95-limit-ms"),
        env_var="LOCUST_P95_LIMIT_MS",
        help="gate: 95th percentile response time seen by the clients, through the balancer",
    )
    group.add_argument(
        "--p99-limit-ms",
        type=float,
        default=conf_float("p99-limit-ms"),
        env_var="LOCUST_P99_LIMIT_MS",
        help="gate: 99th percentile response time seen by the clients, through the balancer",
    )
    group.add_argument(
        "--replica-cpu-ms-per-request",
        type=float,
        default=conf_float("replica-cpu-ms-per-request"),
        env_var="LOCUST_REPLICA_CPU_MS_PER_REQUEST",
        help="gate of python -m loadtest.run, not of locust (which cannot see the replicas): "
        "their CPU time over the requests they answered",
    )
    group.add_argument(
        "--balance-alpha",
        type=float,
        default=conf_float("balance-alpha"),
        env_var="LOCUST_BALANCE_ALPHA",
        help="gate: chi-square significance level below which the spread is called uneven",
    )
    group.add_argument(
        "--balance-max-deviation",
        type=float,
        default=conf_float("balance-max-deviation"),
        env_var="LOCUST_BALANCE_MAX_DEVIATION",
        help="gate: with kept-alive users, the largest share of the mean by which any replica's "
        "requests (every user's) may differ from the mean; 0 skips this gate",
    )
    group.add_argument(
        "--skip-gates",
        action="store_true",
        default=False,
        env_var="LOCUST_SKIP_GATES",
        help="report only (fault scenarios judge their own phases)",
    )


def status_problem(response: Any) -> str | None:
    """Why the status is wrong; a connection that broke has status 0 and says why in .error."""
    if response.status_code == 0:
        return f"no HTTP answer: {response.error!r}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:120]}"
    return None


class IrisClient(FastHttpUser):
    """What both kinds of user share: their flowers, their pace, their connection policy."""

    abstract = True

    def on_start(self) -> None:
        self.sampler = FlowerSampler()
        self.requests_sent = 0
        options = self.environment.parsed_options
        role = user_role(
            next(USER_NUMBERS),
            kept_alive_users=options.kept_alive_users,
            hostile_users=options.hostile_users,
            large_batch_users=options.large_batch_users,
        )
        self.kept_alive = role == "kept-alive"
        # What a background user sends instead of its own task's requests.
        self.background = {"hostile": self.send_hostile, "large-batch": self.send_large_batch}.get(
            role
        )
        self.name_mark = KEPT_ALIVE_MARK if self.kept_alive else ""

    def wait_time(self) -> float:
        return constant_throughput(self.environment.parsed_options.user_rps)(self)

    def connection_headers(self) -> dict[str, str]:
        """`Connection: close` every N requests, so the next one opens a new connection."""
        if self.kept_alive:
            return {}
        self.requests_sent += 1
        every = self.environment.parsed_options.requests_per_connection
        return {"Connection": "close"} if every > 0 and self.requests_sent % every == 0 else {}

    def send_hostile(self) -> None:
        """What a careless or malicious client sends; the refusal must cost little."""
        self._send_background("/iris/classify_iris", HOSTILE_NAME, hostile_body(), refusal_problem)

    def send_large_batch(self) -> None:
        """A valid request as large as a hostile one: what reading that many bytes costs."""
        self._send_background(
            "/iris/classify_batch",
            LARGE_BATCH_NAME,
            large_batch_body(),
            lambda response: status_problem(response) or large_batch_problem(response.content),
        )

    def _send_background(
        self, path: str, name: str, body: bytes, problem_of: Callable[[Any], str | None]
    ) -> None:
        with self.client.post(
            path,
            name=name,
            data=body,
            headers={"Content-Type": "application/json", **self.connection_headers()},
            catch_response=True,
        ) as response:
            if problem := problem_of(response):
                response.failure(problem)
            else:
                response.success()


def refusal_problem(response: Any) -> str | None:
    if response.status_code == 400 and len(response.content) <= MAX_REFUSAL_BYTES:
        return None
    return (
        f"HTTP {response.status_code}, {len(response.content or b'')} bytes: "
        "expected a 400 of a few KB"
    )


class IrisUser(IrisClient):
    """A client that classifies one flower at a time: the article's use case."""

    weight = 4

    @task
    def classify_one(self) -> None:
        if self.background:
            self.background()
            return
        with self.client.post(
            "/iris/classify_iris",
            name=f"/iris/classify_iris{self.name_mark}",
            json=self.sampler.flower(),
            headers=self.connection_headers(),
            catch_response=True,
        ) as response:
            # The body is only read once the status says there is one.
            if problem := status_problem(response) or classification_problem(response.json()):
                response.failure(problem)


class BatchUser(IrisClient):
    """A client that scores a table of flowers per request."""

    weight = 1

    @task
    def classify_batch(self) -> None:
        if self.background:
            self.background()
            return
        rows = self.environment.parsed_options.batch_size
        with self.client.post(
            "/iris/classify_batch",
            name=f"/iris/classify_batch{self.name_mark}",
            json={"flowers": self.sampler.flowers(rows)},
            headers=self.connection_headers(),
            catch_response=True,
        ) as response:
            if problem := status_problem(response) or batch_problem(response.json(), rows):
                response.failure(problem)


class ReferenceUser(IrisClient):
    """Asks for the reference flowers' answers, one flower at a time and all in one batch, on a
    new connection every time so that every replica answers them in turn; each answer must
    be the fixed one (loadtest/reference_answers.json)."""

    fixed_count = 1

    def on_start(self) -> None:
        # Never a kept-alive or background user: it opens a new connection every time.
        self.requests_sent = 0

    @task
    def classify_reference(self) -> None:
        flowers = REFERENCE.flowers
        turn = self.requests_sent % (len(flowers) + 1)
        self.requests_sent += 1
        batch = turn == len(flowers)
        with self.client.post(
            "/iris/classify_batch" if batch else "/iris/classify_iris",
            json={"flowers": flowers} if batch else flowers[turn],
            headers={"Connection": "close"},
            catch_response=True,
        ) as response:
            if problem := status_problem(response):
                response.failure(problem)
                return
            served_by = response.headers.get(SERVED_BY_HEADER) or ""
            if batch:
                problem = REFERENCE.batch_problem(response.json(), served_by)
            else:
                problem = REFERENCE.single_problem(turn, response.json(), served_by)
            if problem:
                response.failure(problem)


@events.test_start.add_listener
def clear_request_log(**_: Any) -> None:
    global USER_NUMBERS
    REQUEST_LOG.reset()
    USER_NUMBERS = itertools.count()


@events.test_start.add_listener
def clear_reference_checks(**_: Any) -> None:
    REFERENCE.reset()


@events.request.add_listener
def record_request(
    name: str,
    response_time: float,
    response: Any,
    exception: BaseException | None,
    start_time: float = 0.0,
    **_: Any,
) -> None:
    headers = getattr(response, "headers", None)
    REQUEST_LOG.add(
        RequestRecord(
            started=start_time,
            response_time_ms=response_time,
            name=name,
            served_by=(headers.get(SERVED_BY_HEADER) or "") if headers else "",
            ok=exception is None,
            error="" if exception is None else f"{type(exception).__name__}: {exception}"[:200],
        )
    )


def evaluate_gates(environment: Environment) -> list[GateResult]:
    options = environment.parsed_options
    total = environment.stats.total
    good = summarize(good_requests(REQUEST_LOG.records))
    results = [
        failure_ratio_gate(total.num_failures, total.num_requests, options.max_failure_ratio),
        latency_gate("p95", good.p95_ms, options.p95_limit_ms),
        latency_gate("p99", good.p99_ms, options.p99_limit_ms),
    ]
    results.append(REFERENCE.gate(replica_tally(REQUEST_LOG.records)))
    if options.expected_replicas > 0:
        results.append(
            balance_gate(
                replica_tally(fresh_connections(REQUEST_LOG.records)),
                options.expected_replicas,
                options.balance_alpha,
            )
        )
        if options.kept_alive_users > 0 and options.balance_max_deviation > 0:
            results.append(
                pooled_balance_gate(
                    replica_tally(good_requests(REQUEST_LOG.records)),
                    options.expected_replicas,
                    options.balance_max_deviation,
                )
            )
    return results


@events.quitting.add_listener
def report_and_gate(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # used as a library, not from the locust command line
        return
    if options.html_file:
        report_dir = Path(options.html_file).parent
        write_csv(REQUEST_LOG.records, report_dir / "requests.csv")
        write_chart(REQUEST_LOG.records, report_dir / "replicas.png", title=f"{options.host}")
        logger.info("Per-request log and chart written to %s", report_dir)
    logger.info("Requests per replica: %s", format_tally(replica_tally(REQUEST_LOG.records)))
    if options.skip_gates:
        return
    results = evaluate_gates(environment)
    for result in results:
        logger.info("%s", result)
    passed = all(result.passed for result in results)
    logger.info("Load test gates %s", "passed" if passed else "FAILED")
    environment.process_exit_code = 0 if passed else 1


def help_parser() -> LocustArgumentParser:
    """The load test's own options, as `python -m loadtest.locustfile --help` lists them."""
    parser = cli.parser(
        "loadtest.locustfile",
        "The load test's own locust options; locust --help lists locust's.",
        LocustArgumentParser,
    )
    add_settings(parser)
    return parser


if __name__ == "__main__":
    # locust prints its --help before it reads a locustfile, so it never lists these options.
    options = help_parser()
    options.parse_args()
    options.print_help()
