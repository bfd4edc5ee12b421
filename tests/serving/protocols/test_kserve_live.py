"""KServe's own Python client (kserve 0.21, protocol v2) against a real `bentoml serve`.

The client runs in build/kserve-venv (tests/support/kserve_sdk.py); without it these tests
skip, except under CI=true, where they fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import kserve_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(live_server: str) -> dict[str, Any]:
    return kserve_client.observe(live_server)


def test_kserve_client_sends_model_name_in_the_body(report: dict[str, Any]) -> None:
    assert "model_name" in report["request_body_keys"]


@pytest.mark.parametrize("call", ["server_live", "server_ready", "model_ready"])
def test_kserve_client_reads_health(report: dict[str, Any], call: str) -> None:
    assert report[call] == {"value": True}


def test_kserve_client_infers_with_model_name_and_gets_the_single_flower_answers(
    report: dict[str, Any], live_server: str
) -> None:
    assert kserve_client.problems(report, kserve_client.single_flower_answers(live_server)) == []


def test_kserve_client_naming_another_model_in_the_body_is_refused(
    report: dict[str, Any],
) -> None:
    refusal = report["infer_other_model_in_body"]
    assert refusal.get("status") == 400, refusal
    assert "model_name" in refusal["body"]
