"""Signing up, out and in again through the real browser, in French."""

import pytest
from playwright.sync_api import expect

from tests.identity.factories import PASSWORD, unique_email

pytestmark = pytest.mark.e2e
expect.set_options(timeout=10_000)


def test_sign_up_sign_out_and_sign_in_again(page, start_server):
    server = start_server("up")
    page.context.add_cookies([{"name": "atelier_lang", "value": "fr", "url": server.url}])
    email = unique_email("browser")
    page.goto(server.url + "/signup")
    expect(page.locator("h1")).to_have_text("Créez votre compte")
    page.fill("input[name=display_name]", "Camille")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".signed-in")).to_have_text("Camille")
    expect(page.locator("select[name=org_id] option")).to_have_text("Camille's workspace")

    page.click("[data-action=sign-out]")
    expect(page.locator("[data-action=sign-in]")).to_be_visible()

    page.click("[data-action=sign-in]")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "wrong password entirely")
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator(".form-error")).to_have_text("Adresse e-mail ou mot de passe incorrect")
    page.problems.clear()  # the 401 of the refused attempt is expected
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator(".signed-in")).to_have_text("Camille")
    assert page.problems == []
