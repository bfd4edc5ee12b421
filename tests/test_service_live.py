"""The service as users run it: a real `bentoml serve` process (fixture `live_server`)."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import select
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from iris_classifier.serving.config import MAX_BATCH_ROWS
from tests.conftest import SEED_FLOWER, SEED_TENSOR_REQUEST
from tests.serving.model.test_prediction_log import PREDICTION_FIELDS

pytestmark = pytest.mark.integration


def request(url: str, body: bytes | None = None, content_type: str = "application/json"):
    """(status, headers, body) of one request, 4xx and 5xx included."""
    headers = {"Content-Type": content_type} if body is not None else {}
    req = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_seed_curl_gets_seed_answer(live_server: str) -> None:
    status, headers, body = request(
        f"{live_server}/iris/classify_iris", json.dumps(SEED_FLOWER).encode()
    )
    assert status == 200
    answer = json.loads(body)
    assert (answer["class"], answer["probability"]) == ("setosa", 0.99)
    assert headers["X-Served-By"] == "live-replica-1"


@pytest.mark.parametrize("path", ["/healthcheck", "/livez", "/readyz", "/metrics", "/docs.json"])
def test_operational_endpoints_answer_200_with_replica_header(live_server: str, path: str) -> None:
    status, headers, _ = request(f"{live_server}{path}")
    assert status == 200
    assert headers["X-Served-By"] == "live-replica-1"


def request_counts(url: str, endpoint: str = "/iris/classify_iris") -> dict[str, float]:
    """`bentoml_service_request_total` of `endpoint`, by response code."""
    from tests.support.live import metric_samples

    counts: dict[str, float] = {}
    for name, labels, value in metric_samples(url):
        if name == "bentoml_service_request_total" and labels.get("endpoint") == endpoint:
            code = labels["http_response_code"]
            counts[code] = counts.get(code, 0) + value
    return counts


def test_metrics_count_exactly_the_classify_requests_sent(live_server: str) -> None:
    """A delta on the shared server: earlier tests' requests are in both scrapes."""
    before = request_counts(live_server)
    flower = json.dumps(SEED_FLOWER).encode()
    for _ in range(3):
        assert request(f"{live_server}/iris/classify_iris", flower)[0] == 200
    assert request(f"{live_server}/iris/classify_iris", b"{")[0] == 400
    after = request_counts(live_server)
    delta = {code: after[code] - before.get(code, 0) for code in after}
    assert {code: count for code, count in delta.items() if count} == {"200": 3, "400": 1}


def test_a_timeout_of_the_real_service_carries_both_headers_and_is_counted(
    live_server: str,
) -> None:
    """The request timeout's 504, on a body still arriving when it ends, made inside BentoML's
    metrics: the edge layer sits in front of it, so the answer is still marked and counted."""
    from tests.support.live import timed_out_request

    before = request_counts(live_server)
    status, headers = timed_out_request(live_server, request_id="slow-1")
    assert status == 504
    assert headers["X-Served-By"] == "live-replica-1"
    assert headers["X-Request-ID"] == "slow-1"
    after = request_counts(live_server)
    assert after.get("504", 0) - before.get("504", 0) == 1


BAD_BODIES = [
    b'{"sepal_length": NaN, "sepal_width": 4, "petal_length": 2, "petal_width": 4}',
    b'{"sepal_length": "inf", "sepal_width": 4, "petal_length": 2, "petal_width": 4}',
    b'{"sepal_length": -2, "sepal_width": 4, "petal_length": 2, "petal_width": 4}',
    b'{"sepal_length": 2, "sepal_width": 4, "petal_length": 2}',
    b"{",
    b"",
    b"\xff\xfe\xfd",
]


def test_bad_inputs_are_refused_and_logged_without_traceback(
    live_server: str, live_server_log: Path
) -> None:
    for body in BAD_BODIES:
        status, headers, answer = request(f"{live_server}/iris/classify_iris", body)
        assert 400 <= status < 500, (body, status, answer)
        assert "error" in json.loads(answer)
        assert headers["X-Served-By"] == "live-replica-1"
    status, _, _ = request(f"{live_server}/readyz")
    assert status == 200
    status, _, answer = request(
        f"{live_server}/iris/classify_iris", json.dumps(SEED_FLOWER).encode()
    )
    assert (status, json.loads(answer)["class"]) == (200, "setosa")
    # Lines are written in batches: a fraction of a second after they are logged.
    poll(
        lambda: (
            live_server_log.read_text().count("refused POST /iris/classify_iris") >= len(BAD_BODIES)
        ),
        timeout=5,
        what="the refusals are logged",
    )
    assert "Traceback" not in live_server_log.read_text()


