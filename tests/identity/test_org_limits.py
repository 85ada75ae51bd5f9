"""How many organizations a user may own or create (issue 17 item 6): each new organization
starts a trial, so unlimited creation multiplied every quota."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from atelier.audit.models import AuditEvent
from atelier.core.clock import FixedClock
from atelier.identity.models import Membership, Organization
from atelier.plans.models import Plan
from tests.identity.factories import join, make_user, personal_org_id, sign_in

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock(app) -> FixedClock:
    app.state.clock = FixedClock(NOW)
    return app.state.clock


async def create(client, who, name: str = "Studio"):
    return await client.post("/api/v1/orgs", json={"name": name}, headers=who.headers)


async def orgs_created_by(session, user_id: str) -> int:
    return await session.scalar(
        select(func.count()).select_from(Organization).where(Organization.created_by == user_id)
    )


async def move_to_plan(session, org_id: str, plan_id: str) -> None:
    org = await session.get(Organization, org_id)
    org.plan_id = plan_id
    await session.commit()


async def test_a_new_organizations_trial_ends_after_the_plans_trial_days(client, alice, clock):
    response = await create(client, alice)
    assert response.status_code == 201, response.text
    ends = datetime.fromisoformat(response.json()["trial_ends_at"])
    assert ends == NOW + timedelta(days=14)  # the trial plan's trial_days


async def test_on_a_trial_a_user_owns_two_organizations_and_the_third_is_a_402(
    client, alice, db_session
):
    assert (await create(client, alice, "Second")).status_code == 201
    refused = await create(client, alice, "Third")
    assert refused.status_code == 402
    problem = refused.json()
    assert problem["type"].endswith("/quota-exceeded")
    assert (problem["meter"], problem["limit"], problem["used"]) == ("orgs_owned", 2, 2)
    names = await db_session.scalars(
        select(Organization.name)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == alice.user.id)
    )
    assert "Third" not in set(names)
    events = await db_session.scalars(select(AuditEvent).where(AuditEvent.action == "org.created"))
    assert [e.details["name"] for e in events] == ["Second"]


async def test_a_viewer_whose_own_organization_is_free_creates_none(client, alice, db_session):
    """The issue's case: a viewer elsewhere, on the Free plan at home, used to create as many
    organizations (each a fresh trial) as they liked."""
    dave = await make_user(db_session, display_name="Dave")
    await move_to_plan(db_session, await personal_org_id(db_session, dave), "free")
    await join(db_session, dave, alice.org_id, "viewer")
    as_viewer = await sign_in(client, dave, alice.org_id)
    refused = await create(client, as_viewer)
    assert refused.status_code == 402
    assert (refused.json()["limit"], refused.json()["used"]) == (1, 1)
    assert await orgs_created_by(db_session, dave.id) == 1  # the personal one only


async def test_handing_an_organization_over_frees_no_place(client, alice, db_session):
    """Make someone else owner, step down and leave: the organization still counts against
    the one who created it."""
    bob = await make_user(db_session, display_name="Bob")
    second = (await create(client, alice, "Handed over")).json()
    await join(db_session, bob, second["id"], "owner")
    in_second = await sign_in(client, alice.user, second["id"])
    left = await client.delete(
        f"/api/v1/orgs/{second['id']}/members/{alice.user.id}", headers=in_second.headers
    )
    assert left.status_code == 204
    refused = await create(client, alice, "Again")
    assert refused.status_code == 402
    assert refused.json()["used"] == 2


async def test_the_limit_is_the_highest_among_the_plans_of_owned_organizations(
    client, alice, db_session
):
    pro = await db_session.get(Plan, "pro")
    pro.max_orgs_owned = 3
    await move_to_plan(db_session, alice.org_id, "pro")
    for name in ("Second", "Third"):  # both start on the trial plan (limit 2)
        assert (await create(client, alice, name)).status_code == 201
    refused = await create(client, alice, "Fourth")
    assert (refused.status_code, refused.json()["limit"]) == (402, 3)


async def test_an_unlimited_plan_lifts_the_limit(client, alice, db_session):
    await move_to_plan(db_session, alice.org_id, "enterprise")
    for n in range(4):
        assert (await create(client, alice, f"Team {n}")).status_code == 201


async def test_superadmins_have_no_limit(client, db_session):
    operator = await make_user(db_session, display_name="Operator")
    operator.is_superadmin = True
    await db_session.commit()
    signed = await sign_in(client, operator, await personal_org_id(db_session, operator))
    for n in range(3):
        assert (await create(client, signed, f"Customer {n}")).status_code == 201


async def test_operators_set_a_plans_limit_through_the_plan_api(client, db_session):
    operator = await make_user(db_session, display_name="Operator")
    operator.is_superadmin = True
    await db_session.commit()
    signed = await sign_in(client, operator, await personal_org_id(db_session, operator))
    plans = (await client.get("/api/v1/admin/plans", headers=signed.headers)).json()
    assert {p["id"]: p["max_orgs_owned"] for p in plans} == {
        "trial": 2,
        "free": 1,
        "pro": 10,
        "enterprise": None,
    }
    changed = await client.put(
        "/api/v1/admin/plans/free", json={"max_orgs_owned": 2}, headers=signed.headers
    )
    assert changed.json()["max_orgs_owned"] == 2
