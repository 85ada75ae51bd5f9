"""The identity domain's periodic task: trials that end."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from atelier.identity import orgs
from atelier.jobs.registry import registry

if TYPE_CHECKING:
    from atelier.jobs.runtime import Runtime

EXPIRE_TRIALS = "identity.expire_trials"


@registry.periodic(
    EXPIRE_TRIALS,
    every=lambda settings: timedelta(seconds=settings.auth.trial_check_seconds),
)
async def expire_trials(runtime: Runtime) -> dict[str, int]:
    """Move organizations whose trial has ended to `auth.plan_after_trial`, each audited."""
    async with runtime.sessionmaker() as session:
        moved = await orgs.expire_trials(
            session, plan_after_trial=runtime.settings.auth.plan_after_trial, clock=runtime.clock
        )
    return {"expired": moved}
