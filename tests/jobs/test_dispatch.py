"""Fair dispatch, publishing after commit, and the sweeper, with an executor that only records."""

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from atelier.core.clock import SystemClock
from atelier.core.db import transaction
from atelier.core.errors import TooManyRequests
from atelier.identity.models import Organization
from atelier.jobs import service
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.executor import Delivery
from atelier.jobs.models import Job
from atelier.jobs.registry import QUEUES, registry
from atelier.plans.models import Plan
from atelier.workers import build_runtime
from tests.identity.factories import make_user, personal_org_id
from tests.jobs import kinds  # noqa: F401 - registers the test kinds

NOOP = registry.kinds["test.noop"]
MINUTE = timedelta(minutes=1)


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[Delivery] = []
        self.broken = False

    async def deliver(self, deliveries: list[Delivery]) -> None:
        if self.broken:
            raise ConnectionError("broker down")
        self.delivered += deliveries

    async def ping(self) -> str:
        return "recorder"

    async def close(self) -> None:
        return None

    def ids(self) -> list[str]:
        return [d.job_id for d in self.delivered]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def dispatcher(db_sessionmaker, recorder) -> Dispatcher:
    return Dispatcher(db_sessionmaker, recorder, clock=SystemClock(), window=2)


async def org_on(db_session, plan_id: str) -> str:
    user = await make_user(db_session)
    org_id = await personal_org_id(db_session, user)
    await db_session.execute(
        update(Organization).where(Organization.id == org_id).values(plan_id=plan_id)
    )
    await db_session.commit()
    return org_id


async def submit(db_session, dispatcher, org_id, **kwargs):
    result = await service.submit(
        db_session, dispatcher, NOOP, {}, org_id=org_id, created_by=None, **kwargs
    )
    return result.job


async def reload(db_session, job) -> Job:
    return await db_session.get(Job, job.id, populate_existing=True)


async def set_status(db_session, job_ids, status):
    await db_session.execute(update(Job).where(Job.id.in_(job_ids)).values(status=status))
    await db_session.commit()


async def release(db_session, dispatcher):
    async with transaction(db_session):
        return await dispatcher.release(db_session)


async def test_a_job_is_handed_over_only_after_its_transaction_commits(
    db_session, dispatcher, recorder
):
    org_id = await org_on(db_session, "pro")
    with pytest.raises(RuntimeError):
        async with transaction(db_session):
            await submit(db_session, dispatcher, org_id)
            assert recorder.delivered == []
            raise RuntimeError("the caller's other write failed")
    assert recorder.delivered == []
    assert (await db_session.scalars(select(Job).where(Job.org_id == org_id))).all() == []
    job = await submit(db_session, dispatcher, org_id)
    assert recorder.ids() == [job.id]


async def test_jobs_over_the_concurrent_limit_wait_for_a_slot(
    db_session, db_sessionmaker, recorder
):
    dispatcher = Dispatcher(db_sessionmaker, recorder, clock=SystemClock(), window=10)
    org_id = await org_on(db_session, "trial")  # 2 concurrent jobs
    jobs = [await submit(db_session, dispatcher, org_id) for _ in range(3)]
    assert recorder.ids() == [jobs[0].id, jobs[1].id]
    assert jobs[2].dispatched_at is None
    await set_status(db_session, [jobs[0].id], "running")
    assert await release(db_session, dispatcher) == []  # still two in flight
    await set_status(db_session, [jobs[0].id], "succeeded")
    released = await release(db_session, dispatcher)
    assert [d.job_id for d in released] == [jobs[2].id]
    assert recorder.ids()[-1] == jobs[2].id


