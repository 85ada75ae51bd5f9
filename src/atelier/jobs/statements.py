"""The SQL of a job's hot path, built once.

Every job is inserted, claimed and finished: building these statements per call (and their
aliases and subqueries) cost more than running them. Here they are constants with bound
parameters, so SQLAlchemy compiles each once and reuses it. They are Core statements on the
tables, not ORM ones: the ORM's bulk-update machinery (for rows no session holds) cost a
millisecond per job. Parameters are prefixed `p_` (a bound parameter may not share a name with
a column it sets).
"""

from sqlalchemy import (
    Integer,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)

from atelier.identity.models import Organization
from atelier.jobs.models import QUEUED, RUNNING, SUCCEEDED, Job
from atelier.plans.models import Plan, Usage

jobs = Job.__table__
job = jobs.c
_other = jobs.alias("other").c
_this = jobs.alias("this_job").c
_orgs = Organization.__table__.c
_plans = Plan.__table__.c
_usage = Usage.__table__.c


def status_in(column, *statuses: str):
    """`status = 'queued'` (or `IN (...)`) with the statuses written into the SQL, not bound:
    the planner can then use the partial indexes over active jobs (models.ACTIVE_SQL), which
    a bound status, that could be any, rules out of a reusable plan."""
    values = [literal_column(f"'{status}'") for status in statuses]
    return column == values[0] if len(values) == 1 else column.in_(values)


WAITING = and_(status_in(job.status, QUEUED), job.dispatched_at.is_(None))
IN_FLIGHT = and_(status_in(job.status, QUEUED, RUNNING), job.dispatched_at.is_not(None))
HANDED_OVER = and_(status_in(job.status, QUEUED), job.dispatched_at.is_not(None))

_OTHER_WAITING = and_(status_in(_other.status, QUEUED), _other.dispatched_at.is_(None))


def _is(status: str):
    """`status = ...` for a row found by its primary key: written as an expression, so that the
    planner cannot take the status index instead. On a young table (statistics from when it was
    empty) PostgreSQL did, for every finish: it walked every running job's index entries, dead
    ones included, to find one row (auto_explain: 1,998 rows removed by the filter)."""
    return (job.status + "") == status


# The run's fence: only the attempt that claimed the job may write it.
FENCE = and_(
    job.id == bindparam("p_job_id"),
    job.attempt == bindparam("p_attempt"),
    _is(RUNNING),
)

# RETURNING may not refer to the updated row from a subquery on SQLite (SQLAlchemy renders its
# columns unqualified there), so the subqueries below are keyed by bound parameters instead.
_this_queue = select(_this.queue).where(_this.id == bindparam("p_job_id")).scalar_subquery()

CLAIM = (
    update(jobs)
    .where(
        job.id == bindparam("p_job_id"),
        _is(QUEUED),
        job.dispatched_at.is_not(None),
        job.cancel_requested_at.is_(None),
        or_(job.not_before.is_(None), job.not_before <= bindparam("p_now")),
    )
    .values(
        status=RUNNING,
        attempt=job.attempt + 1,
        started_at=bindparam("p_now"),
        heartbeat_at=bindparam("p_now"),
        worker=bindparam("p_worker"),
        revision=job.revision + 1,
    )
    .returning(
        job.org_id,
        job.kind,
        job.queue,
        job.payload,
        job.attempt,
        job.max_attempts,
        job.timeout_seconds,
        job.created_by,
        # Whether to release more jobs into the queue's window, in the same round trip.
        exists().where(_other.queue == _this_queue, _OTHER_WAITING),
        select(func.count())
        .where(
            _other.queue == _this_queue,
            status_in(_other.status, QUEUED),
            _other.dispatched_at.is_not(None),
        )
        .scalar_subquery(),
    )
)

