"""Log lines that client input cannot forge: one record, one line, fields that cannot be faked.

Both formats carry the same fields: timestamp, level, logger, message, replica, and for a
line written while a request is handled its request_id, method and path; the access line of
a request adds status and duration_ms. `json` writes one JSON object per line; `text` writes
`timestamp level logger key="value" ...` with every free-text value JSON-quoted. Either way a
newline, carriage return or escape sequence sent by a client is written escaped, so it can
neither start a line nor add a field, and every text value is cut to a fixed budget, so one
line stays under MAX_LINE_CHARS however large the input was.

Lines are written in batches, not one system call each: see line_writer.py for when a line
reaches stdout. The prediction log's lines (prediction_log.py) share the writer, always JSON.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from typing import Any

from iris_classifier.serving.http.request_context import CURRENT_REQUEST, RequestContext, clip
from iris_classifier.serving.model.prediction_log import LOGGER_NAME as PREDICTION_LOGGER
from iris_classifier.serving.model.prediction_log import PredictionLineFormatter
from iris_classifier.serving.seam import (
    SERVER_LOGGERS,
    UVICORN_ACCESS_LOGGER,
    bentoml_log_handler,
)
from iris_classifier.serving.telemetry.line_writer import (
    FLUSH_SECONDS,
    BatchedLineHandler,
    LineWriter,
)

# Budgets in characters after escaping; together with the fixed fields they bound a line.
MAX_MESSAGE_CHARS = 2000
MAX_ERROR_CHARS = 4000
MAX_LINE_CHARS = 8192
# Logger names, methods, routes and access messages repeat from line to line: each is
# escaped once. Longer texts (client-sent, mostly) are escaped every time, never kept.
MAX_REMEMBERED_CHARS = 256
# Access lines of this many kinds (route, method, status, level) keep their fixed text; a kind
# seen once more after the cache filled starts it afresh, so client paths cannot grow it.
MAX_ACCESS_KINDS = 1024
# Where a request's own values go in an access line's fixed text: never in an escaped value.
_TIMESTAMP_MARK, _REQUEST_ID_MARK, _DURATION_MARK = "\x00t\x00", "\x00r\x00", "\x00d\x00"


def escaped(text: str, budget: int) -> str:
    """`text` as the inside of a JSON string (ASCII only), at most `budget` characters."""
    if len(text) <= MAX_REMEMBERED_CHARS:
        return _escaped_short(text, budget)
    return _escape(text, budget)


def _escape(text: str, budget: int) -> str:
    limit = budget
    while True:
        quoted = json.dumps(clip(text, limit))[1:-1]
        if len(quoted) <= budget:
            return quoted
        # Escapes grew the text (\u001b is six characters for one): cut the raw text more.
        limit = max(0, limit * budget // len(quoted) - 32)


_escaped_short = functools.lru_cache(maxsize=1024)(_escape)


class AccessRecord(logging.LogRecord):
    """A request's access record: its line says the request, status and duration, and neither
    the caller's file and line nor a thread or a process, so none of them is looked up."""

    def __init__(
        self, name: str, level: int, request: RequestContext, status: int, duration_ms: float
    ) -> None:
        # Every attribute `LogRecord.__init__` sets, on the instance: formatters read them
        # from the record's `__dict__`.
        vars(self).update(_UNLOOKED)
        now = time.time_ns()
        self.name = name
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.args = (request.method, request.path, status)
        self.created = now / 1e9
        self.msecs = (now % 1_000_000_000) // 1_000_000 + 0.0
        self.relativeCreated = (now - logging._startTime) / 1e6  # type: ignore[attr-defined]
        self.request = request
        self.status = status
        self.duration_ms = duration_ms


# What `LogRecord` records when it is not told the caller, thread or process.
_UNLOOKED = {
    "msg": "%s %s %d",  # method, path, status
    "pathname": "(unknown file)",
    "filename": "(unknown file)",
    "module": "(unknown file)",
    "lineno": 0,
    "funcName": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "thread": None,
    "threadName": None,
    "processName": None,
    "process": None,
    "taskName": None,
}


class _Duration:
    """Stands for an access line's duration where its fixed text is rendered."""

    def __format__(self, spec: str) -> str:
        return _DURATION_MARK


