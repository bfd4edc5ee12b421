"""Fresh request ids (iris_classifier/serving/http/request_context.py): unique within a process and
across processes, forked ones included, in the shape a UUID's hex had; a request's context cuts
what its line could not hold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import pytest

from iris_classifier.serving.http.request_context import (
    MAX_PATH_CHARS,
    context_for,
    new_request_id,
    request_id_from,
)

FRESH_ID = re.compile(r"[0-9a-f]{32}")
PREFIX_DIGITS = 16


def prefix(request_id: str) -> str:
    return request_id[:PREFIX_DIGITS]


def test_fresh_ids_are_32_hex_digits_and_never_repeat_in_a_process() -> None:
    ids = [request_id_from([]) for _ in range(10_000)]
    assert all(FRESH_ID.fullmatch(request_id) for request_id in ids), ids[:3]
    assert len(set(ids)) == len(ids)
    assert {prefix(request_id) for request_id in ids} == {prefix(ids[0])}


def test_each_process_draws_its_own_prefix() -> None:
    """Replicas and restarts are processes started afresh: none may reuse another's ids."""
    probe = (
        "from iris_classifier.serving.http.request_context import new_request_id as n; print(n())"
    )
    started = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(3)
    ]
    assert all(FRESH_ID.fullmatch(request_id) for request_id in started), started
    assert len({prefix(request_id) for request_id in [*started, new_request_id()]}) == 4


def test_a_forked_process_draws_a_new_prefix() -> None:
    """A server that forks its workers after import must not give them its own ids."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python warns about forking a process with threads; the child only writes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:
        try:
            os.write(write_end, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        in_child = pipe.read()
    os.waitpid(child, 0)
    assert FRESH_ID.fullmatch(in_child), in_child
    assert prefix(in_child) != prefix(new_request_id())


@pytest.mark.parametrize(
    ("method", "path", "kept"),
    [
        ("POST", "/" + "p" * (MAX_PATH_CHARS - 1), True),
        ("A" * 16, "/", True),
        ("A" * 17, "/", False),
        ("GET", "/" + "p" * MAX_PATH_CHARS, False),
    ],
)
def test_a_context_keeps_a_method_and_path_within_their_limits_and_cuts_longer_ones(
    method: str, path: str, kept: bool
) -> None:
    context = context_for({"method": method, "path": path, "headers": []})
    assert ((context.method, context.path) == (method, path)) is kept
