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
    # True where delivering is publishing to a broker: such an executor also has
    # `post(deliveries, on_failure)`, which publishes from a thread of its own without
    # waiting (`on_failure(deliveries, exc)` is awaited on the poster's loop if that fails),
    # and `flush()`, which waits for what was posted (`adapters.executors.celery`).
    background: bool

    async def deliver(self, deliveries: list[Delivery]) -> None:
        """Hand the jobs over; raise if they could not be (they will be dispatched again)."""
        ...

    async def ping(self) -> str:
        """A short description of the executor if it can take jobs now; raise if not."""
        ...

    async def close(self) -> None: ...
