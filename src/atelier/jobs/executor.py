"""What an executor does: deliver "run job X" somewhere. Nothing else.

Executors live in `atelier.adapters.executors` (inline, local process pool, Celery). The job row
stays the source of truth: a delivery may be lost or repeated, and the sweeper and the
conditional claim in `jobs.runtime` make both harmless.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    job_id: str
    queue: str
    timeout_seconds: int


class Executor(Protocol):
    async def deliver(self, deliveries: list[Delivery]) -> None:
        """Hand the jobs over; raise if they could not be (they will be dispatched again)."""
        ...

    async def ping(self) -> str:
        """A short description of the executor if it can take jobs now; raise if not."""
        ...

    async def close(self) -> None: ...
