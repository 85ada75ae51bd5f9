"""A real browser (Debian's Chromium, driven by Playwright) against a live `atelier up`."""

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser test")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.requested = []
    page.problems = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(msg.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "response",
        lambda response: (
            response.status >= 400 and page.problems.append(f"{response.status} {response.url}")
        ),
    )
    yield page
    context.close()


def test_landing_page_in_english_then_french_with_nothing_leaving_the_machine(
    page, start_server, tmp_path
):
    server = start_server("up")
    page.goto(server.url + "/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Your own AI workshop"
    # htmx (vendored) runs under the CSP and swaps the status fragment in.
    status = page.locator('#status li[data-check="database"]')
    status.wait_for(timeout=10_000)
    assert status.get_attribute("data-status") == "ok"

    page.click("a[data-lang=fr]")
    page.wait_for_url(server.url + "/")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("h1").inner_text() == "Votre atelier d’IA à vous"
    page.locator('#status li[data-check="database"]').wait_for(timeout=10_000)
    assert "Base de données" in page.locator("#status").inner_text()

    shot = tmp_path / "landing-fr.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    artifacts = os.environ.get("ATELIER_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)

    hosts = {urlsplit(url).hostname for url in page.requested}
    assert hosts == {"127.0.0.1"}, page.requested
    assert page.problems == []  # no CSP violation, no script error


def test_api_docs_render_offline(page, start_server):
    server = start_server("up")
    page.goto(server.url + "/docs")
    title = page.locator(".swagger-ui .info .title")
    title.wait_for(timeout=15_000)
    assert "Atelier" in title.inner_text()
    assert {urlsplit(url).hostname for url in page.requested} == {"127.0.0.1"}
    assert page.problems == []
