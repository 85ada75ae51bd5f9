"""Submitting, reading and cancelling jobs. No HTTP here; the router and the CLI call these."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atelier.core.db import in_unit_of_work, transaction
from atelier.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
)
from atelier.core.ids import new_id
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal
from atelier.core.tenancy import get_owned, org_select
from atelier.jobs import metrics
from atelier.jobs import statements as sql
from atelier.jobs.dispatch import Admission, Dispatcher
from atelier.jobs.executor import Delivery
from atelier.jobs.models import (
    ACTIVE,
    CANCELLED,
    QUEUED,
    RUNNING,
    TERMINAL,
    Job,
    JobLogLine,
)
from atelier.jobs.registry import JobKind
from atelier.plans import service as plans

# Without a plan limit, an organization may still keep only this many jobs waiting.
DEFAULT_MAX_WAITING = 1000


class IdempotencyKeyReused(Conflict):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused"


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier job with the same Idempotency-Key


async def submit(
    session: AsyncSession,
    dispatcher: Dispatcher,
    kind: JobKind,
    payload: BaseModel | dict[str, Any],
    *,
    org_id: str,
    created_by: str | None,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store a job and dispatch it now if its organization and queue have room.

    Call inside the caller's `transaction(session)` when the job belongs with other writes (its
    data): the row commits with them, and is handed to the executor only after the commit.
    """
    clock = dispatcher.clock
    data = _validate(kind, payload).model_dump(mode="json")
    period = plans.period_of(clock)
    values = _new_job(kind, data, org_id, created_by, idempotency_key, clock.now())
    fast = {f"p_{name}": value for name, value in values.items()} | {
        "p_period": period,
        "p_window": dispatcher.window_of(kind.queue),
    }
    queue = kind.queue
    delivery = Delivery(values["id"], queue, values["timeout_seconds"])
    tried_fast = False
    if (
        dispatcher.statements is not None
        and idempotency_key is None
        and not in_unit_of_work(session)
    ):
        # A job on its own (no data of the caller's to commit with it): one autocommit round
        # trip, on the dispatcher's connection; a second, to a busy queue.
        tried_fast = True
        if (
            queue not in dispatcher.contended
            and await dispatcher.statements.one_or_none(sql.INSERT_IF_FREE, fast) is not None
        ):
            submitted = Submitted(Job(**values), created=True)
            metrics.record_submitted(kind.name)
            # Handed over last: the publisher thread needs the interpreter lock, which this
            # thread holds until it next waits, so whatever is done after posting delays it.
            await dispatcher.handed_over([delivery])
            return submitted
        waiting = fast | {"p_dispatched_at": None, "p_cap": DEFAULT_MAX_WAITING}
        if await dispatcher.statements.one_or_none(sql.INSERT_WAITING, waiting) is not None:
            dispatcher.contended.add(queue)  # until a submit finds the window empty
            await dispatcher.settle(queue)
            metrics.record_submitted(kind.name)
            return Submitted(Job(**(values | {"dispatched_at": None})), created=True)
    async with transaction(session):
        if idempotency_key is not None:
            earlier = await by_idempotency_key(session, org_id, idempotency_key)
            if earlier is not None:
                return Submitted(_same_request(earlier, values["request_hash"]), created=False)
        # Core statements on the session's connection: this is the hot path of every job, the
        # ORM's unit of work is not needed for one row.
        connection = await session.connection()
        try:
            inserted = (
                not tried_fast
                and queue not in dispatcher.contended
                and (await connection.execute(sql.INSERT_IF_FREE, fast)).first()
            )
            if not inserted:
                if not await _admit(session, dispatcher, org_id, queue, period):
                    values["dispatched_at"] = None
                await connection.execute(sql.INSERT, values)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # Another request with the same key won the race; answer with its job.
            raise IdempotencyRace from None
        if values["dispatched_at"] is not None:
            dispatcher.hand_over(session, [delivery])
    metrics.record_submitted(kind.name)
    return Submitted(Job(**values), created=True)


