"""Where the service reaches under BentoML into uvicorn, in this one place: for the connection
guard (slow_clients.py) and for a response's head and body in one write (joined_writes.py).

BentoML builds uvicorn's `Config` and `Server` itself and lets a service choose neither its HTTP
protocol class nor a hook around connections; an ASGI application sees a connection only once a
request head is whole. What is relied on, and checked by tests/serving/test_uvicorn_seam.py
against both protocol implementations uvicorn may pick (httptools when installed, else h11):

- `Server.startup` runs the application's lifespan startup before it opens its listeners with
  `loop.create_server(protocol_factory, ...)` on the same running loop, so a layer that sees the
  lifespan can wrap the protocol of every connection the server accepts;
- both protocols hold the request being read or answered in `cycle`: None before the first
  head, a new object as soon as a head is parsed, with `response_complete` set once its answer
  is sent;
- a protocol that upgrades a connection (a WebSocket) hands it over with the transport's
  `set_protocol`, asyncio's own API;
- BentoML leaves uvicorn's HTTP protocol to "auto", which uvicorn looks up in
  `config.HTTP_PROTOCOLS` when its server loads the configuration, after the worker has
  imported the service; the httptools protocol writes through the transport it is given in
  `connection_made` (tests/serving/test_joined_writes.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from iris_classifier.serving.joined_writes import HeadHoldingTransport

# uvicorn itself is imported only where the joined writes are installed and their protocol is
# loaded, both in a worker: `bentoml serve`'s arbiter imports the service, and so this module,
# but never serves, and would hold uvicorn and what it imports for nothing.

ProtocolWrapper = Callable[[asyncio.Protocol], asyncio.Protocol]


def wrap_listeners(loop: asyncio.AbstractEventLoop, wrap: ProtocolWrapper) -> None:
    """Every listener opened on `loop` from now on passes its connections' protocols to `wrap`."""
    create_server = loop.create_server

    async def create_wrapped_server(protocol_factory: Any, *args: Any, **kwargs: Any) -> Any:
        return await create_server(lambda: wrap(protocol_factory()), *args, **kwargs)

    loop.create_server = create_wrapped_server  # type: ignore[method-assign]


def tracks_requests(protocol: asyncio.Protocol) -> bool:
    """Whether `protocol` keeps its request where `current_request` looks."""
    return hasattr(protocol, "cycle")


def current_request(protocol: asyncio.Protocol) -> object | None:
    """The request `protocol` reads or answers; a new object once a head is whole."""
    return protocol.cycle  # type: ignore[attr-defined]


def answering(protocol: asyncio.Protocol) -> bool:
    """Whether a request is being read or answered, so the bytes that come are its body."""
    cycle = protocol.cycle  # type: ignore[attr-defined]
    return cycle is not None and not cycle.response_complete


JOINED_WRITES_PROTOCOL = "iris_classifier.serving.uvicorn_seam:JoinedWritesProtocol"


@functools.cache
def joined_writes_protocol() -> type[asyncio.Protocol]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class JoinedWritesProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, writing through a `HeadHoldingTransport`."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    return JoinedWritesProtocol


def __getattr__(name: str) -> Any:
    # uvicorn loads the protocol by its import string (JOINED_WRITES_PROTOCOL).
    if name == "JoinedWritesProtocol":
        return joined_writes_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def join_response_writes() -> None:
    """Make uvicorn's "auto" HTTP protocol `JoinedWritesProtocol` (pyproject.toml pins
    httptools), in the process that serves, before its server loads it."""
    from uvicorn import config

    config.HTTP_PROTOCOLS["auto"] = JOINED_WRITES_PROTOCOL
