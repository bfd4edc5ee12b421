"""Bearer tokens on a real `bentoml serve` with IRIS_TOKEN_FILE: plain HTTP, Triton's client
and KServe's client send a token and are served; every other request is refused with a 401,
and its access line holds no token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import serving, under_ci
from tests.support import kserve_client

try:
    import tritonclient.http as tritonclient_http
    from tritonclient.utils import InferenceServerException
except ImportError:
    # A dev dependency: skipped where it is missing, but under CI a missing one is a failure.
    if under_ci():
        raise
    pytest.skip("tritonclient is not installed (make install)", allow_module_level=True)

pytestmark = pytest.mark.integration

TOKEN = "live-token-" + uuid.uuid4().hex
ROTATED_IN = "next-token-" + uuid.uuid4().hex
NAME = "token-server"
CHALLENGE = 'Bearer realm="iris-classifier"'
MODEL = "iris_classifier"
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
V2_BODY = {
    "inputs": [
        {"name": "flowers", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}
PREDICTIONS = [
    ("/iris/classify_iris", FLOWER),
    ("/iris/classify_batch", {"flowers": [FLOWER, FLOWER]}),
    (f"/v2/models/{MODEL}/infer", V2_BODY),
]


@pytest.fixture(scope="module")
def token_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tokens = tmp_path_factory.mktemp("token-file") / "tokens"
    tokens.write_text(f"# two valid at once, as during a rotation\n{TOKEN}\n{ROTATED_IN}\n")
    with serving(tmp_path_factory, NAME, {"IRIS_TOKEN_FILE": str(tokens)}) as url:
        yield url


@pytest.fixture(scope="module")
def server_log(token_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / f"{NAME}0" / "serve.log"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("path", "body"), PREDICTIONS)
@pytest.mark.parametrize("token", [TOKEN, ROTATED_IN], ids=["first", "rotated-in"])
def test_a_right_token_is_served(token_server: str, path: str, body: Any, token: str) -> None:
    response = httpx.post(f"{token_server}{path}", json=body, headers=bearer(token), timeout=15)
    assert response.status_code == 200, response.text


REFUSED = {
    "missing": ({}, "", None),
    "wrong": (bearer(TOKEN[:-1] + ("0" if TOKEN[-1] != "0" else "1")), "", "invalid_token"),
    "another-length": (bearer(TOKEN + "a"), "", "invalid_token"),
    "in-the-query": ({}, f"?access_token={TOKEN}", "invalid_request"),
    "also-in-the-query": (bearer(TOKEN), f"?token={TOKEN}", "invalid_request"),
}


@pytest.mark.parametrize(("path", "body"), PREDICTIONS)
@pytest.mark.parametrize("case", REFUSED)
def test_any_other_request_is_refused_with_a_challenge(
    token_server: str, path: str, body: Any, case: str
) -> None:
    headers, query, challenge_error = REFUSED[case]
    response = httpx.post(f"{token_server}{path}{query}", json=body, headers=headers, timeout=15)
    assert response.status_code == 401, response.text
    expected = CHALLENGE + (f', error="{challenge_error}"' if challenge_error else "")
    assert response.headers["www-authenticate"] == expected
    assert set(response.json()) == {"error", "detail"}
    assert TOKEN not in response.text


@pytest.mark.parametrize(
    "path", ["/healthcheck", "/livez", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"]
)
def test_health_readiness_and_metrics_stay_open(token_server: str, path: str) -> None:
    assert httpx.get(f"{token_server}{path}", timeout=15).status_code == 200


def test_tritonclient_with_a_token_is_served_and_without_is_refused(token_server: str) -> None:
    client = tritonclient_http.InferenceServerClient(url=token_server.removeprefix("http://"))
    try:
        flowers = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
        tensor = tritonclient_http.InferInput("flowers", [1, 4], "FP32")
        tensor.set_data_from_numpy(flowers, binary_data=True)
        assert client.is_model_ready(MODEL, headers=bearer(TOKEN))
        answer = client.infer(MODEL, [tensor], headers=bearer(TOKEN))
        assert answer.as_numpy("label").tolist() == [b"setosa"]
        with pytest.raises(InferenceServerException, match=r"401|bearer token"):
            client.infer(MODEL, [tensor])
    finally:
        client.close()


def test_the_kserve_client_with_a_token_is_served(token_server: str) -> None:
    report = kserve_client.observe(token_server, TOKEN)
    assert report["model_ready"] == {"value": True}
    answers = kserve_client.single_flower_answers(token_server, TOKEN)
    assert kserve_client.problems(report, answers) == []


def test_the_kserve_client_without_a_token_is_refused(token_server: str) -> None:
    report = kserve_client.observe(token_server)
    assert report["server_live"] == {"value": True}
    assert report["infer"]["status"] == 401


def test_a_refused_requests_access_line_holds_no_token(token_server: str, server_log: Path) -> None:
    request_id = "refused-" + uuid.uuid4().hex[:12]
    response = httpx.post(
        f"{token_server}/iris/classify_iris?token={TOKEN}",
        json=FLOWER,
        headers={**bearer(TOKEN), "X-Request-ID": request_id},
        timeout=15,
    )
    assert response.status_code == 401

    def access_lines(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if request_id in line and ("status=" in line or '"status":' in line)
        ]

    # Other lines of the request (the refusal's warning) may be written before its access line.
    deadline = time.monotonic() + 10
    while not access_lines(text := server_log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = access_lines(text)
    assert any("status=401" in line or '"status":401' in line for line in lines), lines
    assert TOKEN not in text
    assert ROTATED_IN not in text
    assert lines, json.dumps(lines)
