"""A job submitted on its own, outside any unit of work, is one autocommit statement on the
dispatcher's connection (PostgreSQL). That connection cannot join a test's transaction, so
these tests commit for real, in a database of their own, made and dropped here."""

import asyncio
import os
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, select, update

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core.clock import FixedClock
from atelier.core.db import create_sessionmaker, transaction
from atelier.core.errors import QuotaExceeded, TooManyRequests
from atelier.identity.models import Organization
from atelier.jobs import service
from atelier.jobs import statements as sql
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.models import Job
from atelier.jobs.registry import registry
from atelier.jobs.runtime import Runtime
from atelier.ops import migrations
from atelier.plans import service as plans
from atelier.plans.models import Plan
from atelier.settings import Settings
from tests.identity.factories import make_user, personal_org_id
from tests.jobs.test_dispatch import NOOP, Recorder
from tests.own_database import own_database

URL = os.environ.get("ATELIER_TEST_DATABASE_URL", "")
pytestmark = pytest.mark.skipif(
    not URL.startswith("postgresql"), reason="the one-statement submit is PostgreSQL's"
)
NOW = FixedClock(datetime(2026, 12, 3, 12, tzinfo=UTC))


@pytest.fixture(scope="module")
async def own_engine(tmp_path_factory: pytest.TempPathFactory):
    async with own_database(tmp_path_factory.mktemp("db"), "standalone") as engine:
        await migrations.upgrade(engine, "head")
        yield engine


@pytest.fixture
async def setup(own_engine):
    sessionmaker = create_sessionmaker(own_engine)
    async with sessionmaker() as session:  # each test starts with empty queues, seeded plans
        await session.execute(delete(Job))
        await session.execute(
            update(Plan).where(Plan.id == "enterprise").values(monthly_compute_seconds=None)
        )
        await session.commit()
    recorder = Recorder()
    dispatcher = Dispatcher(sessionmaker, recorder, clock=NOW, window=2, engine=own_engine)
    yield sessionmaker, dispatcher, recorder
    await dispatcher.close()


async def org_on(sessionmaker, plan_id: str) -> str:
    async with sessionmaker() as session:
        user = await make_user(session, email=f"{uuid.uuid4().hex[:10]}@example.com")
        org_id = await personal_org_id(session, user)
        await session.execute(
            update(Organization).where(Organization.id == org_id).values(plan_id=plan_id)
        )
        await session.commit()
    return org_id


async def submit(sessionmaker, dispatcher, org_id):
    async with sessionmaker() as session:
        return (
            await service.submit(session, dispatcher, NOOP, {}, org_id=org_id, created_by=None)
        ).job


async def stored(sessionmaker, org_id) -> list[Job]:
    async with sessionmaker() as session:
        query = select(Job).where(Job.org_id == org_id).order_by(Job.created_at)
        return list(await session.scalars(query))


async def no_general_path(*args, **kwargs):
    raise AssertionError("the submit took the general path")


async def test_a_job_on_its_own_is_stored_and_handed_over_in_one_statement(setup, monkeypatch):
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")  # no concurrent-jobs limit
    monkeypatch.setattr(service, "_admit", no_general_path)
    job = await submit(sessionmaker, dispatcher, org_id)
    assert recorder.ids() == [job.id]
    [row] = await stored(sessionmaker, org_id)  # committed: another session reads it
    assert row.id == job.id
    assert row.status == "queued"
    assert row.dispatched_at is not None


async def test_a_full_window_makes_the_next_job_wait(setup):
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    jobs = [await submit(sessionmaker, dispatcher, org_id) for _ in range(3)]  # window: 2
    assert recorder.ids() == [jobs[0].id, jobs[1].id]
    rows = await stored(sessionmaker, org_id)
    assert [r.dispatched_at is None for r in rows] == [False, False, True]


async def test_the_compute_quota_refuses_a_standalone_submit_and_stores_nothing(setup):
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    async with sessionmaker() as session:  # a plan the one statement applies to, with a quota
        await session.execute(
            update(Plan).where(Plan.id == "enterprise").values(monthly_compute_seconds=100)
        )
        await plans.record(session, org_id, "compute_seconds", 100, clock=NOW)
        await session.commit()
    with pytest.raises(QuotaExceeded) as raised:
        await submit(sessionmaker, dispatcher, org_id)
    assert raised.value.status == 402
    assert await stored(sessionmaker, org_id) == []
    assert recorder.delivered == []


async def test_an_organization_with_a_concurrent_limit_waits_for_its_slots(setup):
    """Its jobs are stored waiting (the one statement for a plan without a limit does not
    apply); one goes at once into an empty queue, the next when a start releases it, and the
    limit holds back the third."""
    sessionmaker, dispatcher, recorder = setup
    dispatcher.window = 10
    org_id = await org_on(sessionmaker, "trial")  # 2 concurrent jobs
    jobs = [await submit(sessionmaker, dispatcher, org_id) for _ in range(3)]
    assert recorder.ids() == [jobs[0].id]
    # The first job starts, and its claim releases (as `Runtime` does).
    async with sessionmaker() as session, transaction(session):
        await session.execute(update(Job).where(Job.id == jobs[0].id).values(status="running"))
        await dispatcher.release(session, NOOP.queue)
    # One more (the fixed clock gives both the same age), not both: that would make three.
    assert len(recorder.ids()) == 2
    assert recorder.ids()[1] in {jobs[1].id, jobs[2].id}
    async with sessionmaker() as session:
        waiting = await session.scalar(
            select(func.count()).where(Job.org_id == org_id, Job.dispatched_at.is_(None))
        )
    assert waiting == 1


