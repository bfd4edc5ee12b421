"""A response's head and body in one write (iris_classifier/serving/http/joined_writes.py), and the
uvicorn hooks it relies on: these tests fail by name when uvicorn moves them."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn import config

from iris_classifier.serving import seam
from iris_classifier.serving.http.joined_writes import HeadHoldingTransport
from iris_classifier.serving.seam import JoinedWritesProtocol
from tests.support.python_report import python_report

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1234) if name == "peername" else default


def through_holding_transport(steps) -> RecordingTransport:
    recorded = RecordingTransport()

    async def main() -> None:
        transport = HeadHoldingTransport(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
        await steps(transport)

    asyncio.run(main())
    return recorded


def test_a_head_leaves_with_the_body_in_one_write() -> None:
    async def answer(transport: HeadHoldingTransport) -> None:
        transport.write(HEAD)
        transport.write(b"{}")
        await asyncio.sleep(0)
        transport.write(HEAD)
        transport.write(b"[]")

    assert through_holding_transport(answer).writes == [HEAD + b"{}", HEAD + b"[]"]


def test_a_head_whose_body_comes_later_leaves_when_the_loops_turn_ends() -> None:
    async def stream(transport: HeadHoldingTransport) -> None:
        transport.write(HEAD)
        await asyncio.sleep(0.01)
        transport.write(b"chunk")

    assert through_holding_transport(stream).writes == [HEAD, b"chunk"]


def test_closing_sends_a_held_head_first() -> None:
    async def refuse(transport: HeadHoldingTransport) -> None:
        transport.write(HEAD)
        transport.close()
        await asyncio.sleep(0)

    recorded = through_holding_transport(refuse)
    assert (recorded.writes, recorded.closed) == ([HEAD], True)


def test_what_is_not_a_head_is_written_at_once_and_the_rest_is_the_transports() -> None:
    async def body_only(transport: HeadHoldingTransport) -> None:
        transport.write(b"5\r\nhello\r\n")
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
        assert not transport.is_closing()

    assert through_holding_transport(body_only).writes == [b"5\r\nhello\r\n"]


def test_install_makes_uvicorns_auto_protocol_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """BentoML leaves uvicorn's protocol to "auto": what it loads after `install()`."""
    monkeypatch.setitem(config.HTTP_PROTOCOLS, "auto", config.HTTP_PROTOCOLS["auto"])
    seam.join_response_writes()

    async def app(scope, receive, send) -> None:
        pass

    loaded = uvicorn.Config(app, log_config=None)  # BentoML passes no `http`
    loaded.load()
    assert loaded.http_protocol_class is JoinedWritesProtocol


@pytest.fixture
def joined_server() -> Iterator[tuple[int, list[int]]]:
    """uvicorn with the joined-writes protocol on a free port, counting its socket writes."""
    writes: list[int] = []
    original_init = HeadHoldingTransport.__init__

    class Counting:
        def __init__(self, transport: asyncio.Transport) -> None:
            self.transport = transport

        def write(self, data: bytes) -> None:
            writes.append(len(data))
            self.transport.write(data)

        def __getattr__(self, name: str):
            return getattr(self.transport, name)

    def counted_init(self, transport, loop) -> None:
        original_init(self, Counting(transport), loop)

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=JoinedWritesProtocol,
            lifespan="off",
            log_config=None,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HeadHoldingTransport, "__init__", counted_init)
        thread.start()
        while not server.started:
            thread.join(0.05)
        try:
            yield port, writes
        finally:
            server.should_exit = True
            thread.join(10)


def test_a_real_server_answers_every_request_of_a_connection_in_one_write_each(
    joined_server: tuple[int, list[int]],
) -> None:
    port, writes = joined_server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    bodies = []
    for _ in range(3):
        connection.request("POST", "/", body=b"{}")
        response = connection.getresponse()
        bodies.append(response.read())
    connection.close()
    assert bodies == [b"ok"] * 3
    assert len(writes) == 3
    assert all(size > len(b"ok") + len(b"HTTP/1.1 200 OK\r\n") for size in writes)


def service_imported_as(worker_index: int | None) -> dict[str, object]:
    """What importing service.py leaves in a fresh process that `bentoml serve` would run as
    its arbiter (no worker index) or as a worker."""
    code = (
        "import json, sys, bentoml\n"
        f"bentoml.server_context.worker_index = {worker_index!r}\n"
        "import service\n"
        "imported = 'uvicorn' in sys.modules\n"
        "from uvicorn import config\n"
        "print(json.dumps({'uvicorn': imported, 'auto': config.HTTP_PROTOCOLS['auto']}))\n"
    )
    return python_report(code)


def test_a_worker_installs_it_as_it_imports_the_service(trained_model: str) -> None:
    """`bentoml serve`'s worker imports service.py before its uvicorn loads the protocol."""
    assert service_imported_as(1)["auto"] == seam.JOINED_WRITES_PROTOCOL


def test_the_arbiter_imports_the_service_without_uvicorn(trained_model: str) -> None:
    """The arbiter imports service.py too but never serves: uvicorn stays out of its memory."""
    assert service_imported_as(None)["uvicorn"] is False
