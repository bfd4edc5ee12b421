"""`RequestMetrics` (iris_classifier/serving/telemetry/request_metrics.py) counts what BentoML's
own request metrics layer counts, answer by answer: the same applications go through each, in
stacks of their own with series of their own, and the counts and observations must agree."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from iris_classifier.serving import seam
from iris_classifier.serving.http.responder import Responder
from iris_classifier.serving.telemetry.metric_buffer import MetricBuffer
from iris_classifier.serving.telemetry.request_metrics import (
    replace_request_metrics,
    route_labels,
)

STATUSES = (0, 200, 500, 503)


async def answered(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def streamed(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"o", "more_body": True})
    await send({"type": "http.response.body", "body": b"k"})


async def raised_before_answering(send) -> None:
    raise RuntimeError("before the answer")


async def raised_after_answering(send) -> None:
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"failed"})
    raise RuntimeError("after the answer")


async def raised_mid_body(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"o", "more_body": True})
    raise RuntimeError("in the body")


async def head_only(send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": []})


async def no_answer(send) -> None:
    return


APPLICATIONS = {
    app.__name__: app
    for app in (
        answered,
        streamed,
        raised_before_answering,
        raised_after_answering,
        raised_mid_body,
        head_only,
        no_answer,
    )
}


async def routed(scope, receive, send) -> None:
    await APPLICATIONS[scope["path"].strip("/")](send)


class Outer:
    def __init__(self, app) -> None:
        self.app = app


def stack_counting_in(namespace: str) -> tuple[Outer, seam.BentoRequestMetrics]:
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    stack = Outer(RunnerTrafficMetricsMiddleware(routed, namespace=namespace, skip_paths=[]))
    found = seam.bentoml_request_metrics(stack)
    assert found is not None
    return stack, found


def request_through(stack: Outer, path: str, send: Any) -> None:
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def go() -> None:
        with contextlib.suppress(RuntimeError):  # what the applications raise on purpose
            await stack.app(scope, receive, send)

    asyncio.run(go())


def counted(found: seam.BentoRequestMetrics, path: str) -> dict[str, Any]:
    """Per status, the count and the number of durations observed; and in progress."""
    labels = route_labels(path)
    by_status = {}
    for status in STATUSES:
        total = seam.stored_value(found.total.labels(**labels, http_response_code=status)).get()
        _, buckets, _ = seam.histogram_values(
            found.duration.labels(**labels, http_response_code=status)
        )
        observed = sum(bucket.get() for bucket in buckets)
        if total or observed:
            by_status[status] = (total, observed)
    in_progress = seam.stored_value(found.in_progress.labels(**labels)).get()
    return {"answers": by_status, "in_progress": in_progress}


@pytest.fixture(scope="module")
def both_counts() -> dict[str, tuple[dict, dict]]:
    bentoml_stack, bentoml_found = stack_counting_in("iris_rm_test_bentoml")
    ours_stack, ours_found = stack_counting_in("iris_rm_test_ours")
    buffer = MetricBuffer()
    assert replace_request_metrics(ours_stack, buffer)
    shared_stack, shared_found = stack_counting_in("iris_rm_test_shared")
    assert replace_request_metrics(shared_stack, buffer)

    async def server_send(message) -> None:
        pass

    for name in APPLICATIONS:
        for _ in range(2):
            request_through(bentoml_stack, f"/{name}", server_send)
            request_through(ours_stack, f"/{name}", server_send)
            # As in the service's stack: a layer in front made the request's responder.
            request_through(shared_stack, f"/{name}", Responder(server_send))
    buffer.flush()
    return {
        name: (
            counted(bentoml_found, f"/{name}"),
            counted(ours_found, f"/{name}"),
            counted(shared_found, f"/{name}"),
        )
        for name in APPLICATIONS
    }


@pytest.mark.parametrize("application", list(APPLICATIONS))
def test_request_metrics_count_what_bentomls_layer_counts(both_counts, application: str) -> None:
    bentoml_counts, ours, shared = both_counts[application]
    assert ours == bentoml_counts
    assert shared == bentoml_counts


def test_the_comparison_sees_answers_and_their_absence(both_counts) -> None:
    """The applications above do differ in what BentoML's layer counts, so agreeing means
    something."""
    assert both_counts["answered"][0]["answers"] == {200: (2, 2)}
    assert both_counts["raised_after_answering"][0]["answers"] == {500: (2, 2)}
    assert both_counts["raised_before_answering"][0]["answers"] == {}
    assert both_counts["head_only"][0]["answers"] == {}


def test_paths_no_route_answers_are_labelled_as_themselves_only_up_to_a_bound() -> None:
    """A scan of many paths adds a bounded number of series; the service's routes keep their
    own label whenever they are first asked for, before or after the bound is reached."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    from iris_classifier.serving.telemetry.request_metrics import MAX_UNROUTED_PATHS, UNROUTED

    async def not_found_unless_routed(scope, receive, send) -> None:
        status = 200 if scope["path"].startswith("/route") else 404
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    stack = Outer(
        RunnerTrafficMetricsMiddleware(
            not_found_unless_routed, namespace="iris_rm_test_bounded", skip_paths=[]
        )
    )
    found = seam.bentoml_request_metrics(stack)
    assert found is not None
    buffer = MetricBuffer()
    assert replace_request_metrics(stack, buffer, routed=lambda path: path.startswith("/route"))

    async def server_send(message) -> None:
        pass

    scanned = [f"/scan/{index}" for index in range(MAX_UNROUTED_PATHS + 10)]
    request_through(stack, "/route/early", server_send)
    for path in scanned:
        request_through(stack, path, server_send)
    request_through(stack, scanned[0], server_send)  # one that kept its own label
    request_through(stack, scanned[-1], server_send)  # one past the bound
    request_through(stack, "/route/late", server_send)
    buffer.flush()

    counts = {
        sample.labels["endpoint"]: sample.value
        for family in found.total.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    kept = scanned[:MAX_UNROUTED_PATHS]
    assert counts == {
        "/route/early": 1,
        "/route/late": 1,
        **dict.fromkeys(kept, 1),
        scanned[0]: 2,
        UNROUTED: 11,
    }
    timed = {
        (sample.labels["endpoint"], sample.labels["http_response_code"]): sample.value
        for family in found.duration.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert timed[(UNROUTED, "404")] == 11
    assert timed[("/route/late", "200")] == 1
