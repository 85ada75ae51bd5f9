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


def _sign_up(page, url: str, name: str, email: str) -> None:
    page.fill("input[name=display_name]", name)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/signup'] button[type=submit]")


def test_an_owner_creates_an_organization_and_invites_a_member_who_joins(
    browser, page, start_server
):
    server = start_server("up")
    owner_email, guest_email = unique_email("owner"), unique_email("guest")
    page.goto(server.url + "/signup")
    _sign_up(page, server.url, "Owner", owner_email)
    page.click("[data-nav=members]")
    page.fill("form[action='/settings/members/orgs'] input[name=name]", "Studio Lyon")
    page.click("[data-action=create-org]")
    expect(page.locator("select[name=org_id] option[selected]")).to_have_text("Studio Lyon")
    page.fill("form[action='/settings/members/invite'] input[name=email]", guest_email)
    page.click("form[action='/settings/members/invite'] button[type=submit]")
    link = page.locator("[data-invitation-link] input").input_value()
    path = link.split("://", 1)[1].split("/", 1)[1]

    guest_context = browser.new_context(locale="en-US")
    guest = guest_context.new_page()
    try:
        guest.goto(f"{server.url}/{path}")
        expect(guest.locator("h1")).to_have_text("Join Studio Lyon")
        guest.click("a[href^='/signup']")
        _sign_up(guest, server.url, "Guest", guest_email)
        guest.click("[data-action=accept]")
        expect(guest.locator(f'[data-member="{guest_email}"]')).to_be_visible()
        expect(guest.locator(f'[data-member="{owner_email}"]')).to_be_visible()
    finally:
        guest_context.close()
    page.goto(server.url + "/settings/members")
    expect(page.locator(f'[data-member="{guest_email}"]')).to_be_visible()
    assert page.problems == []
