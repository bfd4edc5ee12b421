"""Log lines (iris_classifier/serving/telemetry/logs.py): one record, one line, no field a client can fake."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from iris_classifier.serving.http.request_context import (
    CURRENT_REQUEST,
    RequestContext,
    context_for,
    request_id_from,
)
from iris_classifier.serving.telemetry.logs import (
    MAX_ACCESS_KINDS,
    MAX_LINE_CHARS,
    AccessRecord,
    JsonLineFormatter,
    TextLineFormatter,
    configure_logging,
)

FORGERIES = {
    "newline": "x\nFAKE LOG LINE [ERROR] admin",
    "carriage return": "x\rFAKE LOG LINE [ERROR] admin",
    "ANSI escape": "x\x1b[2K\x1b[1GFAKE LOG LINE [ERROR] admin",
    "line separator": "x\u2028FAKE LOG LINE [ERROR] admin",
    "quote and field": 'x" level="ERROR" status=500 "',
    "very long": "x" * 1_000_000 + "\n" * 100_000,
}
# What a text line looks like: timestamp, level, logger, then key="value" or key=number only.
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ +\S+"
    r'( [a-z_]+=("([^"\\]|\\.)*"|[0-9.]+))+'
)


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("bentoml.test", logging.WARNING, __file__, 1, message, args, exc_info)


def formatted(formatter: logging.Formatter, rec: logging.LogRecord, path: str = "/p") -> str:
    token = CURRENT_REQUEST.set(
        context_for({"method": "POST", "path": path, "headers": [(b"x-request-id", b"req-1")]})
    )
    try:
        return formatter.format(rec)
    finally:
        CURRENT_REQUEST.reset(token)


def raised(text: str) -> BaseException:
    try:
        raise ValueError(text)
    except ValueError as error:
        return error


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_json_line_cannot_be_forged_from_message_path_or_traceback(forgery: str) -> None:
    rec = record("refused %s", forgery, exc=raised(forgery))
    line = formatted(JsonLineFormatter("replica-1"), rec, path="/" + forgery)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert line.isascii(), "a line separator or escape sequence must be written escaped"
    assert len(line) <= MAX_LINE_CHARS
    entry = json.loads(line)
    assert set(entry) == {
        "timestamp",
        "level",
        "logger",
        "message",
        "replica",
        "request_id",
        "method",
        "path",
        "error",
    }
    assert entry["level"] == "WARNING"
    assert entry["request_id"] == "req-1"
    assert entry["message"].startswith("refused x")


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_text_line_cannot_be_forged_from_message_path_or_traceback(forgery: str) -> None:
    rec = record("refused %s", forgery, exc=raised(forgery))
    line = formatted(TextLineFormatter("replica-1"), rec, path="/" + forgery)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert line.isascii()
    assert len(line) <= MAX_LINE_CHARS
    assert TEXT_LINE.fullmatch(line), line[:300]
    keys = re.findall(r' ([a-z_]+)=(?:"(?:[^"\\]|\\.)*"|[0-9.]+)', line)
    assert keys == ["message", "replica", "request_id", "method", "path", "error"]


def test_access_fields_are_numbers_and_a_quiet_line_has_no_request_fields() -> None:
    rec = record("POST /p 200")
    rec.status, rec.duration_ms = 200, 1.25
    entry = json.loads(formatted(JsonLineFormatter("r"), rec))
    assert (entry["status"], entry["duration_ms"]) == (200, 1.25)
    outside_a_request = json.loads(JsonLineFormatter("r").format(record("started")))
    assert "request_id" not in outside_a_request
    assert outside_a_request["replica"] == "r"


def access_records(path: str, status: int) -> tuple[logging.LogRecord, logging.LogRecord]:
    """An access record, and the same record made the general way, at the same time."""
    context = context_for({"method": "POST", "path": path, "headers": [(b"x-request-id", b"r-1")]})
    access = AccessRecord("iris_classifier.access", logging.INFO, context, status, 0.25)
    general = logging.LogRecord(
        "iris_classifier.access", logging.INFO, "", 0, "%s %s %d", access.args, None
    )
    general.created = access.created
    general.request, general.status, general.duration_ms = context, status, 0.25  # type: ignore[attr-defined]
    return access, general


@pytest.mark.parametrize("formatter", [JsonLineFormatter, TextLineFormatter])
@pytest.mark.parametrize("path", ["/iris/classify_iris", *("/" + f for f in FORGERIES.values())])
def test_an_access_line_is_the_line_its_fields_make(
    formatter: type[logging.Formatter], path: str
) -> None:
    lines = formatter("replica-1")  # type: ignore[call-arg]
    for status in (200, 404, 200):  # the second 200 reuses the text the first one rendered
        access, general = access_records(path, status)
        assert lines.format(access) == lines.format(general)


def test_the_access_lines_remembered_text_is_bounded() -> None:
    lines = JsonLineFormatter("replica-1")
    for number in range(MAX_ACCESS_KINDS + 10):
        lines.format(access_records(f"/p{number}", 404)[0])
    assert len(lines._access_parts) <= MAX_ACCESS_KINDS


@pytest.mark.parametrize(
    "header",
    [b"abc-123", b"0af7651916cd43dd8448eb211c80319c", b"01ARZ3NDEKTSV4RRFFQ69G5FAV", b"a.b_c:d"],
)
def test_a_short_safe_request_id_is_kept(header: bytes) -> None:
    assert request_id_from([(b"x-request-id", header)]) == header.decode()


@pytest.mark.parametrize(
    "header",
    [b"", b"x" * 65, b"a b", b"a\nb", b"a\x1bb", b'a"b', b"caf\xc3\xa9", b"a/b"],
)
def test_an_unsafe_request_id_is_replaced(header: bytes) -> None:
    replaced = request_id_from([(b"x-request-id", header)])
    assert re.fullmatch(r"[0-9a-f]{32}", replaced), replaced


def test_a_request_without_an_id_gets_a_new_one_each_time() -> None:
    assert request_id_from([]) != request_id_from([])


def test_configure_logging_replaces_the_servers_handlers(capsys: pytest.CaptureFixture) -> None:
    root = logging.getLogger()
    saved_root, saved_bentoml = root.handlers[:], logging.getLogger("bentoml").handlers[:]
    logging.getLogger("bentoml").addHandler(logging.StreamHandler(sys.stderr))
    try:
        writer = configure_logging("json", "replica-7")
        logging.getLogger("bentoml.serve").warning("one\ntwo")
        writer.flush()
        out = capsys.readouterr()
        lines = out.out.splitlines()
        assert len(lines) == 1
        assert json.loads(lines[0])["message"] == "one\ntwo"
        assert out.err == "", "BentoML's own handler must be gone"
    finally:
        root.handlers[:] = saved_root
        logging.getLogger("bentoml").handlers[:] = saved_bentoml
        logging.getLogger("iris_classifier.predictions").handlers.clear()


@pytest.mark.parametrize(("root_level", "reaches_a_handler"), [("WARNING", False), ("DEBUG", True)])
def test_uvicorns_access_logger_reaches_a_handler_only_where_its_lines_are_written(
    root_level: str, reaches_a_handler: bool
) -> None:
    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    saved_handlers, saved_level, saved_propagate = root.handlers[:], root.level, access.propagate
    saved_access_level = access.level
    root.setLevel(root_level)
    access.setLevel(logging.NOTSET)
    try:
        configure_logging("json", "replica-7")
        assert access.hasHandlers() is reaches_a_handler
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        access.propagate = saved_propagate
        access.setLevel(saved_access_level)
        logging.getLogger("iris_classifier.predictions").handlers.clear()


def test_request_context_cuts_a_long_path() -> None:
    context = context_for({"method": "GET", "path": "/" + "a" * 10_000, "headers": []})
    assert isinstance(context, RequestContext)
    assert len(context.path) < 300
    assert context.path.endswith("(10001 chars)")
