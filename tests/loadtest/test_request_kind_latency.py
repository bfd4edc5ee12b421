"""The request-kind latency tool, against a real replica."""

from __future__ import annotations

import pytest

from loadtest.request_kind_latency import measure


@pytest.mark.integration
def test_each_kind_of_request_gets_its_answer_and_a_time(live_server: str) -> None:
    costs = {cost.kind: cost for cost in measure(live_server, requests=3)}
    assert list(costs) == ["single", "batch of 20", "hostile", "large batch"]
    assert [cost.status for cost in costs.values()] == [200, 200, 400, 200]
    # The refusal is small however large the request; the large batch answers every flower.
    assert costs["hostile"].answer_bytes < 4096 < costs["hostile"].request_bytes
    assert costs["large batch"].answer_bytes > 100_000
    assert all(0 < cost.median_ms <= cost.p90_ms for cost in costs.values())
