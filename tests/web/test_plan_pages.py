"""The organization's plan and what is left of its trial on the members page, in English and
French, and the organization limit met from the page (issue 17 item 6)."""

from datetime import UTC, datetime, timedelta

import pytest

from atelier.core.clock import FixedClock
from atelier.identity.models import Organization
from tests.identity.factories import join, make_user, personal_org_id
from tests.web.test_account_pages import page_token
from tests.web.test_pages import BROWSER_ACCEPT
from tests.web.test_sign_in_pages import sign_in

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
async def owner(app, client, db_session):
    """A signed-in browser whose personal organization's trial ends in `ends_in`."""
    app.state.clock = FixedClock(NOW)
    user = await make_user(db_session, display_name="Owner")
    org = await db_session.get(Organization, await personal_org_id(db_session, user))
    await sign_in(client, user.email)

    async def trial_ends_in(delta: timedelta, plan_id: str = "trial") -> None:
        org.trial_ends_at, org.plan_id = NOW + delta, plan_id
        await db_session.commit()

    return trial_ends_in


async def members_page(client, **headers) -> str:
    page = await client.get("/settings/members", headers=headers)
    assert page.status_code == 200, page.text
    return page.text


async def test_the_members_page_says_how_many_days_of_trial_remain(client, owner):
    await owner(timedelta(days=3, hours=1))
    text = await members_page(client)
    assert 'data-plan="trial"' in text
    assert "Plan: Trial" in text
    assert 'data-trial-days-left="4"' in text
    assert "Trial: 4 days remain" in text
    await owner(timedelta(hours=5))
    assert "Trial: 1 day remains" in await members_page(client)


async def test_in_french(client, owner):
    await owner(timedelta(days=10))
    text = await members_page(client, **{"Accept-Language": "fr"})
    assert "Formule\u00a0: Trial" in text
    assert "Essai\u00a0: il reste 10 jours" in text
    await owner(timedelta(hours=1))
    assert "Essai\u00a0: il reste 1 jour<" in await members_page(
        client, **{"Accept-Language": "fr"}
    )


async def test_an_ended_trial_says_so_until_the_task_moves_it(client, owner):
    await owner(-timedelta(minutes=1))
    assert "Trial ended" in await members_page(client)
    await owner(-timedelta(minutes=1), plan_id="free")  # what the task does
    text = await members_page(client)
    assert 'data-plan="free"' in text
    assert "Plan: Free" in text
    assert "data-trial-days-left" not in text
    assert "Trial" not in text


async def test_a_viewer_sees_the_plan_too(app, client, db_session):
    app.state.clock = FixedClock(NOW)
    owner = await make_user(db_session, display_name="Owner")
    org_id = await personal_org_id(db_session, owner)
    org = await db_session.get(Organization, org_id)
    org.trial_ends_at = NOW + timedelta(days=2)
    viewer = await make_user(db_session, display_name="Viewer")
    await join(db_session, viewer, org_id, "viewer")
    await sign_in(client, viewer.email)
    _, token = await page_token(client, "/settings/members")
    chosen = await client.post("/session/org", data={"org_id": org_id, "csrf_token": token})
    assert chosen.status_code == 303, chosen.text
    assert "Trial: 2 days remain" in await members_page(client)


async def test_creating_an_organization_past_the_limit_from_the_page_is_refused(client, db_session):
    user = await make_user(db_session, display_name="Creator")
    await sign_in(client, user.email)
    for name, status in (("Second", 303), ("Third", 402)):
        _, token = await page_token(client, "/settings/members")
        response = await client.post(
            "/settings/members/orgs",
            data={"name": name, "csrf_token": token},
            headers={"Accept": BROWSER_ACCEPT},
        )
        assert response.status_code == status, response.text
    assert "Your plan’s limit is reached" in response.text
    assert 'data-status="402"' in response.text