# Finishing also tells whether the organization (`p_org`) has jobs waiting for the slot it
# frees (only a plan with a concurrent-jobs limit makes them wait for that). The plan is
# asked first: without a limit, its waiting jobs are not looked for.
_org_plan = select(_orgs.plan_id).where(_orgs.id == bindparam("p_org"))
FINISH_RETURNING = and_(
    exists().where(
        _plans.id == _org_plan.scalar_subquery(), _plans.max_concurrent_jobs.is_not(None)
    ),
    exists().where(_other.org_id == bindparam("p_org"), _OTHER_WAITING),
)

HEARTBEAT = (
    update(jobs)
    .where(FENCE)
    .values(heartbeat_at=bindparam("p_now"))
    .returning(job.cancel_requested_at)
)


def count(*conditions):
    return select(func.count()).select_from(jobs).where(*conditions).scalar_subquery()


def _compute_used(org_param: str):
    """The organization's compute seconds this month (`p_period`), 0 before any."""
    used = select(_usage.amount).where(
        _usage.org_id == bindparam(org_param),
        _usage.meter == "compute_seconds",
        _usage.period == bindparam("p_period"),
    )
    return func.coalesce(used.scalar_subquery(), 0)


LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")

# Releasing waiting jobs of a queue (`p_queue`) into `p_free` free slots of its window, fairly:
# each waiting job is ranked by the load its organization would have once it runs (jobs in
# flight + its place among the organization's waiting jobs), so slots go round-robin; then by
# plan priority, then by age. Jobs past their organization's concurrent limit are not
# candidates, and only an organization's first `p_free` waiting jobs can be chosen (each later
# one ranks behind `p_free` of its own).
_free = bindparam("p_free", type_=Integer)
_now = bindparam("p_now", type_=job.dispatched_at.type)


def _waiting_in_queue(c, *, due: bool = True):
    """`c` (the jobs table or an alias of it) is waiting in the queue `p_queue`, and due (its
    `not_before` passed) unless told otherwise."""
    waiting = and_(
        c.queue == bindparam("p_queue"), status_in(c.status, QUEUED), c.dispatched_at.is_(None)
    )
    return and_(waiting, or_(c.not_before.is_(None), c.not_before <= _now)) if due else waiting


def _release(candidates, *, by_key_list: bool):
    """The release, given its candidates (a CTE of id, org_id, created_at and `nth`, the job's
    place among its organization's waiting jobs, up to `p_free` of them each)."""
    in_flight = (
        select(job.org_id, func.count().label("busy"))
        .where(IN_FLIGHT, job.org_id.in_(select(candidates.c.org_id)))
        .group_by(job.org_id)
        .cte("in_flight")
    )
    load = func.coalesce(in_flight.c.busy, 0) + candidates.c.nth
    chosen = (
        select(candidates.c.id)
        .join(Organization.__table__, _orgs.id == candidates.c.org_id)
        .join(Plan.__table__, _plans.id == _orgs.plan_id)
        .outerjoin(in_flight, in_flight.c.org_id == candidates.c.org_id)
        .where(or_(_plans.max_concurrent_jobs.is_(None), load <= _plans.max_concurrent_jobs))
        .order_by(load, _plans.job_priority.desc(), candidates.c.created_at, candidates.c.id)
        .limit(_free)
    )
    # PostgreSQL: `id = ANY(ARRAY(chosen))` is chosen once, then its rows are found by key.
    # Planned as `id IN (chosen)` on a young table (no statistics: every estimate one row), it
    # ran the choice again for each waiting job (EXPLAIN ANALYZE, 10,000 waiting: 110 of 150 ms).
    chosen_ids = (
        job.id == any_(func.array(chosen.scalar_subquery())) if by_key_list else job.id.in_(chosen)
    )
    return (
        update(jobs)
        .where(chosen_ids, WAITING)
        .values(dispatched_at=_now, revision=job.revision + 1)
        .returning(job.id, job.queue, job.timeout_seconds)
    )


