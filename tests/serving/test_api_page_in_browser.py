"""The interactive API page BentoML serves at `/`, used as a person would in headless Chromium.

The page (BentoML's Swagger UI, `main-openapi.html`) is opened from a real `bentoml serve`
process; the test expands `POST /iris/classify_iris`, keeps the documented example flower,
executes it and reads the answer the page shows. Every request the page makes is recorded
and any to another host is refused, so the page must work on a network with no way out.

Playwright drives Debian's `/usr/bin/chromium` (`executable_path`), never a browser of its
own: its wheel carries the driver only, it waits for elements to be actionable instead of
sleeping, and it can route every request the page makes, which the offline check needs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import SEED_FLOWER, require

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


@dataclass
class PageVisit:
    """What the page showed and asked for while classifying its example flower."""

    example: dict[str, Any] = field(default_factory=dict)
    status: str = ""
    answer: dict[str, Any] = field(default_factory=dict)
    answer_text: str = ""
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    screenshot: Path | None = None


def chromium_path() -> str | None:
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def classify_in_browser(live_server: str, tmp_path_factory: pytest.TempPathFactory) -> PageVisit:
    """Open `/`, run classify_iris with the page's example input, and record everything."""
    require(
        importlib.util.find_spec("playwright") is not None,
        "the playwright package is missing: pip install -e '.[dev]'",
    )
    executable = chromium_path()
    require(executable is not None, "chromium is missing: apt-get install chromium")
    from playwright.sync_api import Route, expect, sync_playwright

    visit = PageVisit(screenshot=tmp_path_factory.mktemp("browser") / "api-page.png")
    server_host = urlsplit(live_server).netloc

    def only_the_server(route: Route) -> None:
        url = route.request.url
        visit.requests.append(url)
        if urlsplit(url).netloc == server_host:
            route.continue_()
        else:
            visit.refused.append(url)
            route.abort("blockedbyclient")

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
            page.goto(f"{live_server}/", wait_until="networkidle")

            operation = page.locator(".opblock").filter(
                has=page.locator('[data-path="/iris/classify_iris"]')
            )
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            visit.example = json.loads(operation.locator("textarea.body-param__text").input_value())
            operation.get_by_role("button", name="Execute").click()

            answer_row = operation.locator(".live-responses-table tr.response")
            status = answer_row.locator(".response-col_status")
            expect(status).not_to_be_empty(timeout=ANSWER_TIMEOUT_MS)
            visit.status = status.inner_text().strip()
            body = answer_row.locator(".response-col_description pre.microlight").first
            visit.answer = json.loads(body.inner_text())
            visit.answer_text = answer_row.inner_text()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=visit.screenshot, full_page=True)
        finally:
            context.close()
    return visit


def test_api_page_classifies_its_example_flower(classify_in_browser: PageVisit) -> None:
    visit = classify_in_browser
    assert visit.example == SEED_FLOWER, "the page should offer the documented example"
    assert visit.status == "200", f"the page showed {visit.status}: {visit.answer}"
    assert visit.answer["class"] == "setosa"
    assert visit.answer["probabilities"]["setosa"] == pytest.approx(
        visit.answer["probability"], abs=0.01
    )
    assert any(url.endswith("/iris/classify_iris") for url in visit.requests)
    assert "x-served-by: live-replica-1" in visit.answer_text.lower()


def test_api_page_loads_nothing_from_other_hosts(classify_in_browser: PageVisit) -> None:
    assert classify_in_browser.refused == [], (
        "the page asked hosts other than the service for "
        f"{classify_in_browser.refused}; it must work with no network beyond the service"
    )
