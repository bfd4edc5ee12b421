"""Slow clients against a real `bentoml serve` (iris_classifier/serving/http/slow_clients.py): hundreds
of connections trickling a request head are closed in the head time while good requests are
answered, a slow body is answered 408, and past the connection bound a new connection is
refused 503 while those open keep working. The same bounds over uvicorn alone, with each of its
protocols: tests/serving/http/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from iris_classifier.serving.http.slow_clients import BODY_GRACE_SECONDS
from tests.conftest import SEED_FLOWER, serving
from tests.support.raw_http import Connections, closed_within, read_answer, request

pytestmark = pytest.mark.integration

HEAD_SECONDS = 2.0
MAX_CONNECTIONS = 320
SLOW_HEADS = 300
# A header line every second: each connection sends something well within any idle timeout.
TRICKLE_SECONDS = 1.0
# Time for a close or an answer to arrive beyond its bound, on a busy machine.
SLACK_SECONDS = 1.5
FLOWER = request("/iris/classify_iris", "POST", json.dumps(SEED_FLOWER).encode())


@pytest.fixture(scope="module")
def guarded_server(trained_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {
        "POD_NAME": "guarded-replica",
        "IRIS_HEAD_TIMEOUT_SECONDS": f"{HEAD_SECONDS:g}",
        "IRIS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        # The held connections of the bound's test live through it: no recycling.
        "IRIS_CONNECTION_MAX_REQUESTS": "0",
        "IRIS_CONNECTION_MAX_SECONDS": "0",
    }
    args = ("--timeout-keep-alive", "60")
    with serving(tmp_path_factory, "guarded-server", env, args) as url:
        yield urlsplit(url).port


def refusal_error(answer, status: int) -> str:
    assert answer.status == status, answer
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-served-by"] == "guarded-replica"
    body = json.loads(answer.body)
    assert set(body) == {"error", "detail"}
    return body["error"]


async def slow_head(connections: Connections) -> tuple[float, int | None]:
    """Trickle a head until the server closes: (seconds the connection lived, answer status)."""
    reader, writer = await connections.open()
    opened = time.monotonic()
    writer.write(b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answered = asyncio.create_task(read_answer(reader))
    line = 0
    while not answered.done() and time.monotonic() - opened < HEAD_SECONDS + SLACK_SECONDS * 3:
        await asyncio.wait([answered], timeout=TRICKLE_SECONDS)
        line += 1
        writer.write(b"X-Slow-%d: yes\r\n" % line)
    if not answered.done():
        answered.cancel()
        return time.monotonic() - opened, None
    answer = answered.result()
    refusal_error(answer, 408)
    await closed_within(reader, SLACK_SECONDS)
    return time.monotonic() - opened, answer.status


async def good_requests(connections: Connections, until: asyncio.Event) -> list[tuple[int, float]]:
    """One flower after another, each on a new connection: (status, seconds) of each."""
    answers = []
    while not until.is_set():
        started = time.monotonic()
        reader, writer = await connections.open()
        writer.write(FLOWER)
        answer = await asyncio.wait_for(read_answer(reader), 10)
        answers.append((answer.status, time.monotonic() - started))
        writer.close()
        await asyncio.sleep(0.05)
    return answers


def test_hundreds_of_trickled_heads_are_closed_in_the_head_time_while_good_requests_answer(
    guarded_server: int,
) -> None:
    async def main():
        connections = Connections(guarded_server)
        done = asyncio.Event()
        try:
            good = asyncio.create_task(good_requests(connections, done))
            slow = await asyncio.gather(*(slow_head(connections) for _ in range(SLOW_HEADS)))
            done.set()
            return slow, await good
        finally:
            await connections.close()

    slow, good = asyncio.run(main())
    lived = sorted(seconds for seconds, _ in slow)
    assert [status for _, status in slow] == [408] * SLOW_HEADS, (
        f"{sum(status is None for _, status in slow)} of {SLOW_HEADS} trickled heads still open"
    )
    assert lived[-1] <= HEAD_SECONDS + SLACK_SECONDS, f"the last closed after {lived[-1]:.1f} s"
    assert len(good) >= 10
    assert {status for status, _ in good} == {200}
    assert max(seconds for _, seconds in good) < 1.0


def test_a_body_below_the_minimum_rate_is_answered_408_and_closed(guarded_server: int) -> None:
    async def main():
        connections = Connections(guarded_server)
        try:
            reader, writer = await connections.open()
            writer.write(
                b"POST /iris/classify_iris HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: slow-body\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"sepal_length": '
            )
            started = time.monotonic()
            answered = asyncio.create_task(read_answer(reader))
            while not answered.done() and time.monotonic() - started < 15:
                await asyncio.wait([answered], timeout=0.5)
                writer.write(b" ")
            answer = await answered
            return answer, time.monotonic() - started, await closed_within(reader, SLACK_SECONDS)
        finally:
            await connections.close()

    answer, seconds, closed = asyncio.run(main())
    assert "request body too slow" in refusal_error(answer, 408)
    assert answer.headers["x-request-id"] == "slow-body"
    assert seconds <= BODY_GRACE_SECONDS + SLACK_SECONDS
    assert closed


def test_past_the_bound_a_connection_is_refused_503_and_those_open_keep_working(
    guarded_server: int,
) -> None:
    async def main():
        connections = Connections(guarded_server)
        try:
            held = [await connections.open() for _ in range(MAX_CONNECTIONS)]
            first = []
            for reader, writer in held:
                writer.write(FLOWER)
                first.append((await read_answer(reader)).status)
            reader, writer = await connections.open()
            writer.write(FLOWER)
            refused = await asyncio.wait_for(read_answer(reader), 5)
            again = []
            for reader, writer in held:
                writer.write(FLOWER)
                again.append((await read_answer(reader)).status)
            held[0][1].close()
            await asyncio.sleep(0.2)
            reader, writer = await connections.open()
            writer.write(FLOWER)
            freed = (await asyncio.wait_for(read_answer(reader), 5)).status
            return first, refused, again, freed
        finally:
            await connections.close()

    first, refused, again, freed = asyncio.run(main())
    assert first == [200] * MAX_CONNECTIONS
    assert "connections" in refusal_error(refused, 503)
    assert refused.headers["retry-after"] == "1"
    assert again == [200] * MAX_CONNECTIONS
    assert freed == 200
    # The refusal is on /metrics, for an alert; the scrape writes its worker's counts first.
    with urllib.request.urlopen(f"http://127.0.0.1:{guarded_server}/metrics", timeout=10) as page:
        exposition = page.read().decode()
    refused_total = re.search(
        r'^iris_connections_dropped_total\{reason="over_limit"\} ([0-9.e+]+)$', exposition, re.M
    )
    assert refused_total, exposition[-2000:]
    assert float(refused_total.group(1)) >= 1
    assert re.search(r"^iris_open_connections ", exposition, re.M), exposition[-2000:]