def test_chunked_oversized_body_is_refused_before_it_is_all_sent(live_server: str) -> None:
    """The 413 arrives while the client is still sending: the body was never read whole."""
    parts = urlsplit(live_server)
    chunk = b" " * 65536
    chunk_frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    max_chunks = 64  # 4 MiB, four times the limit
    sent_chunks = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(
            b"POST /iris/classify_iris HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer = b""
        while sent_chunks < max_chunks:
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable:
                break
            try:
                conn.sendall(chunk_frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent_chunks += 1
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in answer:
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent_chunks < max_chunks


def test_openapi_document_describes_every_route(live_server: str) -> None:
    _, _, body = request(f"{live_server}/docs.json")
    paths = json.loads(body)["paths"]
    assert {"/iris/classify_iris", "/iris/classify_batch", "/healthcheck", "/readyz"} <= set(paths)
    assert paths["/iris/classify_iris"]["post"]["requestBody"]["required"] is True


def serving_processes(url: str) -> tuple[int, list[int]]:
    """The arbiter of the `bentoml serve` listening at `url`, and its worker processes (its
    direct children, found through psutil: /proc/<pid>/task/<pid>/children needs a kernel
    option that not every kernel is built with)."""
    import psutil

    port = str(urlsplit(url).port)
    arbiter = None
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "serve" in argv and port in argv and "service:IrisClassifier" in argv:
            arbiter = proc
    assert arbiter is not None, f"no bentoml serve on port {port}"
    return arbiter.pid, [child.pid for child in arbiter.children()]


def maps(pid: int, library: str) -> bool:
    return f"/{library}/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("library", ["onnxruntime", "numpy", "httptools"])
def test_only_the_worker_holds_the_model_libraries(live_server: str, library: str) -> None:
    """The arbiter checks the model in a child process that exits: it never loads ONNX Runtime
    or NumPy, which only predicting needs, nor uvicorn and its HTTP parser, which only
    serving needs."""
    arbiter, workers = serving_processes(live_server)
    assert not maps(arbiter, library)
    assert workers
    assert all(maps(worker, library) for worker in workers)


def test_only_the_arbiter_holds_the_supervisors_messaging_library(live_server: str) -> None:
    """BentoML's supervisor watches the workers with circus over pyzmq from the arbiter; the
    worker puts its module off (seam.defer_supervisor_module) and never loads pyzmq."""
    arbiter, workers = serving_processes(live_server)
    assert maps(arbiter, "zmq")
    assert workers
    assert not any(maps(worker, "zmq") for worker in workers)


def test_bentoml_counts_tensor_requests_like_every_route(live_server: str) -> None:
    endpoint = "/v2/models/iris_classifier/infer"
    tensor = {
        "inputs": [{"name": "flowers", "datatype": "FP32", "shape": [1, 4], "data": [2, 4, 2, 4]}]
    }
    before = sum(request_counts(live_server, endpoint).values())
    for _ in range(3):
        status, headers, _ = request(f"{live_server}{endpoint}", json.dumps(tensor).encode())
        assert (status, headers["X-Served-By"]) == (200, "live-replica-1")
    assert sum(request_counts(live_server, endpoint).values()) - before == 3


def test_an_unknown_route_is_refused_in_the_one_shape(live_server: str) -> None:
    status, headers, body = request(f"{live_server}/no/such/route")
    assert (status, headers["Content-Type"], headers["X-Served-By"]) == (
        404,
        "application/json",
        "live-replica-1",
    )
    assert json.loads(body) == {
        "error": "no route '/no/such/route'",
        "detail": [{"field": "path", "reason": "no route '/no/such/route'", "type": "not_found"}],
    }


# --- a replica as the image runs it: JSON logs, and a drain on SIGTERM --------------------------

DRAIN_SECONDS = 3
FORGED_NAME = "x\nFAKE LOG LINE [ERROR] admin"
ACCEPTED_HOSTILE = [
    ("/iris/classify_batch", {"flowers": [SEED_FLOWER] * MAX_BATCH_ROWS}),
    (
        "/v2/models/iris_classifier/infer",
        {
            "id": FORGED_NAME,
            "parameters": {FORGED_NAME: FORGED_NAME},
            "inputs": [
                {**SEED_TENSOR_REQUEST["inputs"][0], "parameters": {FORGED_NAME: FORGED_NAME}}
            ],
        },
    ),
]


@contextlib.contextmanager
def json_serving(tmp_path_factory: pytest.TempPathFactory, name: str, **settings: str):
    """(url, arbiter process, log path) of a `bentoml serve` logging JSON and draining 3 s,
    with other `settings` (environment variables) if given."""
    from harness.processes import (
        bentoml_serve_command,
        on_free_port,
        start,
        stop_tree,
        wait_http_ok,
    )
    from tests.conftest import REPO_ROOT, SESSION_HOME

    log = tmp_path_factory.mktemp(name) / "serve.log"
    env = {
        "POD_NAME": "json-replica",
        "BENTOML_HOME": str(SESSION_HOME),
        "IRIS_LOG_FORMAT": "json",
        "IRIS_DRAIN_SECONDS": str(DRAIN_SECONDS),
        **settings,
    }

    @contextlib.contextmanager
    def draining_on(port: int):
        process = start(bentoml_serve_command(port), env=env, log_path=log, cwd=REPO_ROOT)
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", timeout=90, process=process)
            yield process
        finally:
            stop_tree(process.pid, grace=DRAIN_SECONDS + 15)
            process.wait(timeout=10)

    with on_free_port(draining_on) as (process, port):
        yield f"http://127.0.0.1:{port}", process, log


@pytest.fixture(scope="module")
def json_replica(trained_model: str, tmp_path_factory: pytest.TempPathFactory):
    # Every prediction logged: its lines face the hostile battery too.
    with json_serving(tmp_path_factory, "json-replica", IRIS_PREDICTION_LOG_RATE="1") as replica:
        yield replica


@pytest.fixture
def stopping_replica(trained_model: str, tmp_path_factory: pytest.TempPathFactory):
    """A replica of the SIGTERM test's own: stopping it leaves every other test's server up."""
    with json_serving(tmp_path_factory, "stopping-replica") as replica:
        yield replica


def poll(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.02)


def post(connection: http.client.HTTPConnection, path: str, body: bytes, **headers: str):
    connection.request("POST", path, body, {"Content-Type": "application/json", **headers})
    response = connection.getresponse()
    return response, response.read()


@contextlib.contextmanager
def connected(url: str) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
    try:
        yield connection
    finally:
        connection.close()


def test_refusals_of_hostile_bodies_are_small_and_their_log_lines_cannot_be_forged(
    json_replica,
) -> None:
    from iris_classifier.serving.telemetry.logs import MAX_LINE_CHARS

    url, _, log = json_replica
    many_unknown = dict(SEED_FLOWER, **{f"field{index}": 1 for index in range(60_000)})
    forged = {**SEED_FLOWER, FORGED_NAME: 1, "\x1b[31m" + "y" * 100_000: 2}
    hostile = [
        ("/iris/classify_iris", many_unknown),
        ("/iris/classify_iris", forged),
        ("/iris/classify_batch", {"flowers": [forged] * 3}),
    ]
    evil = {"X-Request-ID": "evil"}
    with connected(url) as connection:
        for path, body in hostile:
            raw = json.dumps(body).encode()
            response, answer = post(connection, path, raw, **evil)
            assert response.status == 400, answer[:300]
            # A few KB whatever was sent: five problems at most, names cut short.
            assert len(answer) < 4096, len(answer)
            assert len(json.loads(answer)["detail"]) <= 5
        # Accepted, so in the prediction log: the most flowers a batch may hold, and a tensor
        # request whose id and parameters (never logged) try the same forgery.
        for path, body in ACCEPTED_HOSTILE:
            response, answer = post(connection, path, json.dumps(body).encode(), **evil)
            assert response.status == 200, answer[:300]
    poll(
        lambda: log.read_text().count('"log":"prediction"') >= len(ACCEPTED_HOSTILE),
        timeout=5,
        what="the refusals and predictions are logged",
    )
    lines = log.read_text().splitlines()
    for line in lines:
        entry = json.loads(line)  # every line one JSON object: nothing forged a line of its own
        assert len(line) <= MAX_LINE_CHARS
        if entry.get("log") == "prediction":
            assert list(entry) == PREDICTION_FIELDS
        else:
            assert {"timestamp", "level", "logger", "message", "replica"} <= set(entry)
    refusals = [json.loads(line) for line in lines if "refused POST" in line]
    assert len(refusals) == len(hostile)
    assert {entry["request_id"] for entry in refusals} == {"evil"}
    predictions = [json.loads(line) for line in lines if '"log":"prediction"' in line]
    assert [(entry["request_id"], entry["rows"]) for entry in predictions] == [
        ("evil", MAX_BATCH_ROWS),
        ("evil", 1),
    ]
    assert not any(line.startswith("FAKE") for line in lines)


def test_sigterm_drains_kept_alive_and_new_clients_then_exits(stopping_replica) -> None:
    """The race a pooled client lost: a request on a kept-alive connection just after SIGTERM."""
    url, process, log = stopping_replica
    flower = json.dumps(SEED_FLOWER).encode()
    with connected(url) as kept:
        response, _ = post(kept, "/iris/classify_iris", flower)
        assert response.status == 200
        assert response.getheader("connection") is None, "kept alive before the stop"

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The arbiter passes the signal on to its worker, which logs that it drains.
        poll(
            lambda: "SIGTERM: draining" in log.read_text(),
            timeout=DRAIN_SECONDS,
            what="the worker logs the drain",
        )
        response, _ = post(kept, "/iris/classify_iris", flower)
        assert response.status == 200, "a request on a kept-alive connection must be answered"
        assert response.getheader("connection") == "close"
    for readiness in ("/readyz", "/v2/health/ready"):
        with connected(url) as fresh:
            fresh.request("GET", readiness)
            ready = fresh.getresponse()
            ready.read()
            assert ready.status == 503, readiness
            assert ready.getheader("x-served-by") == "json-replica"
    with connected(url) as fresh:
        response, answer = post(fresh, "/iris/classify_iris", flower)
        assert (response.status, json.loads(answer)["class"]) == (200, "setosa")

    exit_code = process.wait(timeout=DRAIN_SECONDS + 20)
    stopped_after = time.monotonic() - signalled
    assert stopped_after >= DRAIN_SECONDS, "new connections must be served for the whole drain"
    assert exit_code == 0, f"a drained replica exits cleanly, not by the signal: {exit_code}"
    messages = [json.loads(line)["message"] for line in log.read_text().splitlines()]
    assert any(message.startswith("SIGTERM: draining") for message in messages)


@pytest.mark.parametrize("mebibytes", [20, 200])
def test_http_client_reads_the_413_for_a_body_it_sends_whole(
    live_server: str, mebibytes: int
) -> None:
    """http.client writes all of the body before it reads: it gets the 413 only if the server
    reads and drops the rest of the body after answering (with flat memory) instead of
    closing the connection under it."""
    import psutil

    parts = urlsplit(live_server)
    server = [
        psutil.Process(conn.pid)
        for conn in psutil.net_connections("tcp")
        if conn.laddr.port == parts.port and conn.status == psutil.CONN_LISTEN and conn.pid
    ]
    assert server, "no process listens on the live server's port"
    before = sum(proc.memory_info().rss for proc in server)
    peak = before
    chunk = b" " * (1024 * 1024)

    def body():
        nonlocal peak
        for _ in range(mebibytes):
            peak = max(peak, sum(proc.memory_info().rss for proc in server))
            yield chunk

    with connected(live_server) as connection:
        connection.request(
            "POST",
            "/iris/classify_iris",
            body(),
            {"Content-Type": "application/json", "Content-Length": str(mebibytes * len(chunk))},
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
    assert response.status == 413
    assert "too large" in answer["error"]
    assert response.getheader("connection") == "close"
    assert peak - before < 32 * 1024 * 1024, f"server memory grew {(peak - before) >> 20} MiB"


def test_only_requests_that_are_not_http_are_answered_without_our_headers(live_server: str) -> None:
    """uvicorn answers a request it cannot parse before any application code runs: that 400 is
    the one response without X-Served-By and X-Request-ID (documented in the serving README)."""
    parts = urlsplit(live_server)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400"), answer[:200]
    assert b"x-served-by" not in head
    status, headers, _ = request(f"{live_server}/no-such-page")
    assert status == 404
    assert headers["X-Served-By"] == "live-replica-1"
    assert headers["X-Request-ID"]


@pytest.fixture(scope="module")
def two_stored_versions(trained_model: str, tmp_path_factory: pytest.TempPathFactory):
    """A model store holding the session's model and a second version of it, the latest."""
    from tests.conftest import SESSION_HOME
    from tests.support.model_store import copy_store

    home = tmp_path_factory.mktemp("two-versions")
    stable_dir = copy_store(SESSION_HOME, home)
    canary_version = "canary" + stable_dir.name[len("canary") :]
    canary_dir = stable_dir.with_name(canary_version)
    shutil.copytree(stable_dir, canary_dir)
    manifest = canary_dir / "model.yaml"
    manifest.write_text(
        manifest.read_text().replace(f"version: {stable_dir.name}", f"version: {canary_version}")
    )
    (stable_dir.parent / "latest").write_text(canary_version)
    return home / "models", stable_dir.name, canary_version


@contextlib.contextmanager
def replica_of(models: Path, version: str, home: Path) -> Iterator[str]:
    """A `bentoml serve` of the store `models` with IRIS_MODEL=`version`."""
    from harness.processes import REPO_ROOT, bentoml_serve_command, running_on_free_port

    home.mkdir(parents=True)
    (home / "models").symlink_to(models, target_is_directory=True)
    with running_on_free_port(
        bentoml_serve_command,
        env={"BENTOML_HOME": str(home), "IRIS_MODEL": version, "POD_NAME": version},
        log_path=home / "serve.log",
        cwd=REPO_ROOT,
        timeout=90,
    ) as (_, url):
        yield url


def test_a_canary_and_a_stable_replica_answer_with_their_own_model_versions(
    two_stored_versions: tuple[Path, str, str], tmp_path: Path
) -> None:
    """Two replicas of one store, each pinned to its version (the stable one is not the store's
    latest): every answer and each replica's /metrics name its own version, side by side."""
    from tests.support.live import metric_samples

    models, stable, canary = two_stored_versions
    with (
        replica_of(models, stable, tmp_path / "stable") as stable_url,
        replica_of(models, canary, tmp_path / "canary") as canary_url,
    ):
        for url, version in ((stable_url, stable), (canary_url, canary)):
            tag = f"iris_classifier:{version}"
            for _ in range(3):
                status, headers, body = request(
                    f"{url}/iris/classify_iris", json.dumps(SEED_FLOWER).encode()
                )
                assert status == 200
                assert headers["X-Served-By"] == version
                assert json.loads(body)["model_version"] == tag
            served = {
                labels["model_version"]
                for name, labels, value in metric_samples(url)
                if name == "iris_model_info" and value == 1
            }
            assert served == {tag}


# --- every answer logged, however the replica stops ------------------------------------------

LOAD_CLIENTS = 4


@dataclass
class IdentifiedLoad:
    """Clients that send flowers, each request with an id of its own, until told to stop; the
    ids of the requests answered are kept."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    answered: list[tuple[str, float]] = field(default_factory=list)  # (id, when)

    def client(self, name: str) -> None:
        flower = json.dumps(SEED_FLOWER).encode()
        with connected(self.url) as connection:
            for number in itertools.count():
                if self.stop.is_set():
                    return
                request_id = f"{name}-{number}"
                try:
                    response, _ = post(
                        connection, "/iris/classify_iris", flower, **{"X-Request-ID": request_id}
                    )
                except (OSError, http.client.HTTPException):
                    connection.close()  # refused or closed: the stop; the next try reconnects
                    time.sleep(0.01)
                    continue
                self.answered.append((request_id, time.monotonic()))
                assert response.status == 200


@pytest.fixture
def slow_flushing_replica(trained_model: str, tmp_path_factory: pytest.TempPathFactory):
    """A replica whose log lines wait up to a minute to be written: only what its stop writes
    out can put the last ones in the log."""
    with json_serving(
        tmp_path_factory,
        "slow-flushing-replica",
        IRIS_LOG_FLUSH_SECONDS="60",
        IRIS_PREDICTION_LOG_RATE="1",
    ) as replica:
        yield replica


def test_sigterm_under_load_leaves_an_access_and_a_prediction_line_for_every_answer(
    slow_flushing_replica,
) -> None:
    """SIGTERM to the arbiter, as Kubernetes sends it: the arbiter passes it to its worker,
    which drains, finishes what is in flight and ends by the signal; every request answered
    before, during and after the drain has its lines in the log."""
    url, process, log = slow_flushing_replica
    load = IdentifiedLoad(url)
    clients = [
        threading.Thread(target=load.client, args=(f"client{n}",)) for n in range(LOAD_CLIENTS)
    ]
    for client in clients:
        client.start()
    try:
        poll(lambda: len(load.answered) >= 200, timeout=30, what="200 answers before the stop")
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        exit_code = process.wait(timeout=DRAIN_SECONDS + 30)
    finally:
        load.stop.set()
        for client in clients:
            client.join(timeout=30)
    assert exit_code == 0
    answered = {request_id for request_id, _ in load.answered}
    assert sum(at > signalled + 1 for _, at in load.answered) > 0, "no answer during the drain"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    access = {
        entry["request_id"]
        for entry in entries
        if entry.get("logger") == "iris_classifier.access" and entry.get("status") == 200
    }
    predictions = {entry["request_id"] for entry in entries if entry.get("log") == "prediction"}
    assert not answered - access, f"{len(answered - access)} of {len(answered)} without a line"
    assert not answered - predictions, f"{len(answered - predictions)} without a prediction"
