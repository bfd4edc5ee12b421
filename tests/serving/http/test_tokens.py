"""Bearer tokens (iris_classifier/serving/http/tokens.py) as the route table asks for them.

A table with no model loaded is enough here: a request that passes the token check gets the
table's 503 (the model is not loaded yet), one that does not gets the 401. Served answers with a
token, through real clients, are in tests/serving/http/test_tokens_live.py.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from iris_classifier.serving.config import Settings
from iris_classifier.serving.http import tokens as tokens_module
from iris_classifier.serving.http.routes import RouteMiddleware, RouteTable
from iris_classifier.serving.http.shutdown import Drain
from iris_classifier.serving.http.tokens import BearerTokens, TokenFileError, read_token_digests

RIGHT = "first-token-0123456789abcdef"
OTHER = "second-token-fedcba9876543210"
CHALLENGE = 'Bearer realm="iris-classifier"'
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PROTECTED = [
    ("POST", "/iris/classify_iris"),
    ("POST", "/iris/classify_batch"),
    ("POST", "/v2/models/iris_classifier/infer"),
    ("GET", "/v2/models/iris_classifier"),
    ("GET", "/v2/models/iris_classifier/ready"),
    ("GET", "/v2/models/iris_classifier/versions/7/ready"),
]
OPEN = ["/healthcheck", "/v2/health/live", "/v2/health/ready", "/livez", "/readyz", "/metrics"]


async def behind_the_table(scope, receive, send) -> None:
    """What BentoML's app answers for the routes the table passes on (health, metrics)."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": f"{message['type']}.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"behind"})


def token_file(directory: Path, *lines: str) -> Path:
    path = directory / "tokens"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    path = token_file(tmp_path, "# rotated in on Monday", RIGHT, "", f"  {OTHER}  ")
    table = RouteTable(
        drain=Drain(seconds=0),
        version="test",
        max_body_bytes=1024,
        openapi=dict,
        tokens=BearerTokens(path),
    )
    with TestClient(RouteMiddleware(behind_the_table, table)) as test_client:
        yield test_client


def call(client: TestClient, method: str, path: str, **kwargs):
    return client.request(method, path, json=FLOWER if method == "POST" else None, **kwargs)


def assert_refused(response, challenge_error: str | None) -> None:
    assert response.status_code == 401
    expected = CHALLENGE + (f', error="{challenge_error}"' if challenge_error else "")
    assert response.headers["www-authenticate"] == expected
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str)
    assert body["detail"][0]["field"] == "authorization"
    assert RIGHT not in response.text
    assert OTHER not in response.text


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("token", [RIGHT, OTHER])
def test_every_configured_token_passes(client: TestClient, method: str, path: str, token: str):
    response = call(client, method, path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503, response.text  # past the check: no model loaded here


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_missing_token_is_refused(client: TestClient, method: str, path: str) -> None:
    assert_refused(call(client, method, path), None)


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "token",
    [RIGHT[:-1] + "X", RIGHT[:-1], RIGHT + "0", "x", RIGHT.upper()],
    ids=["one-char-off", "shorter", "longer", "one-char", "other-case"],
)
def test_a_wrong_token_is_refused(client: TestClient, method: str, path: str, token: str) -> None:
    response = call(client, method, path, headers={"Authorization": f"Bearer {token}"})
    assert_refused(response, "invalid_token")


@pytest.mark.parametrize("authorization", [f"Basic {RIGHT}", "Bearer", "Bearer   ", RIGHT])
def test_another_scheme_or_no_token_after_bearer_is_refused(
    client: TestClient, authorization: str
) -> None:
    response = call(client, "POST", "/iris/classify_iris", headers={"Authorization": authorization})
    assert_refused(response, "invalid_request")


