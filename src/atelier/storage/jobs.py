"""The storage domain's periodic task: the orphan garbage collector (it also removes what
crashed uploads left: unfinished writes and spool folders)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING

from atelier.jobs.registry import registry
from atelier.storage.integrity import collect_garbage, spool_root

if TYPE_CHECKING:
    from atelier.jobs.runtime import Runtime

COLLECT_GARBAGE = "storage.collect_garbage"


@registry.periodic(
    COLLECT_GARBAGE,
    every=lambda settings: timedelta(seconds=settings.storage.gc_interval_seconds),
)
async def collect(runtime: Runtime) -> dict[str, int]:
    """Delete objects under `orgs/` that have had no row for the grace period, and the
    unfinished writes and upload spool folders untouched for as long."""
    grace = timedelta(seconds=runtime.settings.storage.gc_grace_seconds)
    async with runtime.sessionmaker() as session:
        report = await collect_garbage(
            session,
            runtime.blobs,
            clock=runtime.clock,
            grace=grace,
            spool_root=spool_root(runtime.settings.data_dir),
        )
    return asdict(report)
