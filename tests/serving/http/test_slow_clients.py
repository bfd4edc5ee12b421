"""The connection guard and the body clock (iris_classifier/serving/http/slow_clients.py) over a real
uvicorn, with each protocol implementation it may pick, in the test's own event loop and with
short bounds. Against `bentoml serve`, hundreds of clients at once: tests/test_slow_clients_live.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import uvloop

from iris_classifier.serving.http import slow_clients
from iris_classifier.serving.http.errors import send_body
from iris_classifier.serving.http.slow_clients import ClientLimits, ConnectionGuard, SlowClients
from tests.serving.telemetry.test_metrics import delta, snapshot
from tests.support.raw_http import (
    Connections,
    closed_within,
    read_answer,
    request,
    uvicorn_serving,
)

PROTOCOLS = ["h11", "httptools"]
HEAD_SECONDS = 0.5
MAX_CONNECTIONS = 3
GRACE_SECONDS = 0.4
# Time for a close or an answer to arrive beyond its bound, on a busy machine.
SLACK_SECONDS = 1.0


EARLY_HEADERS = [(b"content-length", b"2"), (b"connection", b"close")]


async def read_and_answer(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/early":  # answered before the body is read, as a 413 is
        await send({"type": "http.response.start", "status": 200, "headers": EARLY_HEADERS})
        await send({"type": "http.response.body", "body": b"ok", "more_body": True})
        while (await receive()).get("more_body", False):
            pass
        await send({"type": "http.response.body", "body": b""})
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send_body(send, 200, json.dumps({"read": size}).encode())


def guard_of(**limits) -> ConnectionGuard:
    settings = {"max_connections": 0, "head_seconds": 0.0, "body_min_rate": 0.0, **limits}
    return ConnectionGuard(ClientLimits(**settings), served_by="guarded-replica")


def served(http: str, test, guard: ConnectionGuard, loop: str = "asyncio") -> None:
    """Run `test(connect)` against a server guarded by `guard`, on asyncio's loop or uvloop
    (which `bentoml serve` runs)."""

    async def main() -> None:
        async with uvicorn_serving(SlowClients(read_and_answer, guard), http) as port:
            connections = Connections(port)
            try:
                await test(connections.open)
            finally:
                await connections.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as run:
        run.run(main())


def refusal_of(answer, status: int, *, before_a_request: bool = True) -> str:
    """The error of a refusal that closes its connection; made before a request existed, it
    names the replica itself (the edge layer marks the others)."""
    assert answer.status == status
    assert answer.headers["connection"] == "close"
    assert answer.headers["content-type"] == "application/json"
    if before_a_request:
        assert answer.headers["x-served-by"] == "guarded-replica"
    body = json.loads(answer.body)
    assert set(body) == {"error", "detail"}
    return body["error"]


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_trickled_head_is_answered_408_and_closed_in_the_head_time(http: str) -> None:
    async def test(connect) -> None:
        reader, writer = await connect()
        opened = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\n")
        answered = asyncio.create_task(read_answer(reader))
        while not answered.done() and time.monotonic() - opened < HEAD_SECONDS + SLACK_SECONDS:
            writer.write(b"X-Slow: yes\r\n")
            await asyncio.sleep(0.1)
        answer = await asyncio.wait_for(answered, SLACK_SECONDS)
        assert "request head" in refusal_of(answer, 408)
        assert await closed_within(reader, SLACK_SECONDS)
        assert time.monotonic() - opened < HEAD_SECONDS + SLACK_SECONDS

    before = snapshot()
    served(http, test, guard_of(head_seconds=HEAD_SECONDS))
    after = snapshot()
    assert delta(before, after, "iris_connections_dropped_total", reason="head_timeout") == 1
    assert delta(before, after, "iris_connections_dropped_total", reason="over_limit") == 0


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_connection_that_sends_nothing_is_closed_without_an_answer(http: str) -> None:
    async def test(connect) -> None:
        reader, _ = await connect()
        assert await asyncio.wait_for(reader.read(), HEAD_SECONDS + SLACK_SECONDS) == b""

    served(http, test, guard_of(head_seconds=HEAD_SECONDS))


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_kept_alive_connection_idles_freely_but_times_each_later_head(http: str) -> None:
    async def test(connect) -> None:
        reader, writer = await connect()
        first = request()
        writer.write(first[:10])
        await asyncio.sleep(HEAD_SECONDS / 3)
        writer.write(first[10:])
        assert (await read_answer(reader)).status == 200
        await asyncio.sleep(HEAD_SECONDS * 2)  # idle between requests: the keep-alive's time
        writer.write(request())
        assert (await read_answer(reader)).status == 200
        writer.write(b"GET / HTTP/1.1\r\n")  # the next head never ends
        answer = await asyncio.wait_for(read_answer(reader), HEAD_SECONDS + SLACK_SECONDS)
        refusal_of(answer, 408)

    served(http, test, guard_of(head_seconds=HEAD_SECONDS))


@pytest.mark.parametrize("http", PROTOCOLS)
def test_past_the_bound_a_connection_is_refused_503_and_those_open_keep_working(
    http: str,
) -> None:
    async def test(connect) -> None:
        held = [await connect() for _ in range(MAX_CONNECTIONS)]
        for reader, writer in held:
            writer.write(request())
            assert (await read_answer(reader)).status == 200
        assert delta(before, snapshot(), "iris_open_connections") == MAX_CONNECTIONS
        reader, writer = await connect()
        writer.write(request())
        answer = await asyncio.wait_for(read_answer(reader), SLACK_SECONDS)
        assert "connections" in refusal_of(answer, 503)
        # Refused connections are not open ones.
        assert delta(before, snapshot(), "iris_open_connections") == MAX_CONNECTIONS
        assert answer.headers["retry-after"] == "1"
        assert await closed_within(reader, slow_clients.REFUSAL_LINGER_SECONDS + SLACK_SECONDS)
        for reader, writer in held:
            writer.write(request())
            assert (await read_answer(reader)).status == 200
        held[0][1].close()
        await asyncio.sleep(0.1)
        reader, writer = await connect()
        writer.write(request())
        assert (await read_answer(reader)).status == 200

    guard = guard_of(max_connections=MAX_CONNECTIONS)
    before = snapshot()
    served(http, test, guard)
    assert guard.open == 0
    after = snapshot()
    assert delta(before, after, "iris_connections_dropped_total", reason="over_limit") == 1
    assert delta(before, after, "iris_open_connections") == 0


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("http", PROTOCOLS)
def test_an_upgraded_connection_still_leaves_the_count(http: str, loop: str) -> None:
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    guard = guard_of(max_connections=MAX_CONNECTIONS)
    counted: list[int] = []

    async def test(connect) -> None:
        reader, writer = await connect()
        writer.write(upgrade)
        assert await closed_within(reader, SLACK_SECONDS * 2)
        await asyncio.sleep(0.1)
        counted.append(guard.open)

    served(http, test, guard, loop)
    assert counted == [0]


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_body_below_the_minimum_rate_is_answered_408_and_closed(
    http: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slow_clients, "BODY_GRACE_SECONDS", GRACE_SECONDS)

    async def test(connect) -> None:
        reader, writer = await connect()
        writer.write(request("/", "POST", b"x" * 1000)[:-990])  # the head and 10 bytes
        started = time.monotonic()
        answered = asyncio.create_task(read_answer(reader))
        while not answered.done() and time.monotonic() - started < GRACE_SECONDS + SLACK_SECONDS:
            writer.write(b"x")
            await asyncio.sleep(0.05)
        answer = await asyncio.wait_for(answered, SLACK_SECONDS)
        assert "request body too slow" in refusal_of(answer, 408, before_a_request=False)
        assert await closed_within(reader, SLACK_SECONDS)
        # Fast bodies pass, however large.
        reader, writer = await connect()
        writer.write(request("/", "POST", b"x" * 500_000))
        answer = await read_answer(reader)
        assert (answer.status, json.loads(answer.body)) == (200, {"read": 500_000})

    served(http, test, guard_of(body_min_rate=1000))


def test_closed_and_refused_connections_are_counted_in_one_line_not_one_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(slow_clients, "REPORT_SECONDS", HEAD_SECONDS * 2)

    async def test(connect) -> None:
        opened = [await connect() for _ in range(MAX_CONNECTIONS + 2)]
        for _, writer in opened:
            writer.write(b"GET / HTTP/1.1\r\n")
        await asyncio.sleep(HEAD_SECONDS * 2 + SLACK_SECONDS)

    with caplog.at_level("WARNING", logger="iris_classifier.http"):
        served("h11", test, guard_of(head_seconds=HEAD_SECONDS, max_connections=MAX_CONNECTIONS))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1, lines
    assert f"{MAX_CONNECTIONS} connections closed without a whole request head" in lines[0]
    assert f"2 refused past {MAX_CONNECTIONS} open" in lines[0]


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_slow_body_after_the_answer_began_lets_the_answer_end_as_it_would_have(
    http: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(slow_clients, "BODY_GRACE_SECONDS", GRACE_SECONDS)

    async def test(connect) -> None:
        reader, writer = await connect()
        writer.write(request("/early", "POST", b"x" * 1000)[:-990])
        answer = await asyncio.wait_for(read_answer(reader), SLACK_SECONDS)
        assert (answer.status, answer.body) == (200, b"ok")
        started = time.monotonic()
        closed = asyncio.create_task(closed_within(reader, GRACE_SECONDS + SLACK_SECONDS * 2))
        while not closed.done() and time.monotonic() - started < GRACE_SECONDS + SLACK_SECONDS:
            writer.write(b"x")
            await asyncio.sleep(0.05)
        assert await closed

    with caplog.at_level("ERROR"):
        served(http, test, guard_of(body_min_rate=1000))
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []
