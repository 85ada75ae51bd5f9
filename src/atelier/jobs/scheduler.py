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
    """Run every registered periodic task at its interval until cancelled.

    Each run is a task of its own, so a long one (a garbage collection over a large store)
    never delays the others (the sweeper); a task still running when it is due again is not
    started twice.
    """
    tasks = list(runtime.registry.periodic_tasks.values())
    due = {task.name: time.monotonic() for task in tasks}
    running: dict[str, asyncio.Task[object]] = {}
    try:
        while tasks:
            now = time.monotonic()
            for task in tasks:
                busy = task.name in running and not running[task.name].done()
                if due[task.name] <= now and not busy:
                    running[task.name] = asyncio.create_task(run_once(runtime, task.name))
                    due[task.name] = now + task.interval(runtime.settings).total_seconds()
            await asyncio.sleep(max(min(due.values()) - time.monotonic(), 0.05))
    finally:
        for run in running.values():
            run.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


async def run_once(runtime: Runtime, name: str) -> object:
    """Run one periodic task now; its failure is logged, never raised into the scheduler."""
    task = runtime.registry.periodic_tasks[name]
    try:
        return await task.fn(runtime)
    except Exception:
        log.exception("periodic_task_failed", task=name)
        return None