def _new_job(
    kind: JobKind,
    data: dict[str, Any],
    org_id: str,
    created_by: str | None,
    idempotency_key: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A new job's row, dispatched at `now` (the submit clears that if it must wait)."""
    return {
        "id": new_id("job"),
        "org_id": org_id,
        "created_by": created_by,
        "kind": kind.name,
        "queue": kind.queue,
        "payload": data,
        "status": QUEUED,
        "progress": 0.0,
        "attempt": 0,
        "max_attempts": kind.max_attempts,
        "timeout_seconds": int(kind.timeout.total_seconds()),
        "idempotency_key": idempotency_key,
        "request_hash": _request_hash(kind.name, data),
        "compute_seconds": 0.0,
        "revision": 0,
        "created_at": now,
        "dispatched_at": now,
    }


async def _admit(
    session: AsyncSession, dispatcher: Dispatcher, org_id: str, queue: str, period: str
) -> bool:
    """Whether a job the one-statement insert did not take is dispatched at once (True) or
    waits for a slot (False); raises where it may not be accepted at all.

    Without a concurrent-jobs limit and with room in the queue's window, the job goes at once,
    without the queue's lock: concurrent submits may then overfill the window by a few, which
    only a soft bound suffers. Any other decision is taken under the lock, so it cannot miss a
    slot freed meanwhile (a job left waiting with nothing to release it). Where the last submit
    to this queue had to wait, this one likely waits too: its organization's waiting jobs are
    counted (for the cap, a soft bound) before the lock, so the lock is not held through the
    count, and the lock is taken before deciding.
    """
    waiting = None
    if queue in dispatcher.contended:
        waiting = await dispatcher.org_waiting(session, org_id, DEFAULT_MAX_WAITING)
    locked = waiting is not None and await dispatcher.lock_queue(session, queue)
    facts = await dispatcher.admission(session, org_id, queue, period)
    if facts is None:
        raise NotFound(f"No organization {org_id}")
    _check_compute_quota(facts)
    lock_free = facts.max_concurrent is None and _queue_room(facts, dispatcher, queue)
    if not locked and not lock_free and await dispatcher.lock_queue(session, queue):
        facts = await dispatcher.admission(session, org_id, queue, period)
        assert facts is not None
    org_room = facts.max_concurrent is None or facts.org_in_flight < facts.max_concurrent
    if org_room and _queue_room(facts, dispatcher, queue):
        dispatcher.contended.discard(queue)
        return True
    dispatcher.contended.add(queue)
    max_waiting = facts.max_waiting or DEFAULT_MAX_WAITING
    if waiting is None:
        waiting = await dispatcher.org_waiting(session, org_id, DEFAULT_MAX_WAITING)
    if waiting >= max_waiting:
        raise TooManyRequests(
            f"{waiting} jobs of this organization are already waiting for a slot; "
            "try again when some have started",
            retry_after=30,
            waiting=waiting,
            limit=max_waiting,
        )
    return False


def _queue_room(facts: Admission, dispatcher: Dispatcher, queue: str) -> bool:
    return facts.queue_handed_over < dispatcher.window_of(queue) and not facts.queue_has_waiting


def _check_compute_quota(facts: Admission) -> None:
    limit = facts.monthly_compute_seconds
    if limit is not None and facts.compute_used + 1 > limit:
        raise QuotaExceeded(
            f"The {facts.plan_name} plan allows {limit} compute_seconds a month; "
            f"{facts.compute_used} used so far",
            meter="compute_seconds",
            limit=limit,
            used=facts.compute_used,
        )


class IdempotencyRace(Exception):
    """Two requests with one Idempotency-Key at once; the loser reads the winner's job."""


async def submit_idempotent(
    session: AsyncSession, dispatcher: Dispatcher, kind: JobKind, payload: Any, **kwargs: Any
) -> Submitted:
    """`submit`, answering a concurrent duplicate with the job its twin created."""
    try:
        return await submit(session, dispatcher, kind, payload, **kwargs)
    except IdempotencyRace:
        earlier = await by_idempotency_key(session, kwargs["org_id"], kwargs["idempotency_key"])
        if earlier is None:  # pragma: no cover - the unique index says it exists
            raise
        data = _validate(kind, payload).model_dump(mode="json")
        return Submitted(_same_request(earlier, _request_hash(kind.name, data)), created=False)


def _validate(kind: JobKind, payload: BaseModel | dict[str, Any]) -> BaseModel:
    if isinstance(payload, kind.payload):
        return payload
    try:
        return kind.payload.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput(
            f"Invalid payload for {kind.name}",
            errors=[
                {
                    "pointer": "/payload/" + "/".join(str(p) for p in error["loc"]),
                    "detail": error["msg"],
                }
                for error in exc.errors()
            ],
        ) from None


def _request_hash(kind: str, data: dict[str, Any]) -> str:
    canonical = json.dumps([kind, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def by_idempotency_key(session: AsyncSession, org_id: str, key: str) -> Job | None:
    return await session.scalar(select(Job).where(Job.org_id == org_id, Job.idempotency_key == key))


def _same_request(job: Job, request_hash: str) -> Job:
    if job.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different request", job_id=job.id
        )
    return job


# ---- reading -------------------------------------------------------------------------------


async def get(session: AsyncSession, principal: Principal, job_id: str) -> Job:
    return await get_owned(session, Job, principal, job_id, what="job")


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    page: PageRequest,
    *,
    status: str | None = None,
    kind: str | None = None,
) -> Page[Job]:
    """The organization's jobs, newest first."""
    query = org_select(Job, principal)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return await paginate(session, query.order_by(Job.created_at.desc(), Job.id.desc()), page)


def all_jobs_query(
    *, status: str | None = None, kind: str | None = None, org_id: str | None = None
) -> Select[tuple[Job]]:
    """Every organization's jobs, newest first (operators)."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if org_id is not None:
        query = query.where(Job.org_id == org_id)
    return query.order_by(Job.created_at.desc(), Job.id.desc())


async def log_lines(
    session: AsyncSession, job_id: str, *, after: int = 0, limit: int = 500
) -> list[JobLogLine]:
    return list(
        await session.scalars(
            select(JobLogLine)
            .where(JobLogLine.job_id == job_id, JobLogLine.id > after)
            .order_by(JobLogLine.id)
            .limit(limit)
        )
    )


async def follow(
    sessionmaker: async_sessionmaker[AsyncSession],
    job_id: str,
    *,
    after: tuple[int, int] = (-1, 0),
    poll: float,
    keepalive: float,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[tuple[str, Job | JobLogLine | None, str]]:
    """What happens to a job until it ends, for an event stream (check access first).

    Yields `("log", line, id)` for each new log line, `("job", job, id)` whenever the job's
    revision moves, `("end", job, id)` once it has ended, and `("keep-alive", None, "")` after
    `keepalive` quiet seconds. `id` is "revision:line", what to pass back as `after` to resume
    without repeats. Each look opens a short session of its own, so a long stream holds no
    database connection; it stops when the job is gone (deleted with its organization) or when
    `disconnected()` says nobody is listening.
    """
    last_revision, last_line = after
    idle = 0.0
    while True:
        async with sessionmaker() as session:
            job = await session.get(Job, job_id)
            if job is None:
                return
            lines = await log_lines(session, job_id, after=last_line)
        sent = False
        for line in lines:
            last_line = line.id
            yield "log", line, f"{last_revision}:{last_line}"
            sent = True
        if job.revision != last_revision:
            last_revision = job.revision
            yield "job", job, f"{last_revision}:{last_line}"
            sent = True
        if job.status in TERMINAL:
            yield "end", job, f"{last_revision}:{last_line}"
            return
        idle = 0.0 if sent else idle + poll
        if idle >= keepalive:
            idle = 0.0
            yield "keep-alive", None, ""
        if await disconnected():
            return
        await asyncio.sleep(poll)


async def load(session: AsyncSession) -> list[tuple[str, str, int]]:
    """`(queue, state, count)` of active jobs, state being waiting, dispatched or running."""
    rows = await session.execute(
        select(Job.queue, Job.status, Job.dispatched_at.is_(None), func.count())
        .where(sql.status_in(Job.status, *ACTIVE))
        .group_by(Job.queue, Job.status, Job.dispatched_at.is_(None))
    )
    out: dict[tuple[str, str], int] = {}
    for queue, status, waiting, count in rows.all():
        name = "running" if status == RUNNING else ("waiting" if waiting else "dispatched")
        out[(queue, name)] = out.get((queue, name), 0) + count
    return [(q, s, c) for (q, s), c in out.items()]


# ---- cancelling ----------------------------------------------------------------------------


async def cancel(
    session: AsyncSession, dispatcher: Dispatcher, principal: Principal, job_id: str
) -> Job:
    """Queued: cancelled now. Running: asked to stop (the handler checks cooperatively)."""
    async with transaction(session):
        job = await get(session, principal, job_id)
        if job.status in TERMINAL:
            raise Conflict(f"Job {job.id} already ended ({job.status})", status_now=job.status)
        return await _cancel(session, dispatcher, job)


async def _cancel(session: AsyncSession, dispatcher: Dispatcher, job: Job) -> Job:
    now = dispatcher.clock.now()
    stopped = await session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == QUEUED)
        .values(status=CANCELLED, finished_at=now, revision=Job.revision + 1)
        .returning(Job.id)
    )
    if stopped.one_or_none() is not None:
        metrics.record_finished(job.kind, CANCELLED, None)
        await dispatcher.release(session)
    else:
        await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == RUNNING, Job.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, revision=Job.revision + 1)
        )
    await session.refresh(job)
    return job


async def cancel_by_id(session: AsyncSession, dispatcher: Dispatcher, job_id: str) -> Job:
    """Operators' cancel (CLI, admin): any organization's job."""
    async with transaction(session):
        job = await session.get(Job, job_id)
        if job is None:
            raise NotFound(f"No job {job_id}")
        if job.status in TERMINAL:
            raise Conflict(f"Job {job.id} already ended ({job.status})", status_now=job.status)
        return await _cancel(session, dispatcher, job)
