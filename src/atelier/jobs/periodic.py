"""The jobs domain's own periodic task: the sweeper."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from atelier.jobs.registry import registry

if TYPE_CHECKING:
    from atelier.jobs.runtime import Runtime

SWEEP = "jobs.sweep"


@registry.periodic(SWEEP, every=lambda settings: timedelta(seconds=settings.jobs.sweep_seconds))
async def sweep(runtime: Runtime) -> dict[str, int]:
    """Re-queue runs whose heartbeat went stale, re-deliver lost messages, release waiting jobs."""
    settings = runtime.settings.jobs
    return await runtime.dispatcher.sweep(
        stale_after=timedelta(seconds=settings.stale_after_seconds),
        redispatch_after=timedelta(seconds=settings.redispatch_after_seconds),
    )
