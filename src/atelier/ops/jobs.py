"""Operators' job kinds: `system.sleep`, a demonstration and smoke test of the job system."""

import time

from pydantic import BaseModel, Field

from atelier.jobs.registry import registry
from atelier.jobs.runtime import JobContext


class SleepPayload(BaseModel):
    seconds: float = Field(default=5.0, ge=0, le=3600, description="How long to sleep.")
    steps: int = Field(default=10, ge=1, le=1000, description="Progress reports on the way.")
    fail: bool = Field(default=False, description="Raise an error at the end (to see failures).")


@registry.kind("system.sleep", payload=SleepPayload, submitter="superadmin")
def sleep(ctx: JobContext, payload: SleepPayload) -> dict:
    """Sleep in steps, reporting progress and stopping early when cancelled."""
    for step in range(payload.steps):
        ctx.check_cancelled()
        time.sleep(payload.seconds / payload.steps)
        ctx.progress((step + 1) / payload.steps, f"step {step + 1} of {payload.steps}")
    ctx.log(f"slept {payload.seconds} s in {payload.steps} steps")
    if payload.fail:
        raise RuntimeError("failed on purpose (fail=true)")
    return {"slept_seconds": payload.seconds, "steps": payload.steps, "attempt": ctx.attempt}
