"""AutoML rows made directly, for tests about reading and access rather than training."""

from atelier.automl.models import AutomlRun
from tests.jobs.factories import make_job


async def make_run(session, org_id: str, dataset_id: str, **fields) -> AutomlRun:
    """A run of an unfinished job: no results, no report, no model."""
    job = await make_job(session, org_id)
    run = AutomlRun(
        org_id=org_id,
        dataset_id=dataset_id,
        dataset_version=1,
        dataset_name="Homes",
        target="sold_fast",
        budget_seconds=10.0,
        seed=0,
        exclude=[],
        job_id=job.id,
        request={},
        leaderboard=[],
        created_at=job.created_at,
        **fields,
    )
    session.add(run)
    await session.commit()
    return run
