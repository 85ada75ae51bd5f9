"""The dispatcher's counts reach active jobs through the partial indexes that hold only them
(PostgreSQL), even under the generic plan a prepared statement settles on, and even when an
organization's history is long: they never walk its finished jobs."""

import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, update

from atelier.core.ids import new_id
from atelier.identity.models import Organization
from atelier.jobs import statements as sql
from atelier.jobs.models import QUEUED, RUNNING, SUCCEEDED, Job
from tests.identity.factories import make_user, personal_org_id

pytestmark = pytest.mark.skipif(
    not os.environ.get("ATELIER_TEST_DATABASE_URL", "").startswith("postgresql"),
    reason="partial indexes over active jobs are PostgreSQL's",
)
NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
ACTIVE_ONLY = ("ix_jobs_org_active", "ix_jobs_queue_active", "ix_jobs_waiting_by_org")


async def explain_generic(connection, statement, params: dict) -> str:
    """The plan PostgreSQL uses for `statement` once prepared and planned without its values."""
    compiled = statement.compile(dialect=connection.dialect)
    driver = (await connection.get_raw_connection()).driver_connection
    bound = compiled.construct_params(params)
    values = [bound[name] for name in compiled.positiontup]
    await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    await driver.execute(f"PREPARE counted AS {compiled.string}")
    try:
        literals = ", ".join(_literal(value) for value in values)
        rows = await driver.fetch(f"EXPLAIN EXECUTE counted({literals})")
    finally:
        await driver.execute("DEALLOCATE counted")
    return "\n".join(row[0] for row in rows)


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


@pytest.fixture
async def busy_org(db_session):
    user = await make_user(db_session, email="history@example.com")
    org_id = await personal_org_id(db_session, user)
    history = [
        {
            "id": new_id("job"),
            "org_id": org_id,
            "kind": "system.sleep",
            "queue": "default",
            "payload": {},
            "status": SUCCEEDED,
            "timeout_seconds": 60,
            "created_at": NOW - timedelta(seconds=n),
            "dispatched_at": NOW - timedelta(seconds=n),
        }
        for n in range(1, 400)
    ]
    active = [
        {**history[0], "id": new_id("job"), "status": status, "dispatched_at": dispatched}
        for status, dispatched in [(QUEUED, None), (QUEUED, NOW), (RUNNING, NOW)]
    ]
    await db_session.execute(insert(Job), history + active)
    await db_session.commit()
    return org_id


async def test_counts_of_an_organization_use_its_active_jobs_index(db_session, busy_org):
    connection = await db_session.connection()
    period = {"p_org": busy_org, "p_queue": "default", "p_period": "2026-12", "p_cap": 1000}
    for statement in (sql.ADMISSION, sql.ORG_WAITING):
        plan = await explain_generic(connection, statement, period)
        # Any index over active (or waiting) jobs only will do; which one depends on the
        # table's statistics.
        assert any(name in plan for name in ACTIVE_ONLY), plan
        assert "ix_jobs_org_created" not in plan, plan
        assert "Seq Scan on jobs" not in plan, plan


async def test_a_finish_and_a_queue_count_use_the_active_jobs_indexes(db_session, busy_org):
    connection = await db_session.connection()
    finish = {
        "p_status": SUCCEEDED,
        "p_now": NOW,
        "p_result": None,
        "p_error": None,
        "p_seconds": 0.0,
        "p_job_id": "job_x",
        "p_attempt": 1,
        "p_org": busy_org,
    }
    plan = await explain_generic(connection, sql.FINISH, finish)
    assert "ix_jobs_org_created" not in plan, plan
    assert "Index Cond: ((id)::text = " in plan, plan  # the finished row, by its key
    plan = await explain_generic(connection, sql.HANDED_OVER_IN_QUEUE, {"p_queue": "default"})
    assert any(name in plan for name in ACTIVE_ONLY), plan
    assert "Seq Scan on jobs" not in plan, plan


async def test_a_release_reads_each_organizations_first_waiting_jobs(db_session, busy_org):
    """With statistics (autovacuum's, once a table is in use), a release reaches the waiting
    jobs through the index that orders them by organization and age, a few per organization,
    instead of sorting the queue's whole backlog."""
    others = []
    for n in range(2):
        user = await make_user(db_session, email=f"other{n}@example.com")
        others.append(await personal_org_id(db_session, user))
    backlog = [
        {
            "id": new_id("job"),
            "org_id": busy_org if n % 10 else others[n % 2],
            "kind": "system.sleep",
            "queue": "default",
            "payload": {},
            "status": QUEUED,
            "timeout_seconds": 60,
            "created_at": NOW + timedelta(milliseconds=n),
        }
        for n in range(3000)
    ]
    await db_session.execute(insert(Job), backlog)
    await db_session.execute(  # no concurrent-jobs limit: the window alone bounds the release
        update(Organization)
        .where(Organization.id.in_([busy_org, *others]))
        .values(plan_id="enterprise")
    )
    connection = await db_session.connection()
    await connection.exec_driver_sql("ANALYZE jobs")  # rolled back with the test
    plan = await explain_generic(
        connection, sql.RELEASE_PG, {"p_queue": "default", "p_now": NOW, "p_free": 16}
    )
    assert "ix_jobs_waiting_by_org" in plan, plan
    released = (
        await connection.execute(sql.RELEASE_PG, {"p_queue": "default", "p_now": NOW, "p_free": 16})
    ).all()
    assert len(released) == 16
