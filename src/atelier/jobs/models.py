"""The jobs table (the source of truth for background work) and each job's log lines."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.db import Base, UTCDateTime
from atelier.core.ids import new_id

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
# The predicate of the partial indexes over active jobs (migration 0012 spells out the same).
ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{status}'" for status in ACTIVE))


class Job(Base):
    """One piece of background work: `queued → running → succeeded | failed | cancelled`.

    A queued job with no `dispatched_at` waits for a slot (its organization's concurrent-jobs
    limit, or its queue's dispatch window); the dispatcher sets `dispatched_at` and only then
    is "run job X" sent to an executor. `attempt` counts claims and fences every write of a
    run, so a run that lost its claim (re-queued after a stale heartbeat) cannot overwrite the
    current one.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key"),
        Index("ix_jobs_org_created", "org_id", "created_at"),
        # The dispatcher's counts (jobs in flight per organization, handed over per queue)
        # range-scan active jobs only, however long the history. On PostgreSQL they hold
        # active jobs only: a job's end adds no entry to them, and a planner without
        # statistics yet (a young table) still finds them the cheapest way to those jobs.
        # SQLite would use them only for queries that repeat the IN list: there they are
        # whole.
        Index(
            "ix_jobs_queue_active",
            "status",
            "queue",
            "dispatched_at",
            postgresql_where=text(ACTIVE_SQL),
        ),
        Index(
            "ix_jobs_org_active",
            "org_id",
            "status",
            "dispatched_at",
            postgresql_where=text(ACTIVE_SQL),
        ),
        # The dispatcher's question, "what is waiting for a slot?", stays cheap when nothing is;
        # a release reads each organization's first waiting jobs in order (statements.RELEASE_PG).
        Index(
            "ix_jobs_waiting_by_org",
            "queue",
            "org_id",
            "created_at",
            "id",
            sqlite_where=text("status = 'queued' AND dispatched_at IS NULL"),
            postgresql_where=text("status = 'queued' AND dispatched_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    created_by: Mapped[str | None] = mapped_column(String(40))  # a user or API key id
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str | None] = mapped_column(String(500))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a problem document
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(255))
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped on every change a watcher cares about; the event stream compares it.
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class JobLogLine(Base):
    """A line a handler wrote with `ctx.log(...)`, kept for the job's page and event stream."""

    __tablename__ = "job_log_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)


def job_problem(slug: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document (RFC 9457) describing why a job failed."""
    return {"type": f"/problems/{slug}", "title": title, "detail": detail, **extra}