# SQLite: the queue's waiting jobs numbered per organization by a window function (the planner
# stops numbering an organization's jobs past `p_free`, but still reads them all).
_ranked = (
    select(
        job.id,
        job.org_id,
        job.created_at,
        func.row_number()
        .over(partition_by=job.org_id, order_by=(job.created_at, job.id))
        .label("nth"),
    )
    .where(_waiting_in_queue(job))
    .subquery("ranked")
)
RELEASE = _release(select(_ranked).where(_ranked.c.nth <= _free).cte("waiting"), by_key_list=False)

# PostgreSQL: the organizations with jobs waiting in the queue, found one after the other
# (each the next in `ix_jobs_waiting_by_org`, due or not), and each one's first `p_free` due
# waiting jobs read from that index: a release reads what it may choose, not the whole backlog
# (`bench/release.py`, 10,000 waiting jobs of 4 organizations: 25 -> 3 ms once the table has
# statistics, 69 -> 14 ms on a young table).
_o = jobs.alias("next_org").c
_orgs_waiting = (
    select(job.org_id)
    .where(_waiting_in_queue(job, due=False))
    .order_by(job.org_id)
    .limit(1)
    .cte("orgs", recursive=True)
)
_next_org = (
    select(_o.org_id)
    .where(_waiting_in_queue(_o, due=False), _o.org_id > _orgs_waiting.c.org_id)
    .order_by(_o.org_id)
    .limit(1)
    .correlate(_orgs_waiting)
    .scalar_subquery()
)
_orgs_waiting = _orgs_waiting.union_all(
    select(_next_org.label("org_id")).where(_orgs_waiting.c.org_id.is_not(None))
)
_f = jobs.alias("first_job").c
_firsts = (
    select(_f.id, _f.org_id, _f.created_at)
    .where(_waiting_in_queue(_f), _f.org_id == _orgs_waiting.c.org_id)
    .order_by(_f.created_at, _f.id)
    .limit(_free)
    .lateral("firsts")
)
RELEASE_PG = _release(
    select(
        _firsts.c.id,
        _firsts.c.org_id,
        _firsts.c.created_at,
        func.row_number()
        .over(partition_by=_firsts.c.org_id, order_by=(_firsts.c.created_at, _firsts.c.id))
        .label("nth"),
    )
    .select_from(_orgs_waiting)
    .join(_firsts, true())
    .cte("waiting"),
    by_key_list=True,
)

WAITING_IN_QUEUE = select(exists().where(job.queue == bindparam("p_queue"), WAITING))

HANDED_OVER_IN_QUEUE = (
    select(func.count()).select_from(jobs).where(job.queue == bindparam("p_queue"), HANDED_OVER)
)

_json = job.result.type
_compute = job.compute_seconds + bindparam("p_seconds")

FINISH = (
    update(jobs)
    .where(FENCE)
    .values(
        status=bindparam("p_status"),
        finished_at=bindparam("p_now"),
        result=bindparam("p_result", type_=_json),
        error=bindparam("p_error", type_=_json),
        progress=case((bindparam("p_status") == SUCCEEDED, 1.0), else_=job.progress),
        compute_seconds=_compute,
        revision=job.revision + 1,
    )
    .returning(FINISH_RETURNING)
)

RETRY = (
    update(jobs)
    .where(FENCE)
    .values(
        status=QUEUED,
        dispatched_at=None,
        worker=None,
        not_before=bindparam("p_not_before"),
        error=bindparam("p_error", type_=_json),
        compute_seconds=_compute,
        revision=job.revision + 1,
    )
    .returning(FINISH_RETURNING)
)

ADMISSION = (
    select(
        _plans.name,
        _plans.max_concurrent_jobs,
        _plans.max_waiting_jobs,
        _plans.monthly_compute_seconds,
        _compute_used("p_org"),
        count(job.org_id == bindparam("p_org"), IN_FLIGHT),
        count(job.queue == bindparam("p_queue"), HANDED_OVER),
        exists().where(job.queue == bindparam("p_queue"), WAITING),
    )
    .select_from(Organization.__table__)
    .join(Plan.__table__, _plans.id == _orgs.plan_id)
    .where(_orgs.id == bindparam("p_org"))
)

