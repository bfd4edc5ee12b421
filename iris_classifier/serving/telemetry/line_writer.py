"""Log lines written in batches by a thread of their own, never by the request that logs them.

A request's access line used to cost a blocking write to stdout, a system call per request.
Here a record is formatted where it is logged (so it says what the request saw) and appended
to a buffer; a writer thread writes the buffer in one call `FLUSH_SECONDS` after its first
line, or at once when it holds `FULL_CHARS`. Lines keep their order and each stays one line.

What is buffered is written:
- at interpreter exit (the `logging` module flushes every handler then), an uncaught
  exception included;
- when the ASGI server shuts down (edge.py calls `write_through`): uvicorn ends its worker by
  raising its stop signal again with the default action, which skips exit handlers, so
  from then on every line is written as it is logged;
- when a record of level ERROR or above arrives, the writer wakes at once.
What is not: the lines of the last `FLUSH_SECONDS` of a process killed by SIGKILL (the
kubelet's, at the end of the grace period; the kernel's, out of memory).

A buffer that holds `MAX_BUFFERED_CHARS` (stdout blocked, the thread starved) is written by the
caller itself: memory stays bounded, and the caller waits, as it did for every line before.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TextIO

FLUSH_SECONDS = 0.2
# A pipe's buffer on Linux: one write that never blocks on an idle reader.
FULL_CHARS = 64 * 1024
MAX_BUFFERED_CHARS = 16 * FULL_CHARS


class LineWriter:
    """Lines to `stream`, written in batches from a daemon thread."""

    def __init__(self, stream: TextIO, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.stream = stream
        self.flush_seconds = flush_seconds
        self.through = False
        self._reset()
        # A forked child starts empty, with a writer thread of its own: the parent writes what
        # it had buffered, and a lock held by another thread at the fork would never be freed.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lines: list[str] = []
        self._chars = 0
        self._lock = threading.Lock()  # the buffer
        self._write_lock = threading.Lock()  # the stream: one batch at a time, in order
        self._pending = threading.Event()  # the buffer holds a line
        self._urgent = threading.Event()  # the buffer is full, or holds an error
        threading.Thread(target=self._run, name="log-line-writer", daemon=True).start()

    def write(self, line: str, *, urgent: bool = False) -> None:
        with self._lock:
            buffered = not self.through
            if buffered:
                self._lines.append(line)
                self._chars += len(line) + 1
                chars = self._chars
                if len(self._lines) == 1:
                    self._pending.set()
                if urgent or chars >= FULL_CHARS:
                    self._urgent.set()
        if not buffered:
            self._write([line])
        elif chars >= MAX_BUFFERED_CHARS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered now, in the caller's thread."""
        with self._write_lock:
            with self._lock:
                lines, self._lines, self._chars = self._lines, [], 0
                self._pending.clear()
                self._urgent.clear()
            if lines:
                self._write_unlocked(lines)

    def write_through(self) -> None:
        """Write what is buffered, then every later line as it comes (a process that ends)."""
        with self._lock:
            self.through = True
        self.flush()

    def _write(self, lines: list[str]) -> None:
        with self._write_lock:
            self._write_unlocked(lines)

    def _write_unlocked(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def _run(self) -> None:
        while True:
            self._pending.wait()
            self._urgent.wait(self.flush_seconds)
            try:
                self.flush()
            except Exception:  # a closed or broken stream: the next batch tries again
                self._pending.wait(self.flush_seconds)


class BatchedLineHandler(logging.Handler):
    """A logging handler that hands each formatted record to a `LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def handle(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        """As `Handler.handle`, without the handler's lock: the writer keeps its own, and the
        formatters keep nothing a lock must guard, so records need not wait for each other."""
        handled = self.filter(record)
        if handled:
            self.emit(record)
        return handled

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.writer.write(line, urgent=record.levelno >= logging.ERROR)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


def write_through(logger: logging.Logger | None = None) -> None:
    """Every batched handler of `logger` (the root's by default) writes what it holds, and then
    each line as it is logged."""
    for handler in (logger or logging.getLogger()).handlers:
        if isinstance(handler, BatchedLineHandler):
            handler.writer.write_through()