@pytest.mark.parametrize("name", ["token", "access_token", "ACCESS_TOKEN"])
@pytest.mark.parametrize("with_header", [False, True])
def test_a_token_in_the_query_string_is_refused_even_a_right_one(
    client: TestClient, name: str, with_header: bool
) -> None:
    headers = {"Authorization": f"Bearer {RIGHT}"} if with_header else {}
    response = call(client, "POST", f"/iris/classify_iris?{name}={RIGHT}", headers=headers)
    assert_refused(response, "invalid_request")
    assert "query string" in response.json()["error"]


@pytest.mark.parametrize("path", OPEN)
def test_health_and_metrics_stay_open(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (200, 503), response.text  # /v2/health/ready: no model
    assert "www-authenticate" not in response.headers


def test_an_unknown_route_under_v2_models_asks_for_a_token_first(client: TestClient) -> None:
    assert_refused(client.get("/v2/models/another/thing"), None)


def test_the_table_without_tokens_asks_for_none() -> None:
    table = RouteTable(drain=Drain(seconds=0), version="t", max_body_bytes=1024, openapi=dict)
    with TestClient(RouteMiddleware(behind_the_table, table)) as open_client:
        assert call(open_client, "POST", "/iris/classify_iris").status_code == 503


@pytest.mark.parametrize("matching", [RIGHT, OTHER, "nobody"])
def test_every_configured_token_is_compared_with_compare_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, matching: str
) -> None:
    tokens = BearerTokens(token_file(tmp_path, RIGHT, OTHER, "third-token"))
    compared: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def recording_compare(left: bytes, right: bytes) -> bool:
        compared.append((left, right))
        return compare_digest(left, right)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", recording_compare)
    assert tokens.accepts(matching.encode()) is (matching != "nobody")
    # Each configured token once, also when the first one matched.
    assert [configured for _, configured in compared] == list(tokens.digests)


def test_the_file_is_read_again_when_it_changes_at_most_once_a_second(tmp_path: Path) -> None:
    now = [100.0]
    path = token_file(tmp_path, RIGHT)
    tokens = BearerTokens(path, clock=lambda: now[0])
    # As Kubernetes updates a mounted Secret: a new file put in place of the old one.
    (tmp_path / "new").mkdir()
    token_file(tmp_path / "new", OTHER).replace(path)
    now[0] += 0.5
    assert tokens.accepts(RIGHT.encode())
    assert not tokens.accepts(OTHER.encode())
    now[0] += 0.6
    assert tokens.accepts(OTHER.encode())
    assert not tokens.accepts(RIGHT.encode())


def test_a_reread_that_finds_no_token_keeps_the_tokens_held(tmp_path: Path) -> None:
    now = [100.0]
    path = token_file(tmp_path, RIGHT)
    tokens = BearerTokens(path, clock=lambda: now[0])
    path.write_text("# being rewritten\n")
    now[0] += 2
    assert tokens.accepts(RIGHT.encode())


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ((), "holds no token"),
        (("# only a comment", ""), "holds no token"),
        ((f"{RIGHT} {OTHER}",), "line 1: not a bearer token"),
    ],
)
def test_an_unusable_token_file_is_an_error_that_shows_no_token(
    tmp_path: Path, lines: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(TokenFileError, match=problem) as raised:
        read_token_digests(token_file(tmp_path, *lines))
    assert RIGHT not in str(raised.value)


def test_a_missing_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        BearerTokens(tmp_path / "absent")


def test_the_token_file_comes_from_iris_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("IRIS_TOKEN_FILE", raising=False)
    assert Settings.from_env().token_file is None
    monkeypatch.setenv("IRIS_TOKEN_FILE", str(tmp_path / "tokens"))
    assert Settings.from_env().token_file == tmp_path / "tokens"


def test_the_service_stops_at_start_on_an_unusable_token_file(
    service_class, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import service

    empty = token_file(tmp_path)
    monkeypatch.setattr(
        service, "settings", dataclasses.replace(service.settings, token_file=empty)
    )
    with pytest.raises(SystemExit, match=r"IRIS_TOKEN_FILE: .* holds no token"):
        service.bearer_tokens()