async def test_a_queue_of_long_jobs_has_its_own_window(db_session, db_sessionmaker, recorder):
    dispatcher = Dispatcher(
        db_sessionmaker, recorder, clock=SystemClock(), window=10, windows={"ml": 1}
    )
    org_id = await org_on(db_session, "enterprise")  # no concurrent-jobs limit
    heavy = registry.kinds["test.heavy"]
    jobs = [
        (
            await service.submit(db_session, dispatcher, heavy, {}, org_id=org_id, created_by=None)
        ).job
        for _ in range(2)
    ]
    short = await submit(db_session, dispatcher, org_id)
    assert recorder.ids() == [jobs[0].id, short.id]  # the second ml job waits; default has room
    await set_status(db_session, [jobs[0].id], "running")
    assert [d.job_id for d in await release(db_session, dispatcher)] == [jobs[1].id]


async def test_the_heavy_queues_take_their_window_from_settings(make_settings, engine, recorder):
    settings = make_settings(jobs={"dispatch_window": 20, "dispatch_window_heavy": 3})
    runtime = build_runtime(settings, recorder, engine=engine)
    windows = {queue: runtime.dispatcher.window_of(queue) for queue in QUEUES}
    assert windows == {"default": 20, "ml": 3, "media": 20, "gpu": 3}


async def test_too_many_waiting_jobs_are_refused_with_429(db_session, dispatcher):
    org_id = await org_on(db_session, "trial")
    await db_session.execute(
        update(Plan).where(Plan.id == "trial").values(max_concurrent_jobs=1, max_waiting_jobs=2)
    )
    await db_session.commit()
    for _ in range(3):  # one dispatched, two waiting
        await submit(db_session, dispatcher, org_id)
    with pytest.raises(TooManyRequests) as refused:
        await submit(db_session, dispatcher, org_id)
    assert refused.value.headers["Retry-After"]
    assert refused.value.extra == {"waiting": 2, "limit": 2}
    count = len((await db_session.scalars(select(Job).where(Job.org_id == org_id))).all())
    assert count == 3


async def test_a_flooding_organization_does_not_starve_another(db_session, dispatcher, recorder):
    flooder = await org_on(db_session, "enterprise")  # no concurrency limit
    flood = [await submit(db_session, dispatcher, flooder) for _ in range(10)]
    assert recorder.ids() == [flood[0].id, flood[1].id]  # the window of 2 is full
    other = await org_on(db_session, "trial")
    late = await submit(db_session, dispatcher, other)
    assert late.dispatched_at is None
    # The two handed-over jobs start: two window slots free up. The organization with fewer
    # jobs in flight goes first, whatever the queue order.
    await set_status(db_session, [flood[0].id, flood[1].id], "running")
    released = {d.job_id for d in await release(db_session, dispatcher)}
    assert released == {late.id, flood[2].id}  # ahead of seven older flood jobs


async def test_higher_plan_priority_goes_first_among_equals(db_session, dispatcher, recorder):
    blocker = await org_on(db_session, "enterprise")
    first = [await submit(db_session, dispatcher, blocker) for _ in range(2)]
    trial_org = await org_on(db_session, "trial")
    pro_org = await org_on(db_session, "pro")
    trial_job = await submit(db_session, dispatcher, trial_org)
    pro_job = await submit(db_session, dispatcher, pro_org)
    await set_status(db_session, [j.id for j in first], "succeeded")
    dispatcher.window = 1  # one slot: who gets it?
    released = [d.job_id for d in await release(db_session, dispatcher)]
    assert released == [pro_job.id]
    await set_status(db_session, [pro_job.id], "running")  # its window slot frees up
    released = [d.job_id for d in await release(db_session, dispatcher)]
    assert released == [trial_job.id]


async def test_a_release_takes_each_organizations_first_due_jobs(db_session, dispatcher):
    """On PostgreSQL the release walks the organizations with waiting jobs one by one and reads
    each one's first jobs only: an organization whose jobs are not due yet (a retry's backoff)
    is passed over, wherever it falls in that walk, and the others' jobs go round-robin."""
    dispatcher.window = 0  # everything submitted waits
    backing_off, busy, light = [await org_on(db_session, "enterprise") for _ in range(3)]
    counts = {backing_off: 3, busy: 3, light: 1}
    waiting = {
        org: [await submit(db_session, dispatcher, org) for _ in range(n)]
        for org, n in counts.items()
    }
    await db_session.execute(
        update(Job)
        .where(Job.id.in_([job.id for job in waiting[backing_off]]))
        .values(not_before=SystemClock().now() + MINUTE)
    )
    await db_session.commit()
    dispatcher.window = 3
    released = {d.job_id for d in await release(db_session, dispatcher)}
    # By their organization's load once started: busy's 1, 2, 3 and light's 1.
    first, second, _ = waiting[busy]
    assert released == {first.id, waiting[light][0].id, second.id}


