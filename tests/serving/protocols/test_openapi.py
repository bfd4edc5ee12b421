"""Property-based tests of the running service against the OpenAPI document it publishes.

Schemathesis reads `/docs.json` from a real `bentoml serve` process and, for every operation
the document lists, sends its examples and generated valid and invalid requests. Every answer
must be a non-5xx whose status, content type and body the document declares; valid requests
must be accepted and invalid ones refused.

Schemathesis's own `@schema.parametrize()` over a fixture (`schemathesis.pytest.from_fixture`)
needs pytest internals that pytest 9 no longer has, so the operations' Hypothesis strategies
drive the requests here instead; the checks are the same ones `call_and_validate` runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode

pytestmark = pytest.mark.integration

# Bounded so the whole module runs in well under a minute on two shared cores. Examples are
# derived from a fixed seed: a failure found once is found again by the next run.
GENERATED_PER_OPERATION = 25
BOUNDED = settings(
    max_examples=GENERATED_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Statuses the service answers on purpose that BentoML's generated document cannot declare:
# 413 for a body over the size limit, 415 for a body that is not JSON.
UNDECLARED_REFUSALS = {413, 415}
CLASSIFY_OPERATIONS = {"POST /iris/classify_iris", "POST /iris/classify_batch"}
# An Open Inference Protocol tensor ties its shape to its data's length and its values to
# (0, 100] cm, which OpenAPI 3.0 cannot say: a request valid by the schema may still be refused.
# Its refusals are checked all the same (a documented 400 with an error), as are invalid ones.
TENSOR_OPERATIONS = {
    "POST /v2/models/{model}/infer",
    "POST /v2/models/{model}/versions/{version}/infer",
}


@pytest.fixture(scope="module")
def published_schema(live_server: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{live_server}/docs.json", timeout=10)


@pytest.fixture(scope="module")
def operations(published_schema: BaseSchema) -> list[APIOperation]:
    """Every operation in the document; one the document defines badly fails here."""
    return [result.ok() for result in published_schema.get_all_operations()]


def answers_as_documented(case: Case) -> None:
    """Send `case` and run every response check Schemathesis applies by default."""
    response = case.call(timeout=10)
    assert response.status_code < 500, f"{case.as_curl_command()} got {response.status_code}"
    excluded = (
        [schemathesis.checks.status_code_conformance]
        if response.status_code in UNDECLARED_REFUSALS
        else []
    )
    if case.operation.label in TENSOR_OPERATIONS:
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)


def run_bounded(strategy: st.SearchStrategy[Case], check: Callable[[Case], None]) -> None:
    @BOUNDED
    @given(case=strategy)
    def property_holds(case: Case) -> None:
        check(case)

    property_holds()


def accepts_input(operation: APIOperation) -> bool:
    """Whether there is anything to make invalid: a body or a non-path parameter.

    Schemathesis does not make path parameters invalid (that would only change the route), so
    an operation whose only input is its path has no invalid form to generate.
    """
    return any(parameter.location != "path" for parameter in operation.iter_parameters()) or bool(
        operation.get_request_payload_content_types()
    )


def test_document_lists_the_classify_operations(operations: list[APIOperation]) -> None:
    assert {operation.label for operation in operations} >= CLASSIFY_OPERATIONS | TENSOR_OPERATIONS


def test_document_examples_are_answered_as_documented(
    published_schema: BaseSchema, operations: list[APIOperation], subtests: pytest.Subtests
) -> None:
    with_examples = 0
    for operation in operations:
        strategies = published_schema.get_strategies_from_examples(operation)
        with_examples += bool(strategies)
        for strategy in strategies:
            with subtests.test(operation.label):
                run_bounded(strategy, answers_as_documented)
    assert with_examples >= len(CLASSIFY_OPERATIONS), "both classify operations carry an example"


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value
)
def test_generated_requests_are_answered_as_documented(
    operations: list[APIOperation], mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not accepts_input(operation):
            continue
        with subtests.test(operation.label):
            run_bounded(operation.as_strategy(generation_mode=mode), answers_as_documented)
