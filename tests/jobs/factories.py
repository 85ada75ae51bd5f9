"""Builders of jobs for tests."""

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from atelier.jobs.models import QUEUED, Job


async def make_job(session: AsyncSession, org_id: str, **values) -> Job:
    """A job row as submit would write it, waiting (not dispatched) unless told otherwise."""
    job = Job(
        org_id=org_id,
        kind=values.pop("kind", "system.sleep"),
        queue=values.pop("queue", "default"),
        payload=values.pop("payload", {"seconds": 0}),
        status=values.pop("status", QUEUED),
        timeout_seconds=values.pop("timeout_seconds", 60),
        created_at=values.pop("created_at", datetime.now(UTC)),
        **values,
    )
    session.add(job)
    await session.commit()
    return job
