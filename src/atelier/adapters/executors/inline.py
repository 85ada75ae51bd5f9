"""Run each delivered job at once, in the delivering process (tests, one-off CLI runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier.jobs.executor import Delivery

if TYPE_CHECKING:
    from atelier.jobs.runtime import Runtime


class InlineExecutor:
    """Delivering is running: `deliver` returns when the jobs (and those they release) ended."""

    background = False

    def __init__(self) -> None:
        self.runtime: Runtime | None = None  # set by `atelier.workers.build_runtime`

    async def deliver(self, deliveries: list[Delivery]) -> None:
        assert self.runtime is not None, "InlineExecutor used before build_runtime()"
        for delivery in deliveries:
            await self.runtime.run(delivery.job_id)

    async def ping(self) -> str:
        return "inline (jobs run in the submitting process)"

    async def close(self) -> None:
        return None


class NoExecutor:
    """For a process that may submit jobs but has nowhere to run them (`atelier api` with the
    local executor): jobs stay queued until `atelier up` or a worker takes them."""

    background = False

    async def deliver(self, deliveries: list[Delivery]) -> None:
        raise RuntimeError("no executor in this process (the local pool runs in `atelier up`)")

    async def ping(self) -> str:
        raise RuntimeError("no executor in this process; jobs wait for `atelier up`")

    async def close(self) -> None:
        return None