# How many of the organization's jobs wait, counted up to its plan's cap only (`p_cap` where
# the plan sets none): a queue flooded with waiting jobs must not make each submit slower.
_cap = (
    select(func.coalesce(_plans.max_waiting_jobs, bindparam("p_cap")))
    .select_from(Organization.__table__)
    .join(Plan.__table__, _plans.id == _orgs.plan_id)
    .where(_orgs.id == bindparam("p_org"))
    .scalar_subquery()
)
_waiting = (select(job.id).where(job.org_id == bindparam("p_org"), WAITING).limit(_cap)).subquery()
ORG_WAITING = select(func.count()).select_from(_waiting)

INSERT = jobs.insert()

# The common submit in one statement: the job is inserted, already dispatched, only where that
# needs no lock (the plan sets no concurrent-jobs limit, the compute quota has room, the queue's
# window has room and nothing waits in it); otherwise nothing is inserted and the submit takes
# the general path. Parameters: `p_<column>` for every column of `INSERT_COLUMNS`, `p_window`.
INSERT_COLUMNS = (
    "id",
    "org_id",
    "created_by",
    "kind",
    "queue",
    "payload",
    "status",
    "progress",
    "attempt",
    "max_attempts",
    "timeout_seconds",
    "idempotency_key",
    "request_hash",
    "compute_seconds",
    "revision",
    "created_at",
    "dispatched_at",
)
_COMPUTE_ROOM = or_(
    _plans.monthly_compute_seconds.is_(None),
    _compute_used("p_org_id") + 1 <= _plans.monthly_compute_seconds,
)


def _insert_where(*conditions):
    """Insert the new job (`p_<column>` parameters) where its organization's plan meets
    `conditions`; returns its id, or no row."""
    return (
        jobs.insert()
        .from_select(
            INSERT_COLUMNS,
            select(*(bindparam(f"p_{name}", type_=jobs.c[name].type) for name in INSERT_COLUMNS))
            .select_from(Organization.__table__)
            .join(Plan.__table__, _plans.id == _orgs.plan_id)
            .where(_orgs.id == bindparam("p_org_id"), *conditions),
        )
        .returning(job.id)
    )


INSERT_IF_FREE = _insert_where(
    _plans.max_concurrent_jobs.is_(None),
    _COMPUTE_ROOM,
    count(job.queue == bindparam("p_queue"), HANDED_OVER) < bindparam("p_window"),
    ~exists().where(job.queue == bindparam("p_queue"), WAITING),
)

# A submit to a busy queue in one statement: the job is inserted waiting (`p_dispatched_at`
# None), without the queue's lock, where the compute quota has room and the organization has
# fewer jobs waiting than its plan's cap (`p_cap` where the plan sets none); otherwise nothing
# is inserted and the submit takes the general path, which says why it is refused.
_org_waiting = (
    select(job.id)
    .where(job.org_id == bindparam("p_org_id"), WAITING)
    .limit(func.coalesce(_plans.max_waiting_jobs, bindparam("p_cap")))
    .correlate(Plan.__table__)
    .subquery()
)
INSERT_WAITING = _insert_where(
    _COMPUTE_ROOM,
    select(func.count()).select_from(_org_waiting).scalar_subquery()
    < func.coalesce(_plans.max_waiting_jobs, bindparam("p_cap")),
)

# Whether the queue's window is empty, once a waiting job is committed: its jobs handed over,
# counted with a row lock, so that a claim holding its job's row is waited for and its job left
# out. Either none is left, and the submitter releases; or every job counted is still to be
# claimed. Each of those claims either reads the table after the waiting job was committed, and
# sees it, or read it before (under way, not yet at its row): then it saw nothing waiting and
# looks again once committed (`Runtime._claim`). No waiting job is left with nothing to
# release it.
_handed_over_locked = (
    select(job.id)
    .where(job.queue == bindparam("p_queue"), HANDED_OVER)
    .with_for_update(key_share=True)
    .subquery()
)
WINDOW_USED = select(func.count()).select_from(_handed_over_locked)
