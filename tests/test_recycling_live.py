"""Pooled clients through connection recycling, against a real `bentoml serve`.

The server ends each connection after about 50 answers (iris_classifier/serving/http/recycling.py),
so 2,000 calls cross about 40 recycles. Each client keeps its default pool and no retry: a
request sent on a connection the server was closing would fail here. The client's own
connections to the server are sampled as the calls go, to show that recycling happened.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import psutil
import pytest
import requests

from tests.conftest import SEED_FLOWER, SEED_TENSOR_REQUEST, serving, under_ci

try:
    import tritonclient.http as tritonclient_http
except ImportError:  # a dev dependency: required under CI
    if under_ci():
        raise
    tritonclient_http = None

pytestmark = pytest.mark.integration

CALLS = 2_000
MAX_REQUESTS = 50
# Connections last 40 to 60 answers (+-20 %); a sample every few calls sees every one of them.
SAMPLE_EVERY = 5
MIN_CONNECTIONS = CALLS // round(MAX_REQUESTS * 1.2) - 2


@pytest.fixture(scope="module")
def recycling_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "POD_NAME": "recycling-replica",
        "IRIS_CONNECTION_MAX_REQUESTS": str(MAX_REQUESTS),
        "IRIS_CONNECTION_MAX_SECONDS": "0",
    }
    with serving(tmp_path_factory, "recycling-server", env) as url:
        yield url


def connections_used(url: str, calls: int, call: Callable[[], None]) -> set[int]:
    """Run `call` `calls` times; the local ports of this process's connections to `url`."""
    server_port = int(url.rsplit(":", 1)[1])
    me = psutil.Process()
    ports: set[int] = set()
    for number in range(calls):
        call()  # raises on any failed request
        if number % SAMPLE_EVERY == 0:
            ports.update(
                connection.laddr.port
                for connection in me.net_connections(kind="tcp")
                if connection.raddr
                and connection.raddr.port == server_port
                and connection.status == psutil.CONN_ESTABLISHED
            )
    return ports


def assert_recycled(ports: set[int]) -> None:
    assert len(ports) >= MIN_CONNECTIONS, (
        f"{CALLS} calls used {len(ports)} connections: recycling did not happen"
    )


def test_a_requests_session_never_sees_a_recycle(recycling_server: str) -> None:
    url = f"{recycling_server}/iris/classify_iris"
    with requests.Session() as session:  # its adapter's default: no retry

        def call() -> None:
            session.post(url, json=SEED_FLOWER, timeout=10).raise_for_status()

        assert_recycled(connections_used(recycling_server, CALLS, call))


def test_an_httpx_client_never_sees_a_recycle(recycling_server: str) -> None:
    url = f"{recycling_server}/iris/classify_iris"
    with httpx.Client(timeout=10) as client:  # httpx retries nothing by default

        def call() -> None:
            client.post(url, json=SEED_FLOWER).raise_for_status()

        assert_recycled(connections_used(recycling_server, CALLS, call))


def test_a_triton_client_never_sees_a_recycle(recycling_server: str) -> None:
    if tritonclient_http is None:
        pytest.skip("tritonclient is not installed (make install)")
    tensor_request = SEED_TENSOR_REQUEST["inputs"][0]
    flowers = np.array(tensor_request["data"], dtype=np.float32).reshape(tensor_request["shape"])
    client = tritonclient_http.InferenceServerClient(url=recycling_server.removeprefix("http://"))
    try:

        def call() -> None:
            tensor = tritonclient_http.InferInput("flowers", list(flowers.shape), "FP32")
            tensor.set_data_from_numpy(flowers, binary_data=False)
            result = client.infer("iris_classifier", [tensor])
            assert json.dumps(result.get_response())  # an answer, not an error

        assert_recycled(connections_used(recycling_server, CALLS, call))
    finally:
        client.close()