async def test_a_submit_to_a_busy_queue_waits_in_one_statement_without_the_lock(setup, monkeypatch):
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    first = [await submit(sessionmaker, dispatcher, org_id) for _ in range(2)]  # window: 2
    monkeypatch.setattr(service, "_admit", no_general_path)
    monkeypatch.setattr(Dispatcher, "lock_queue", no_general_path)
    waiting = [await submit(sessionmaker, dispatcher, org_id) for _ in range(3)]
    assert recorder.ids() == [job.id for job in first]
    assert all(job.dispatched_at is None for job in waiting)
    rows = await stored(sessionmaker, org_id)
    assert [r.id for r in rows if r.dispatched_at is None] == [job.id for job in waiting]


async def test_a_waiting_submit_releases_jobs_when_the_window_has_emptied(setup):
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    jobs = [await submit(sessionmaker, dispatcher, org_id) for _ in range(3)]
    assert len(recorder.ids()) == 2
    async with sessionmaker() as session:  # both handed-over jobs started meanwhile
        await session.execute(
            update(Job).where(Job.id.in_(recorder.ids())).values(status="running")
        )
        await session.commit()
    jobs.append(await submit(sessionmaker, dispatcher, org_id))  # the queue is still busy
    # Both waiting jobs, together (the fixed clock gives them one age: their order is the ids').
    assert len(recorder.ids()) == 4
    assert set(recorder.ids()[2:]) == {jobs[2].id, jobs[3].id}
    assert all(r.dispatched_at is not None for r in await stored(sessionmaker, org_id))


async def test_a_waiting_submit_leaves_releases_to_the_workers_while_jobs_are_handed_over(
    setup,
):
    sessionmaker, dispatcher, recorder = setup
    dispatcher.window = 4
    org_id = await org_on(sessionmaker, "enterprise")
    jobs = [await submit(sessionmaker, dispatcher, org_id) for _ in range(5)]  # the 5th waits

    async def start(*started):
        async with sessionmaker() as session:
            ids = [job.id for job in started]
            await session.execute(update(Job).where(Job.id.in_(ids)).values(status="running"))
            await session.commit()

    await start(*jobs[:3])  # one job still handed over: its claim will release
    jobs.append(await submit(sessionmaker, dispatcher, org_id))
    assert recorder.ids() == [job.id for job in jobs[:4]]
    await start(jobs[3])  # nothing handed over: the submit releases
    jobs.append(await submit(sessionmaker, dispatcher, org_id))
    assert len(recorder.ids()) == 7
    assert set(recorder.ids()[4:]) == {jobs[4].id, jobs[5].id, jobs[6].id}


async def test_the_window_count_waits_for_a_claim_under_way(setup, own_engine):
    """The count after a waiting submit must not see a job that is being claimed as still
    handed over: that claim may not see the new job, and its start would release nothing."""
    sessionmaker, dispatcher, _recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    jobs = [await submit(sessionmaker, dispatcher, org_id) for _ in range(2)]
    async with own_engine.connect() as claimer:
        await claimer.execute(update(Job).where(Job.id == jobs[0].id).values(status="running"))
        counting = asyncio.ensure_future(
            dispatcher.statements.one_or_none(sql.WINDOW_USED, {"p_queue": NOOP.queue})
        )
        await asyncio.sleep(0.3)
        assert not counting.done()  # it waits for the claim's transaction
        await claimer.commit()
    assert (await asyncio.wait_for(counting, 5))[0] == 1


async def test_an_organization_at_its_waiting_cap_is_refused_and_nothing_is_stored(setup):
    sessionmaker, dispatcher, _recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    async with sessionmaker() as session:
        await session.execute(
            update(Plan).where(Plan.id == "enterprise").values(max_waiting_jobs=1)
        )
        await session.commit()
    try:
        [await submit(sessionmaker, dispatcher, org_id) for _ in range(3)]  # 2 handed over, 1 waits
        with pytest.raises(TooManyRequests) as raised:
            await submit(sessionmaker, dispatcher, org_id)
        assert raised.value.status == 429
        assert len(await stored(sessionmaker, org_id)) == 3
    finally:
        async with sessionmaker() as session:
            await session.execute(
                update(Plan).where(Plan.id == "enterprise").values(max_waiting_jobs=None)
            )
            await session.commit()


async def test_a_start_that_read_the_table_before_a_waiting_job_looks_again(
    setup, own_engine, tmp_path, monkeypatch
):
    """The interleaving a lock-free waiting submit allows: a claim reads the table, a job is
    committed waiting and its submit finds the claimed job still handed over (so leaves the
    release to that start), then the claim commits having seen nothing waiting."""
    sessionmaker, dispatcher, recorder = setup
    org_id = await org_on(sessionmaker, "enterprise")
    first = await submit(sessionmaker, dispatcher, org_id)
    runtime = Runtime(
        settings=Settings(_env_file=None),
        engine=own_engine,
        sessionmaker=sessionmaker,
        blobs=LocalBlobStore(tmp_path, secret="s", clock=NOW),
        clock=NOW,
        dispatcher=dispatcher,
        registry=registry,
    )
    arrived = []
    claim = Runtime._claim

    async def claim_then_a_job_arrives_waiting(self, job_id):
        claimed = await claim(self, job_id)
        dispatcher.contended.add(NOOP.queue)
        monkeypatch.setattr(dispatcher, "settle", no_release)  # it saw `first` handed over
        arrived.append(await submit(sessionmaker, dispatcher, org_id))
        return claimed

    async def no_release(queue):
        return None

    monkeypatch.setattr(Runtime, "_claim", claim_then_a_job_arrives_waiting)
    try:
        assert await runtime.run(first.id) == "succeeded"
    finally:
        await runtime.statements.close()
    assert arrived[0].dispatched_at is None  # it was stored waiting
    assert recorder.ids() == [first.id, arrived[0].id]  # and released by the start
