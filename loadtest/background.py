"""Background users: requests sent beside the good ones, to see what they cost the good ones.

`--hostile-users` send a body the service must refuse (HOSTILE_FIELDS unknown fields and a field
name that tries to forge a log line); `--large-batch-users` send a valid batch of about the same
size, which the service must read in full. Side by side they show whether a refusal costs more
than reading the request does. The latency gates judge the other users' requests only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from iris_classifier.serving.config import MAX_BATCH_ROWS
from loadtest.flower_sampler import FlowerSampler
from loadtest.request_log import RequestRecord

# Enough unknown fields to make reading the body dear, few enough that the body stays within
# the service's body limit and is read in full rather than refused unread with a 413.
HOSTILE_FIELDS = 60_000
HOSTILE_NAME = f"hostile: {HOSTILE_FIELDS:,} unknown fields"
LARGE_BATCH_NAME = f"large batch: {MAX_BATCH_ROWS:,} flowers, unrounded"
BACKGROUND_NAMES = frozenset({HOSTILE_NAME, LARGE_BATCH_NAME})
# A refusal answer is a few KB however hostile the request (iris_classifier/serving/README.md).
MAX_REFUSAL_BYTES = 4096


def user_role(
    number: int, *, kept_alive_users: int, hostile_users: int, large_batch_users: int
) -> str:
    """What the user started `number`-th (from 0) does: "kept-alive" (flowers on one kept
    connection), "hostile", "large-batch", or "fresh" (flowers, new connections)."""
    for role, count in (
        ("kept-alive", kept_alive_users),
        ("hostile", hostile_users),
        ("large-batch", large_batch_users),
    ):
        if number < count:
            return role
        number -= count
    return "fresh"


def good_requests(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """The requests the latency gates judge: not those of the background users."""
    return [record for record in records if record.name not in BACKGROUND_NAMES]


@functools.cache
def hostile_body() -> bytes:
    fields = {f"f{index}": 1 for index in range(HOSTILE_FIELDS)}
    return json.dumps({**fields, "x\nFAKE LOG LINE [ERROR] admin": 1}).encode()


@functools.cache
def large_batch_body() -> bytes:
    """The most flowers a batch may hold, unrounded as a client writes float64 values: about
    the hostile body's size (both sizes: loadtest/README.md#bad-requests-under-load), so the
    service has as much to read."""
    sampler = FlowerSampler(seed=0, digits=None)
    return json.dumps({"flowers": sampler.flowers(MAX_BATCH_ROWS)}).encode()


def large_batch_problem(answer: bytes) -> str | None:
    """Why the answer to the large batch is wrong: one prediction per flower, counted in the
    raw bytes. Parsing them would take locust CPU it shares with the replicas, and slow its own
    timing of the good requests beside them (loadtest/README.md#bad-requests-under-load)."""
    predictions = answer.count(b'"class"')
    if predictions != MAX_BATCH_ROWS:
        return f"{predictions} predictions for {MAX_BATCH_ROWS} flowers"
    return None
