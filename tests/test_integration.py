"""The service as users run it: a real `bentoml serve` process (fixture `live_server`)."""

from __future__ import annotations

import json
import select
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import SEED_FLOWER

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


def test_metrics_count_classify_requests(live_server: str) -> None:
    request(f"{live_server}/iris/classify_iris", json.dumps(SEED_FLOWER).encode())
    _, _, body = request(f"{live_server}/metrics")
    lines = [
        line
        for line in body.decode().splitlines()
        if line.startswith("bentoml_service_request_total") and "/iris/classify_iris" in line
    ]
    assert lines, body.decode()[:2000]
    assert any(float(line.rsplit(" ", 1)[1]) >= 1 for line in lines)


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
    log = live_server_log.read_text()
    assert log.count("refused POST /iris/classify_iris") >= len(BAD_BODIES)
    assert "Traceback" not in log


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
