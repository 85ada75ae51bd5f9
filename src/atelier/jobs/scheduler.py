"""Periodic tasks run in process: `atelier up`'s scheduler (Celery beat does it for workers)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from atelier.jobs.runtime import Runtime

log = structlog.get_logger(__name__)


async def run_forever(runtime: Runtime) -> None:
    """Run every registered periodic task at its interval until cancelled."""
    tasks = list(runtime.registry.periodic_tasks.values())
    due = {task.name: time.monotonic() for task in tasks}
    while tasks:
        now = time.monotonic()
        for task in tasks:
            if due[task.name] <= now:
                await run_once(runtime, task.name)
                due[task.name] = time.monotonic() + task.interval(runtime.settings).total_seconds()
        await asyncio.sleep(max(min(due.values()) - time.monotonic(), 0.05))


async def run_once(runtime: Runtime, name: str) -> object:
    """Run one periodic task now; its failure is logged, never raised into the scheduler."""
    task = runtime.registry.periodic_tasks[name]
    try:
        return await task.fn(runtime)
    except Exception:
        log.exception("periodic_task_failed", task=name)
        return None
