"""One system call per answer: a response's head and body leave in one write.

uvicorn's httptools protocol writes a response's status line and headers when the application
starts its answer, and its body when the application sends it, each with its own
`transport.write`; uvloop sends each at once, so every answer costs two `write` calls where
one would do (benchmarks/README.md measures both). Here the protocol's transport holds a
response head until the next write, which sends both together, or until the event loop's turn
ends, so a head whose body comes later (a stream) is never held longer than that turn.

The transport here is plain asyncio; putting it under uvicorn's protocol reaches into uvicorn,
and so lives in seam.py (`join_response_writes`).
"""

from __future__ import annotations

import asyncio
from typing import Any

RESPONSE_HEAD_START = b"HTTP/1.1 "


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
