"""One system call per answer: a response's head and body leave in one write.

uvicorn's httptools protocol writes a response's status line and headers when the application
starts its answer, and its body when the application sends it, each with its own
`transport.write`; uvloop sends each at once, so every answer costs two `write` calls where
one would do (benchmarks/README.md measures both). Here the protocol's transport holds a
response head until the next write, which sends both together, or until the event loop's turn
ends, so a head whose body comes later (a stream) is never held longer than that turn.

BentoML builds uvicorn's configuration itself and leaves the protocol to "auto"; `install()`
is the one place that points "auto" at the protocol below, in whatever process imports the
service, before its server loads the configuration.
tests/serving/test_joined_writes.py fails by name when uvicorn moves what this relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn import config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

RESPONSE_HEAD_START = b"HTTP/1.1 "
PROTOCOL = "iris_classifier.serving.joined_writes:JoinedWritesProtocol"


class HeadHoldingTransport:
    """A transport that sends a response head together with the write after it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held = b""

    def write(self, data: bytes) -> None:
        if self.held:
            data, self.held = self.held + data, b""
            self.transport.write(data)
        elif data.startswith(RESPONSE_HEAD_START):
            self.held = data
            self.loop.call_soon(self.flush)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, b""
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    # Called on every request: spelt out rather than left to __getattr__.
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a `HeadHoldingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]


def install() -> None:
    """Make uvicorn's "auto" HTTP protocol this module's (pyproject.toml pins httptools)."""
    config.HTTP_PROTOCOLS["auto"] = PROTOCOL
