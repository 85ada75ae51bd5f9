"""The SQL of a job's hot path, built once.

Every job is inserted, claimed and finished: building these statements per call (and their
aliases and subqueries) cost more than running them. Here they are constants with bound
parameters, so SQLAlchemy compiles each once and reuses it. Parameters are prefixed `p_` (a bound
parameter may not share a name with a column it sets).
"""

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, text, update
from sqlalchemy.orm import aliased

from atelier.identity.models import Organization
from atelier.jobs.models import QUEUED, RUNNING, SUCCEEDED, Job
from atelier.plans.models import Plan, Usage

jobs = Job.__table__
_other = aliased(Job, name="other")
_this = aliased(Job, name="this_job")

WAITING = and_(Job.status == QUEUED, Job.dispatched_at.is_(None))
IN_FLIGHT = and_(Job.status.in_((QUEUED, RUNNING)), Job.dispatched_at.is_not(None))
HANDED_OVER = and_(Job.status == QUEUED, Job.dispatched_at.is_not(None))

_OTHER_WAITING = and_(_other.status == QUEUED, _other.dispatched_at.is_(None))

# The run's fence: only the attempt that claimed the job may write it.
FENCE = and_(
    Job.id == bindparam("p_job_id"),
    Job.attempt == bindparam("p_attempt"),
    Job.status == RUNNING,
)

# RETURNING may not refer to the updated row from a subquery on SQLite (SQLAlchemy renders its
# columns unqualified there), so the subqueries below are keyed by bound parameters instead.
_this_queue = select(_this.queue).where(_this.id == bindparam("p_job_id")).scalar_subquery()

CLAIM = (
    update(Job)
    .where(
        Job.id == bindparam("p_job_id"),
        Job.status == QUEUED,
        Job.dispatched_at.is_not(None),
        Job.cancel_requested_at.is_(None),
        or_(Job.not_before.is_(None), Job.not_before <= bindparam("p_now")),
    )
    .values(
        status=RUNNING,
        attempt=Job.attempt + 1,
        started_at=bindparam("p_now"),
        heartbeat_at=bindparam("p_now"),
        worker=bindparam("p_worker"),
        revision=Job.revision + 1,
    )
    .returning(
        Job.org_id,
        Job.kind,
        Job.queue,
        Job.payload,
        Job.attempt,
        Job.max_attempts,
        Job.timeout_seconds,
        Job.created_by,
        # Whether to release more jobs into the queue's window, in the same round trip.
        exists().where(_other.queue == _this_queue, _OTHER_WAITING),
        select(func.count())
        .select_from(_other)
        .where(
            _other.queue == _this_queue, _other.status == QUEUED, _other.dispatched_at.is_not(None)
        )
        .scalar_subquery(),
    )
    .execution_options(synchronize_session=False)
)

# Finishing also tells whether the organization (`p_org`) has jobs waiting for the slot it
# frees (only a plan with a concurrent-jobs limit makes them wait for that).
_org_plan = select(Organization.plan_id).where(Organization.id == bindparam("p_org"))
FINISH_RETURNING = and_(
    exists().where(_other.org_id == bindparam("p_org"), _OTHER_WAITING),
    exists().where(Plan.id == _org_plan.scalar_subquery(), Plan.max_concurrent_jobs.is_not(None)),
)

HEARTBEAT = (
    update(Job)
    .where(FENCE)
    .values(heartbeat_at=bindparam("p_now"))
    .returning(Job.cancel_requested_at)
    .execution_options(synchronize_session=False)
)


def count(*conditions):
    return select(func.count()).select_from(Job).where(*conditions).scalar_subquery()


LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")

HANDED_OVER_IN_QUEUE = (
    select(func.count()).select_from(Job).where(Job.queue == bindparam("p_queue"), HANDED_OVER)
)

_json = Job.__table__.c.result.type
_compute = Job.compute_seconds + bindparam("p_seconds")

FINISH = (
    update(Job)
    .where(FENCE)
    .values(
        status=bindparam("p_status"),
        finished_at=bindparam("p_now"),
        result=bindparam("p_result", type_=_json),
        error=bindparam("p_error", type_=_json),
        progress=case((bindparam("p_status") == SUCCEEDED, 1.0), else_=Job.progress),
        compute_seconds=_compute,
        revision=Job.revision + 1,
    )
    .returning(FINISH_RETURNING)
    .execution_options(synchronize_session=False)
)

RETRY = (
    update(Job)
    .where(FENCE)
    .values(
        status=QUEUED,
        dispatched_at=None,
        worker=None,
        not_before=bindparam("p_not_before"),
        error=bindparam("p_error", type_=_json),
        compute_seconds=_compute,
        revision=Job.revision + 1,
    )
    .returning(FINISH_RETURNING)
    .execution_options(synchronize_session=False)
)

ADMISSION = (
    select(
        Plan.name,
        Plan.max_concurrent_jobs,
        Plan.max_waiting_jobs,
        Plan.monthly_compute_seconds,
        func.coalesce(
            select(Usage.amount)
            .where(
                Usage.org_id == bindparam("p_org"),
                Usage.meter == "compute_seconds",
                Usage.period == bindparam("p_period"),
            )
            .scalar_subquery(),
            0,
        ),
        count(Job.org_id == bindparam("p_org"), IN_FLIGHT),
        count(Job.org_id == bindparam("p_org"), WAITING),
        count(Job.queue == bindparam("p_queue"), HANDED_OVER),
        exists().where(Job.queue == bindparam("p_queue"), WAITING),
    )
    .select_from(Organization)
    .join(Plan, Plan.id == Organization.plan_id)
    .where(Organization.id == bindparam("p_org"))
)

INSERT = jobs.insert()
