"""The interactive API page at `/`, used as a person would in headless Chromium.

The page is opened from a real `bentoml serve` process; the test reads what it shows, presses
every "Try it" and reads each answer the page shows. Every request the page makes is recorded and
any to another host is refused, so the page must work on a network with no way out. The
screenshot, taken after every example has been answered, goes to the test report
(`build/test-report/api-page.png`).

Playwright drives Debian's `/usr/bin/chromium` (`executable_path`), never a browser of its
own: its wheel carries the driver only, it waits for elements to be actionable instead of
sleeping, and it can route every request the page makes, which the offline check needs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from iris_classifier.serving.config import PROJECT_NAME
from tests.conftest import SEED_FLOWER, require
from tests.serving.pages.test_api_page import BENTOML_BOILERPLATE
from tests.support.project import project_version

pytestmark = pytest.mark.integration

# Without the networking flags Chromium keeps trying to reach Google's services; as root it
# only starts without the sandbox.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER_TIMEOUT_MS = 20_000
REFUSAL_EXAMPLE = "refusal"


@dataclass
class Answer:
    """What the page showed after "Try it" on one example."""

    status: str
    headers: str
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class PageVisit:
    """What the page showed and asked for while every example was tried."""

    heading: str = ""
    text: str = ""
    endpoints: list[str] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def chromium_path() -> str | None:
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def api_page_visit(
    live_server: str, report_dir: Path, record_testsuite_property: Callable[[str, object], None]
) -> PageVisit:
    """Open `/`, read it, run every example with the input the page offers, record everything."""
    require(
        importlib.util.find_spec("playwright") is not None,
        "the playwright package is missing: pip install -e '.[dev]'",
    )
    executable = chromium_path()
    require(executable is not None, "chromium is missing: apt-get install chromium")
    from playwright.sync_api import (
        ConsoleMessage,
        Request,
        Response,
        Route,
        expect,
        sync_playwright,
    )

    visit = PageVisit(screenshot=report_dir / "api-page.png")
    server_host = urlsplit(live_server).netloc

    def only_the_server(route: Route) -> None:
        url = route.request.url
        visit.requests.append(url)
        if urlsplit(url).netloc == server_host:
            route.continue_()
        else:
            visit.refused.append(url)
            route.abort("blockedbyclient")

    def failed_load(request: Request) -> None:
        visit.failed.append(f"{request.url}: {request.failure}")

    def error_status(response: Response) -> None:
        # The page's own requests; the answers the examples ask for are read from the page.
        if response.status >= 400 and response.request.resource_type != "fetch":
            visit.failed.append(f"{response.url}: {response.status}")

    def console_error(message: ConsoleMessage) -> None:
        # A Content-Security-Policy violation or a script error is reported on the console.
        # Failed loads are told apart above: the refused example's 400 is meant to be.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            visit.console_errors.append(message.text)

    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context.route("**/*", only_the_server)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("requestfailed", failed_load)
            page.on("response", error_status)
            page.on("console", console_error)
            page.goto(f"{live_server}/", wait_until="networkidle")
            visit.heading = page.locator("h1").inner_text()
            visit.text = page.locator("body").inner_text()
            visit.broken_images = page.evaluate(
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                ".map(i => i.src)"
            )

            for section in page.locator("[data-endpoint]").all():
                expect(section).to_be_visible()
                name = section.get_attribute("data-endpoint") or ""
                visit.endpoints.append(name)
                example = section.locator(".example")
                sent = example.locator("textarea")
                if sent.count():
                    visit.examples[name] = json.loads(sent.input_value())
                example.get_by_role("button", name="Try it").click()
                status = example.locator(".answer .status")
                expect(status).to_have_attribute(
                    "data-status", re.compile(".+"), timeout=ANSWER_TIMEOUT_MS
                )
                visit.answers[name] = Answer(
                    status=status.inner_text().strip(),
                    headers=example.locator(".answer .headers").inner_text(),
                    body=example.locator(".answer .body").inner_text(),
                )
            page.wait_for_load_state("networkidle")
            page.screenshot(path=visit.screenshot, full_page=True)
        finally:
            context.close()
    record_testsuite_property("api_page_screenshot", str(visit.screenshot))
    return visit


def documented_operations(live_server: str) -> list[str]:
    with urllib.request.urlopen(f"{live_server}/docs.json", timeout=10) as response:
        document = json.load(response)
    return [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
    ]


def test_api_page_shows_the_project_name_and_version(api_page_visit: PageVisit) -> None:
    assert api_page_visit.heading.split() == [PROJECT_NAME, "version", project_version()]


def test_api_page_shows_the_served_model(api_page_visit: PageVisit, trained_model: str) -> None:
    assert f"Model version\n{trained_model}" in api_page_visit.text.replace("\t", "\n")
    assert "Estimator\nlogistic-regression" in api_page_visit.text.replace("\t", "\n")


def test_api_page_shows_every_documented_operation(
    api_page_visit: PageVisit, live_server: str
) -> None:
    shown = [name for name in api_page_visit.endpoints if name != REFUSAL_EXAMPLE]
    assert sorted(shown) == sorted(documented_operations(live_server))


def test_api_page_examples_are_answered(api_page_visit: PageVisit) -> None:
    answers = api_page_visit.answers
    failing = {
        name: answer.status
        for name, answer in answers.items()
        if name != REFUSAL_EXAMPLE and not answer.status.startswith("200")
    }
    assert failing == {}
    assert api_page_visit.examples["POST /iris/classify_iris"] == SEED_FLOWER
    single = answers["POST /iris/classify_iris"]
    assert single.json()["class"] == "setosa"
    assert "x-served-by: live-replica-1" in single.headers.lower()
    batch = answers["POST /iris/classify_batch"].json()
    assert [row["class"] for row in batch["predictions"]] == ["setosa", "virginica"]
    infer = answers["POST /v2/models/{model}/infer"].json()
    assert {output["name"] for output in infer["outputs"]} == {
        "probabilities",
        "label",
        "out_of_range",
    }
    assert answers["GET /iris/model"].json()["estimator"] == "logistic-regression"
    assert answers["GET /healthcheck"].json() == "Iris classifier is ready!"


def test_api_page_shows_the_error_format_with_a_refused_example(
    api_page_visit: PageVisit,
) -> None:
    refusal = api_page_visit.answers[REFUSAL_EXAMPLE]
    assert refusal.status.startswith("400")
    body = refusal.json()
    assert {problem["field"] for problem in body["detail"]} == {
        "sepal_length",
        "sepal_width",
        "petal_width",
    }
    assert body["error"].startswith("invalid input: ")
    assert "415" in api_page_visit.text
    assert "413" in api_page_visit.text


def test_api_page_loads_nothing_from_other_hosts(api_page_visit: PageVisit) -> None:
    assert api_page_visit.refused == [], (
        "the page asked hosts other than the service for "
        f"{api_page_visit.refused}; it must work with no network beyond the service"
    )


def test_api_page_loads_every_resource_it_asks_for(api_page_visit: PageVisit) -> None:
    assert api_page_visit.failed == []
    assert api_page_visit.broken_images == []
    assert api_page_visit.console_errors == []


def test_api_page_shows_no_bentoml_boilerplate(api_page_visit: PageVisit) -> None:
    text = api_page_visit.text
    assert [phrase for phrase in (*BENTOML_BOILERPLATE, "None") if phrase in text] == []
