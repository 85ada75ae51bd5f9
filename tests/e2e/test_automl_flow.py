"""Tabular ML through a real browser against a live `atelier up` (its local job pool trains for
real): upload a table while the progress bar fills, read its profile and charts, start a run
with a 10-second budget (the form fetching the dataset's columns as it is chosen), watch the
run's page fill in live, open the report, register the model twice and promote a version."""

import re

import pytest
from playwright.sync_api import expect

from tests.identity.factories import PASSWORD, unique_email
from tests.web.test_ml_pages import churn_csv

pytestmark = pytest.mark.e2e
expect.set_options(timeout=10_000)

# The page leaves for the profile as soon as the upload is answered, so the bar's highest value
# is noted where it outlives the page: in the tab's session storage.
WATCH_UPLOAD_PROGRESS = """() => {
  const bar = document.querySelector("[data-upload-progress]");
  new MutationObserver(() => {
    const seen = Number(sessionStorage.getItem("upload-progress") || 0);
    sessionStorage.setItem("upload-progress", String(Math.max(seen, Number(bar.value))));
  }).observe(bar, {attributes: true, attributeFilter: ["value"]});
}"""


def test_upload_then_train_live_then_read_the_report(page, start_server, tmp_path):
    server = start_server("up")
    table = tmp_path / "churn.csv"
    table.write_bytes(churn_csv(300))

    page.goto(server.url + "/signup")
    page.fill("input[name=display_name]", "Ada")
    page.fill("input[name=email]", unique_email("automl"))
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/signup'] button[type=submit]")
    expect(page.locator(".signed-in")).to_have_text("Ada")

    page.click("[data-nav=datasets]")
    upload = page.locator("form[data-upload]")
    upload.locator("input[name=name]").fill("Churn")
    upload.locator("input[name=file]").set_input_files(table)
    page.evaluate(WATCH_UPLOAD_PROGRESS)
    upload.locator("button[type=submit]").click()
    expect(page.locator("h1[data-dataset]")).to_have_text("Churn")
    assert page.evaluate("sessionStorage.getItem('upload-progress')") == "100"
    expect(page.locator("article[data-column]")).to_have_count(8)
    expect(page.locator("article[data-column=monthly_fee] svg rect.bar")).to_have_count(20)
    expect(page.locator("article[data-column=plan] svg rect.bar")).to_have_count(3)

    expect(page.locator("[data-action=train]")).to_be_visible()
    page.click("[data-nav=automl]")
    page.click("[data-action=new-run]")
    # A click waits for the navigation to start, not for htmx (a deferred script) to be ready:
    # a choice made before it listens would go unseen.
    page.wait_for_load_state("load")
    page.wait_for_function("window.htmx !== undefined && document.readyState === 'complete'")
    page.select_option("select[name=dataset]", label="Churn")  # htmx brings its columns
    expect(page.locator("select[name=target]")).to_have_value("churned", timeout=30_000)
    page.fill("input[name=budget_seconds]", "10")
    page.click("[data-action=start-run]")
    expect(page).to_have_url(re.compile(r"/automl/runs/run_\w+$"))
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    status = page.locator("[data-run-status]")
    expect(page.locator("[data-leaderboard] tbody tr").first).to_be_visible(timeout=30_000)
    assert status.get_attribute("data-status") == "running"  # rows came in before the end
    expect(status).to_have_attribute("data-status", "succeeded", timeout=60_000)
    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("[data-holdout] tr[data-metric=roc_auc]")).to_be_visible()
    expect(page.locator("progress[aria-label]")).to_have_attribute("value", "100")

    run_page = page.url
    page.click("[data-action=report]")
    expect(page.locator("h1")).to_contain_text("Churn")
    expect(page.locator("h1")).to_contain_text("churned")

    for _ in range(2):
        page.goto(run_page)
        expect(page.locator("#model-name")).to_have_value("churn-churned")
        page.click("[data-action=register-model]")
    expect(page).to_have_url(re.compile(r"/models/churn-churned#v2$"))
    versions = page.locator("tr[data-version]")
    expect(versions).to_have_count(2)
    for number in ("1", "2"):
        row = page.locator(f"tr[data-version='{number}']")
        row.locator("select[name=stage]").select_option("production")
        row.locator("[data-action=set-stage]").click()
        expect(page.locator(f"tr[data-version='{number}']")).to_have_attribute(
            "data-stage", "production"
        )
    expect(page.locator("tr[data-version='1']")).to_have_attribute("data-stage", "archived")
    page.click("[data-nav=models]")
    expect(page.locator("tr[data-model=churn-churned] td").nth(2)).to_have_text("v2")
    assert page.problems == []