async def test_a_failed_hand_over_leaves_the_job_waiting_for_the_sweeper(
    db_session, dispatcher, recorder
):
    org_id = await org_on(db_session, "pro")
    recorder.broken = True
    job = await submit(db_session, dispatcher, org_id)  # accepted: the broker is not needed
    job = await reload(db_session, job)
    assert job.status == "queued"
    assert job.dispatched_at is None
    recorder.broken = False
    counts = await dispatcher.sweep(stale_after=MINUTE, redispatch_after=MINUTE)
    assert counts["released"] == 1
    assert recorder.ids() == [job.id]


async def test_the_sweeper_recovers_silent_runs(db_session, dispatcher, recorder):
    org_id = await org_on(db_session, "enterprise")
    jobs = [await submit(db_session, dispatcher, org_id) for _ in range(2)]
    long_ago = SystemClock().now() - timedelta(minutes=5)
    await db_session.execute(
        update(Job)
        .where(Job.id.in_([j.id for j in jobs]))
        .values(status="running", heartbeat_at=long_ago, attempt=1)
    )
    await db_session.execute(update(Job).where(Job.id == jobs[1].id).values(max_attempts=1))
    await db_session.commit()
    recorder.delivered.clear()
    counts = await dispatcher.sweep(stale_after=MINUTE, redispatch_after=MINUTE)
    assert counts["requeued"] == 1
    assert counts["failed"] == 1
    jobs = [await reload(db_session, job) for job in jobs]
    assert jobs[0].status == "queued"
    assert recorder.ids() == [jobs[0].id]  # queued again, and handed over again
    assert jobs[1].status == "failed"
    assert jobs[1].error["type"] == "/problems/worker-lost"


async def test_a_silent_run_that_was_asked_to_stop_ends_cancelled(db_session, dispatcher):
    org_id = await org_on(db_session, "pro")
    job = await submit(db_session, dispatcher, org_id)
    now = SystemClock().now()
    await db_session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(status="running", heartbeat_at=now - timedelta(minutes=5), cancel_requested_at=now)
    )
    await db_session.commit()
    await dispatcher.sweep(stale_after=MINUTE, redispatch_after=MINUTE)
    assert (await reload(db_session, job)).status == "cancelled"


async def test_the_sweeper_hands_over_again_what_the_broker_lost(db_session, dispatcher, recorder):
    org_id = await org_on(db_session, "pro")
    job = await submit(db_session, dispatcher, org_id)
    await db_session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(dispatched_at=SystemClock().now() - timedelta(minutes=10))
    )
    await db_session.commit()
    counts = await dispatcher.sweep(stale_after=MINUTE, redispatch_after=MINUTE)
    assert counts["redelivered"] == 1
    assert recorder.ids() == [job.id, job.id]


async def test_a_restart_redoes_every_run_and_delivery(db_session, dispatcher, recorder):
    org_id = await org_on(db_session, "enterprise")
    running, handed_over = [await submit(db_session, dispatcher, org_id) for _ in range(2)]
    await db_session.execute(
        update(Job).where(Job.id == running.id).values(status="running", attempt=1)
    )
    await db_session.commit()
    recorder.delivered.clear()
    counts = await dispatcher.recover_after_restart()
    assert counts == {"requeued": 1, "failed": 0, "redelivered": 1, "released": 2}
    assert sorted(recorder.ids()) == sorted([running.id, handed_over.id])
