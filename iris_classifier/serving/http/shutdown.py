"""Graceful stop: SIGTERM starts a drain in which nothing a client sent is lost.

The pod's removal from the Service's endpoints takes a while to reach every node and balancer,
but `bentoml serve` passes SIGTERM on to its workers at once, and uvicorn, left alone, would stop
accepting and close every idle kept-alive connection, losing a request sent on one just then.
So a worker drains for `drain_seconds` first (readiness 503, `Connection: close`, new
connections still served, as some balancers still send them), then runs uvicorn's own graceful
shutdown. A second SIGTERM skips the rest of the drain.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from iris_classifier.serving.telemetry.line_writer import write_through

logger = logging.getLogger("iris_classifier.shutdown")


class Drain:
    """Whether this process is draining, and the SIGTERM handler that starts it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started_at: float | None = None  # time.monotonic() of the SIGTERM
        self._handed_off = False

    @property
    def active(self) -> bool:
        return self.started_at is not None

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take SIGTERM over from the server, which gets it after the drain; False if not.

        Signals reach only the main thread, and a drain of 0 seconds needs no handler.
        """
        if self.seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return False
        server_handler = signal.getsignal(signal.SIGTERM)

        def hand_off() -> None:
            if self._handed_off:
                return
            self._handed_off = True
            logger.info("drain over after %.1f s: stopping", self.elapsed())
            if callable(server_handler):
                server_handler(signal.SIGTERM, None)
            else:  # nobody else wanted SIGTERM: die of it as the default does
                write_through()  # dying of a signal skips the exit handlers that write the log
                signal.signal(signal.SIGTERM, server_handler or signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            # Only flags and a wake-up here: logging or awaiting inside a signal handler could
            # interrupt the same work in the main thread.
            # The callbacks run in a context of their own: the signal interrupts whatever the
            # main thread runs, often a request, and a stop is no client's doing.
            if self.started_at is None:
                self.started_at = time.monotonic()
                loop.call_soon_threadsafe(
                    self._begin, loop, hand_off, context=contextvars.Context()
                )
            else:
                loop.call_soon_threadsafe(hand_off, context=contextvars.Context())

        signal.signal(signal.SIGTERM, on_sigterm)
        return True

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def _begin(self, loop: asyncio.AbstractEventLoop, hand_off: Callable[[], None]) -> None:
        logger.info(
            "SIGTERM: draining for %.1f s (readiness 503, Connection: close), then stopping",
            self.seconds,
        )
        loop.call_later(self.seconds, hand_off, context=contextvars.Context())
