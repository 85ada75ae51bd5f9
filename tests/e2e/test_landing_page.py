"""A real browser (Debian's Chromium, driven by Playwright) against a live `atelier up`."""

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e
expect.set_options(timeout=10_000)


def test_landing_page_in_english_then_french_with_nothing_leaving_the_machine(
    page, start_server, tmp_path
):
    server = start_server("up")
    page.goto(server.url + "/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("Your own AI workshop")
    # htmx (vendored) runs under the CSP and swaps the status fragment in.
    expect(page.locator('#status li[data-check="database"]')).to_have_attribute("data-status", "ok")

    page.click("a[data-lang=fr]")
    # The URL is "/" before and after the switch: wait on the new page's content instead.
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator("h1")).to_have_text("Votre atelier d’IA à vous")
    expect(page.locator('#status li[data-check="database"]')).to_contain_text("Base de données")
    expect(page.locator("a[data-lang=fr]")).to_have_attribute("aria-current", "true")

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
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Atelier")
    expect(page).to_have_title("Atelier API")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()  # the schema loaded
    assert {urlsplit(url).hostname for url in page.requested} == {"127.0.0.1"}
    assert page.problems == []