class RecordFields(logging.Formatter):
    """What both formats write: each value already escaped and within its budget."""

    def __init__(self, replica: str) -> None:
        super().__init__()
        self.replica = escaped(replica, 128)
        self._access_parts: dict[tuple[Any, ...], tuple[str, str, str, str]] = {}

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord:
            return self._access_line(record)
        return self.render(self.fields(record))

    def render(self, entry: dict[str, Any]) -> str:
        raise NotImplementedError

    def _access_line(self, record: AccessRecord) -> str:
        """The line `render` writes for the record, from the text its kind of request always
        has: all but the timestamp, request id and duration is rendered once per kind."""
        request = record.request
        kind = (record.name, record.levelno, request.method, request.path, record.status)
        parts = self._access_parts.get(kind)
        if parts is None:
            entry = self.fields(record)
            entry.update(
                timestamp=_TIMESTAMP_MARK, request_id=_REQUEST_ID_MARK, duration_ms=_Duration()
            )
            start, rest = self.render(entry).split(_TIMESTAMP_MARK)
            after_time, rest = rest.split(_REQUEST_ID_MARK)
            after_id, end = rest.split(_DURATION_MARK)
            if len(self._access_parts) >= MAX_ACCESS_KINDS:
                self._access_parts.clear()
            parts = self._access_parts[kind] = (start, after_time, after_id, end)
        start, after_time, after_id, end = parts
        return (
            f"{start}{utc_timestamp(record.created)}{after_time}{request.request_id}"
            f"{after_id}{record.duration_ms}{end}"
        )

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "timestamp": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": escaped(record.name, 128),
            "message": escaped(record.getMessage(), MAX_MESSAGE_CHARS),
            "replica": self.replica,
        }
        # Set on the record by the access log; for any other line, the request being handled.
        request = getattr(record, "request", None) or CURRENT_REQUEST.get()
        if isinstance(request, RequestContext):
            entry["request_id"] = request.request_id  # a safe id by construction
            entry["method"] = escaped(request.method, 32)
            entry["path"] = escaped(request.path, 512)
        for name in ("status", "duration_ms"):
            if isinstance(value := getattr(record, name, None), int | float):
                entry[name] = value
        if record.exc_info:
            # The end of a traceback says what failed; its start is the same every time.
            error = self.formatException(record.exc_info)
            entry["error"] = escaped(error[-MAX_ERROR_CHARS:], MAX_ERROR_CHARS)
        return entry


def utc_timestamp(seconds: float) -> str:
    """`seconds` since the epoch as ISO 8601 in UTC, to the millisecond."""
    return f"{_utc_second(int(seconds))}.{int(seconds % 1 * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class JsonLineFormatter(RecordFields):
    def render(self, entry: dict[str, Any]) -> str:
        # The strings are escaped already, so they are written between quotes as they are.
        pairs = ",".join(
            f'"{key}":"{value}"' if isinstance(value, str) else f'"{key}":{value}'
            for key, value in entry.items()
        )
        return "{" + pairs + "}"


class TextLineFormatter(RecordFields):
    def render(self, entry: dict[str, Any]) -> str:
        head = f"{entry.pop('timestamp')} {entry.pop('level'):<7} {entry.pop('logger')}"
        return " ".join(
            [head]
            + [
                f'{key}="{value}"' if isinstance(value, str) else f"{key}={value}"
                for key, value in entry.items()
            ]
        )


def configure_logging(
    log_format: str, replica: str, flush_seconds: float = FLUSH_SECONDS
) -> LineWriter:
    """Send every log record of the process to stdout, one line each, in `log_format`, and the
    prediction log's records there too, as JSON lines; written in batches (line_writer.py)."""
    formatter = JsonLineFormatter if log_format == "json" else TextLineFormatter
    # No line names a thread or a process (the replica names it): records skip finding them.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    writer = LineWriter(sys.stdout, flush_seconds)
    handler = BatchedLineHandler(writer)
    handler.setFormatter(formatter(replica))
    root = logging.getLogger()
    # BentoML's, and an earlier call's own; a test runner's capture is left alone.
    for old in [h for h in root.handlers if _replaced(h)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    for name in SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for old in list(server_logger.handlers):
            server_logger.removeHandler(old)
        server_logger.propagate = True
    # The edge writes each request's access line. Where the level keeps uvicorn's out anyway,
    # that logger reaches no handler, so uvicorn skips building its line for every answer; a
    # level that lets it in (BentoML's debug mode) leaves it written as before.
    uvicorn_access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    if not uvicorn_access.isEnabledFor(logging.INFO):
        uvicorn_access.propagate = False
    logging.getLogger("iris_classifier").setLevel(logging.INFO)
    predictions = logging.getLogger(PREDICTION_LOGGER)
    prediction_handler = BatchedLineHandler(writer)
    prediction_handler.setFormatter(PredictionLineFormatter(replica, utc_timestamp))
    for old in [h for h in predictions.handlers if _replaced(h)]:
        predictions.removeHandler(old)
    predictions.addHandler(prediction_handler)
    predictions.setLevel(logging.INFO)
    # Its own lines: never in the root's format, whatever handlers a test runner adds there.
    predictions.propagate = False
    return writer


def _replaced(handler: logging.Handler) -> bool:
    return bentoml_log_handler(handler) or isinstance(handler, BatchedLineHandler)
