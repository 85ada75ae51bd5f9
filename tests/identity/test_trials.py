"""Trials that end (issue 17 item 6): `identity.expire_trials` moves organizations whose trial
is over to the plan after trials, once each, audited; the scheduler runs it."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atelier import job_kinds
from atelier.adapters.executors.celery import _beat_schedule
from atelier.audit.models import AuditEvent
from atelier.core.clock import FixedClock
from atelier.core.principal import Principal
from atelier.identity import orgs
from atelier.identity.jobs import EXPIRE_TRIALS
from atelier.identity.models import Organization
from atelier.jobs import scheduler
from tests.identity.factories import make_user, personal_org_id

NOW = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


async def trial_org(session, name: str, *, ends_at: datetime, plan_id: str = "trial"):
    user = await make_user(session, display_name=name)
    org = await session.get(Organization, await personal_org_id(session, user))
    org.plan_id, org.trial_ends_at = plan_id, ends_at
    await session.commit()
    return org


async def expired_events(session) -> list[AuditEvent]:
    return list(
        await session.scalars(select(AuditEvent).where(AuditEvent.action == "org.trial_expired"))
    )


async def test_an_ended_trial_moves_to_free_once_and_is_audited(db_session):
    ended = await trial_org(db_session, "Ended", ends_at=NOW - timedelta(seconds=1))
    running = await trial_org(db_session, "Running", ends_at=NOW + timedelta(days=1))
    paying = await trial_org(db_session, "Paying", ends_at=NOW - timedelta(days=30), plan_id="pro")
    clock = FixedClock(NOW)

    assert await orgs.expire_trials(db_session, plan_after_trial="free", clock=clock) == 1
    for org in (ended, running, paying):
        await db_session.refresh(org)
    assert (ended.plan_id, running.plan_id, paying.plan_id) == ("free", "trial", "pro")
    assert ended.trial_ends_at == NOW - timedelta(seconds=1)  # kept: when it ended
    [event] = await expired_events(db_session)
    assert (event.org_id, event.target_id, event.actor_user_id) == (ended.id, ended.id, None)
    assert event.details == {
        "from": "trial",
        "to": "free",
        "trial_ended_at": (NOW - timedelta(seconds=1)).isoformat(),
    }

    # Idempotent: nothing more to do, nothing more recorded.
    assert await orgs.expire_trials(db_session, plan_after_trial="free", clock=clock) == 0
    assert len(await expired_events(db_session)) == 1

    clock.advance(timedelta(days=1))  # the other trial's last second
    assert await orgs.expire_trials(db_session, plan_after_trial="free", clock=clock) == 1
    await db_session.refresh(running)
    assert running.plan_id == "free"


async def test_more_ended_trials_than_a_batch_all_move(db_session):
    for n in range(5):
        await trial_org(db_session, f"Ended {n}", ends_at=NOW - timedelta(hours=n))
    moved = await orgs.expire_trials(
        db_session, plan_after_trial="free", clock=FixedClock(NOW), batch=2
    )
    assert moved == 5
    assert len(await expired_events(db_session)) == 5


def test_the_task_is_registered_on_the_settings_interval(make_settings):
    registry = job_kinds.load()
    task = registry.periodic_tasks[EXPIRE_TRIALS]
    assert task.interval(make_settings()) == timedelta(minutes=10)
    often = make_settings(auth={"trial_check_seconds": 60})
    assert task.interval(often) == timedelta(seconds=60)
    # `atelier scheduler` (Celery beat) schedules every registered periodic task.
    assert _beat_schedule(often)[EXPIRE_TRIALS]["schedule"] == 60


async def test_the_scheduler_runs_it_with_the_runtimes_clock_and_settings(app, db_session):
    ended = await trial_org(db_session, "Ended", ends_at=NOW - timedelta(minutes=1))
    runtime = app.state.runtime
    runtime.clock = FixedClock(NOW)
    assert await scheduler.run_once(runtime, EXPIRE_TRIALS) == {"expired": 1}
    await db_session.refresh(ended)
    assert ended.plan_id == runtime.settings.auth.plan_after_trial == "free"
    assert await scheduler.run_once(runtime, EXPIRE_TRIALS) == {"expired": 0}


@pytest.mark.parametrize(
    ("ends_in", "left"),
    [
        (timedelta(days=14), 14),
        (timedelta(days=13, hours=1), 14),  # a part day counts as one
        (timedelta(minutes=5), 1),
        (timedelta(0), 0),
        (-timedelta(days=2), 0),  # ended, the task has not run yet
    ],
)
async def test_the_days_left_of_a_trial(db_session, ends_in, left):
    org = await trial_org(db_session, "Counting", ends_at=NOW + ends_in)
    status = await orgs.plan_status(db_session, _member_of(org), clock=FixedClock(NOW))
    assert (status.plan.id, status.trial_days_left) == ("trial", left)


async def test_a_plan_that_is_no_trial_has_no_days_left(db_session):
    org = await trial_org(db_session, "Paying", ends_at=NOW + timedelta(days=3), plan_id="pro")
    status = await orgs.plan_status(db_session, _member_of(org), clock=FixedClock(NOW))
    assert status.trial_days_left is None


def _member_of(org: Organization) -> Principal:
    return Principal(org_id=org.id, role="viewer", user_id="usr_someone")
