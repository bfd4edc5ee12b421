"""Batched log lines (iris_classifier/serving/telemetry/line_writer.py): few writes, none lost on the way out."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from iris_classifier.serving.telemetry.line_writer import (
    FULL_CHARS,
    BatchedLineHandler,
    LineWriter,
    write_through,
)
from tests.conftest import REPO_ROOT


class RecordedStream:
    """A stream that keeps each write apart, as the system calls a real stdout would make."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.written = threading.Condition()

    def write(self, text: str) -> int:
        with self.written:
            self.writes.append(text)
            self.written.notify_all()
        return len(text)

    def flush(self) -> None:
        pass

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()

    def wait_for(self, count: int, timeout: float) -> list[str]:
        with self.written:
            self.written.wait_for(lambda: len(self.lines()) >= count, timeout=timeout)
        return self.lines()


def test_lines_wait_for_the_timer_and_leave_in_one_write_in_order() -> None:
    stream = RecordedStream()
    writer = LineWriter(stream, flush_seconds=0.3)  # type: ignore[arg-type]
    for number in range(100):
        writer.write(f"line {number}")
    assert stream.writes == [], "nothing is written by the caller"
    assert stream.wait_for(100, timeout=5) == [f"line {number}" for number in range(100)]
    assert len(stream.writes) == 1


def test_a_full_buffer_is_written_without_waiting_for_the_timer() -> None:
    stream = RecordedStream()
    writer = LineWriter(stream, flush_seconds=60)  # type: ignore[arg-type]
    lines = FULL_CHARS // 100 + 1
    for _ in range(lines):
        writer.write("x" * 99)
    assert len(stream.wait_for(lines, timeout=5)) == lines


def test_an_error_is_written_without_waiting_for_the_timer() -> None:
    stream = RecordedStream()
    writer = LineWriter(stream, flush_seconds=60)  # type: ignore[arg-type]
    handler = BatchedLineHandler(writer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.line_writer.error")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("before")
        logger.error("failed")
        assert stream.wait_for(2, timeout=5) == ["WARNING before", "ERROR failed"]
    finally:
        logger.removeHandler(handler)


def test_write_through_writes_what_is_held_and_then_every_line_at_once() -> None:
    stream = RecordedStream()
    writer = LineWriter(stream, flush_seconds=60)  # type: ignore[arg-type]
    logger = logging.getLogger("tests.line_writer.through")
    logger.addHandler(BatchedLineHandler(writer))
    try:
        writer.write("held")
        write_through(logger)
        assert stream.lines() == ["held"]
        writer.write("after")
        assert stream.lines() == ["held", "after"]
    finally:
        logger.handlers.clear()


def test_a_line_written_from_many_threads_stays_whole() -> None:
    stream = RecordedStream()
    writer = LineWriter(stream, flush_seconds=0.01)  # type: ignore[arg-type]

    def write_many(name: str) -> None:
        for number in range(500):
            writer.write(f"{name}-{number}-" + "y" * 200)

    threads = [threading.Thread(target=write_many, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.flush()
    lines = stream.lines()
    assert len(lines) == 2000
    assert all(line.endswith("y" * 200) for line in lines)
    assert all(line.count("-") == 2 for line in lines)
    for name in ("t0", "t1", "t2", "t3"):
        own = [int(line.split("-")[1]) for line in lines if line.startswith(f"{name}-")]
        assert own == list(range(500)), "each thread's lines in the order it wrote them"


EXITING = """
import logging, sys
from iris_classifier.serving.telemetry.logs import configure_logging
configure_logging("json", "replica", flush_seconds=60)
log = logging.getLogger("iris_classifier.access")
for number in range(50):
    log.info("request %d", number)
{end}
"""


@pytest.mark.parametrize(
    ("end", "exit_code"),
    [("", 0), ("sys.exit(3)", 3), ("raise RuntimeError('crash')", 1)],
    ids=["returns", "exits", "crashes"],
)
def test_every_line_is_written_when_the_interpreter_exits(end: str, exit_code: int) -> None:
    """The timer is a minute: only the flush at exit can write the lines."""
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-c", EXITING.format(end=end)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == exit_code, finished.stderr
    assert finished.stdout.count('"message":"request ') == 50, finished.stdout[-500:]
    assert time.monotonic() - started < 30, "the exit waited for the timer"


def test_a_record_is_handled_without_waiting_for_the_handlers_lock() -> None:
    stream = RecordedStream()
    handler = BatchedLineHandler(LineWriter(stream, flush_seconds=60))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "handled", None, None)
    handler.acquire()  # held here, as by another thread in the middle of a record
    try:
        other = threading.Thread(target=handler.handle, args=(record,), daemon=True)
        other.start()
        other.join(timeout=5)
        assert not other.is_alive(), "the record waited for the handler's lock"
    finally:
        handler.release()
    handler.flush()
    assert stream.lines() == ["handled"]
