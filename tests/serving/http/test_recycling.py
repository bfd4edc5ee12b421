"""Connection recycling (iris_classifier/serving/http/recycling.py) and the edge layer's use of it.

Real clients crossing many recycles against `bentoml serve`: tests/test_recycling_live.py.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from iris_classifier.serving.http import recycling
from iris_classifier.serving.http.edge import Draining
from iris_classifier.serving.http.recycling import ConnectionRecycler
from iris_classifier.serving.http.shutdown import Drain


def answers_until_closed(recycler: ConnectionRecycler, client: tuple[str, int]) -> int:
    for answer in range(1, 10_000):
        if recycler.answer_ends_connection(client):
            return answer
    raise AssertionError("the connection was never recycled")


def test_a_connection_ends_after_its_jittered_request_budget() -> None:
    recycler = ConnectionRecycler(max_requests=100, max_seconds=0, seed=7)
    lengths = [answers_until_closed(recycler, ("10.0.0.1", port)) for port in range(200)]
    assert all(80 <= length <= 120 for length in lengths)
    # Connections opened together do not all close together.
    assert len(set(lengths)) > 20


def test_the_next_connection_on_the_same_address_gets_a_new_budget() -> None:
    recycler = ConnectionRecycler(max_requests=10, max_seconds=0, seed=1)
    client = ("10.0.0.1", 40000)
    first = answers_until_closed(recycler, client)
    second = answers_until_closed(recycler, client)
    assert 8 <= first <= 12
    assert 8 <= second <= 12


def test_a_connection_ends_on_its_first_answer_after_its_age_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(recycling.time, "monotonic", lambda: now[0])
    recycler = ConnectionRecycler(max_requests=0, max_seconds=10, seed=3)
    client = ("10.0.0.1", 40000)
    assert not recycler.answer_ends_connection(client)
    now[0] += 7.9  # within 10 s - 20 %
    assert not recycler.answer_ends_connection(client)
    now[0] += 4.2  # past 10 s + 20 %
    assert recycler.answer_ends_connection(client)


def test_zero_turns_recycling_off() -> None:
    recycler = ConnectionRecycler(max_requests=0, max_seconds=0)
    assert not recycler.enabled
    assert not any(recycler.answer_ends_connection(("10.0.0.1", 1)) for _ in range(5000))


def test_the_tracked_connections_stay_bounded() -> None:
    recycler = ConnectionRecycler(max_requests=1000, max_seconds=0)
    for port in range(3 * recycling.MAX_TRACKED):
        recycler.answer_ends_connection(("10.0.0.1", port))
    assert len(recycler._budgets) == recycling.MAX_TRACKED


def edge_answers(layer: Draining, client: tuple[str, int] | None, count: int) -> list[bool]:
    """Whether each of `count` answers through the layer carried `Connection: close`."""

    async def application(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    layer.app = application
    closes: list[bool] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            closes.append((b"connection", b"close") in message["headers"])

    async def main() -> None:
        for _ in range(count):
            scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": client}
            await layer(scope, receive, send)

    asyncio.run(main())
    return closes


def test_the_edge_marks_the_answer_that_uses_up_the_budget() -> None:
    recycler = ConnectionRecycler(max_requests=10, max_seconds=0, seed=5)
    layer = Draining(None, drain=Drain(0), recycler=recycler)  # type: ignore[arg-type]
    closes = edge_answers(layer, ("10.0.0.1", 40000), 100)
    assert 8 <= closes.count(True) <= 12
    ends = [index for index, closed in enumerate(closes) if closed]
    assert all(8 <= later - earlier <= 12 for earlier, later in itertools.pairwise(ends))


def test_the_edge_without_a_peer_address_never_recycles() -> None:
    recycler = ConnectionRecycler(max_requests=1, max_seconds=0)
    layer = Draining(None, drain=Drain(0), recycler=recycler)  # type: ignore[arg-type]
    assert edge_answers(layer, None, 5) == [False] * 5


def test_an_answer_that_closes_its_connection_itself_gets_no_second_close() -> None:
    """Its connection ends with it: no `Connection: close` added, and its budget is forgotten."""
    recycler = ConnectionRecycler(max_requests=1000, max_seconds=0)
    layer = Draining(None, drain=Drain(0), recycler=recycler)  # type: ignore[arg-type]
    client, other = ("10.0.0.1", 40001), ("10.0.0.1", 40002)
    for answered_before in (client, other):
        recycler.answer_ends_connection(answered_before)
    heads: list[list[tuple[bytes, bytes]]] = []

    async def application(scope, receive, send) -> None:
        headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            heads.append(list(message["headers"]))

    layer.app = application
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": client}
    asyncio.run(layer(scope, None, send))  # type: ignore[arg-type]
    assert [name for name, _ in heads[0]].count(b"connection") == 1
    assert client not in recycler._budgets
    assert other in recycler._budgets
