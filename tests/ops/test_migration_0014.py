"""Migration 0014 on a database with data: creators and trial ends filled in from what is
there, and nothing lost on the way down (a batch copy of `organizations` on SQLite would
cascade-delete its memberships)."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from atelier.ops import migrations
from tests.own_database import own_database

CREATED = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

organizations = sa.table(
    "organizations",
    sa.column("id"),
    sa.column("name"),
    sa.column("plan_id"),
    sa.column("is_personal"),
    sa.column("trial_ends_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("created_by"),
)
memberships = sa.table(
    "memberships",
    sa.column("org_id"),
    sa.column("user_id"),
    sa.column("role"),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
audit_events = sa.table(
    "audit_events",
    sa.column("id"),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("org_id"),
    sa.column("actor_user_id"),
    sa.column("action"),
    sa.column("outcome"),
    sa.column("target_type"),
    sa.column("target_id"),
    sa.column("details", sa.JSON),
)


@pytest.fixture
async def engine(tmp_path):
    async with own_database(tmp_path, "m0014") as engine:
        await migrations.upgrade(engine, "0013")
        yield engine


async def _seed(connection) -> None:
    for user_id in ("usr_ann", "usr_ben"):
        await connection.execute(
            sa.text(
                "INSERT INTO users (id, email, display_name, locale, is_active, is_superadmin,"
                " created_at) VALUES (:id, :email, :id, 'en', true, false, :at)"
            ),
            {"id": user_id, "email": f"{user_id}@example.com", "at": CREATED},
        )
    orgs = [
        ("org_home", "trial", True, CREATED + timedelta(days=14)),  # a personal one: has an end
        ("org_team", "trial", False, None),  # made by POST /orgs: no end until now
        ("org_paid", "pro", False, None),
    ]
    for org_id, plan_id, personal, ends in orgs:
        await connection.execute(
            organizations.insert().values(
                id=org_id,
                name=org_id,
                plan_id=plan_id,
                is_personal=personal,
                trial_ends_at=ends,
                created_at=CREATED,
            )
        )
    for org_id, user_id in (
        ("org_home", "usr_ann"),
        ("org_team", "usr_ben"),
        ("org_paid", "usr_ann"),
    ):
        await connection.execute(
            memberships.insert().values(
                org_id=org_id, user_id=user_id, role="owner", created_at=CREATED
            )
        )
    events = [
        ("evt_1", "user.registered", "org_home", "usr_ann", "user", "usr_ann"),
        ("evt_2", "org.created", "org_team", "usr_ann", "org", "org_team"),  # since handed over
    ]
    for event_id, action, org_id, actor, target_type, target_id in events:
        await connection.execute(
            audit_events.insert().values(
                id=event_id,
                created_at=CREATED,
                org_id=org_id,
                actor_user_id=actor,
                action=action,
                outcome="success",
                target_type=target_type,
                target_id=target_id,
                details={},
            )
        )


async def test_0014_fills_in_creators_and_trial_ends_and_loses_nothing_going_down(engine):
    async with engine.begin() as connection:
        await _seed(connection)

    await migrations.upgrade(engine, "0014")
    async with engine.connect() as connection:
        rows = {
            row.id: row
            for row in await connection.execute(
                sa.select(
                    organizations.c.id, organizations.c.created_by, organizations.c.trial_ends_at
                )
            )
        }
        limits = dict(
            (await connection.execute(sa.text("SELECT id, max_orgs_owned FROM plans"))).all()
        )
    assert {org_id: row.created_by for org_id, row in rows.items()} == {
        "org_home": "usr_ann",
        "org_team": "usr_ann",
        "org_paid": None,  # nothing in the audit log says
    }
    ends = {org_id: _utc(row.trial_ends_at) for org_id, row in rows.items()}
    assert ends == {
        "org_home": CREATED + timedelta(days=14),  # kept
        "org_team": CREATED + timedelta(days=14),  # created_at + the trial plan's 14 days
        "org_paid": None,  # no trial
    }
    assert limits == {"trial": 2, "free": 1, "pro": 10, "enterprise": None}

    await migrations.downgrade(engine, "0013")
    async with engine.connect() as connection:
        kept = await connection.scalar(sa.text("SELECT count(*) FROM memberships"))
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("organizations")}
        )
    assert kept == 3
    assert "created_by" not in columns
    await migrations.upgrade(engine, "head")


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they are stored in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
