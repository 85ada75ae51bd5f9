"""Checks of a running or configured Atelier, shared by `/readiness` and `atelier doctor`."""

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from atelier.adapters.blobs import create_blob_store
from atelier.core.blobs import BlobStore
from atelier.core.clock import SystemClock
from atelier.core.db import ping
from atelier.core.ratelimit import RateLimiter
from atelier.jobs.executor import Executor
from atelier.ops import migrations
from atelier.settings import Settings, secret_problems

log = structlog.get_logger(__name__)

Status = Literal["ok", "fail", "skip"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    duration_ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def as_dict(self) -> dict:
        return asdict(self)


async def check_database(engine: AsyncEngine, *, within: float = 3.0) -> Check:
    """Whether a query gets an answer within `within` seconds."""
    begin = time.perf_counter()
    try:
        await asyncio.wait_for(ping(engine), within)
    except Exception as exc:  # any failure to reach the database is the answer we report
        log.warning("database_unreachable", error=repr(exc))
        detail = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        return Check("database", "fail", f"unreachable ({detail})", _ms(begin))
    return Check("database", "ok", f"reachable ({engine.dialect.name})", _ms(begin))


async def check_migrations(engine: AsyncEngine) -> Check:
    begin = time.perf_counter()
    try:
        current = await migrations.current_revision(engine)
    except Exception as exc:  # reported, not raised: the database check names the cause
        return Check("migrations", "fail", f"cannot read ({type(exc).__name__})", _ms(begin))
    head = migrations.head_revision()
    if current == head:
        return Check("migrations", "ok", f"at head ({head})", _ms(begin))
    return Check(
        "migrations",
        "fail",
        f"database at {current or 'nothing'}, code expects {head}: run `atelier migrate upgrade`",
        _ms(begin),
    )


async def check_storage(store: BlobStore, *, within: float = 5.0) -> Check:
    """Whether a small object can be written, read back and removed in the blob store."""
    begin = time.perf_counter()
    try:
        await asyncio.wait_for(store.probe(), within)
    except Exception as exc:  # reported, not raised: the check's answer is the failure
        log.warning("storage_unavailable", error=repr(exc))
        detail = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        return Check("storage", "fail", f"{_describe_store(store)}: {detail}", _ms(begin))
    return Check("storage", "ok", f"{_describe_store(store)} is writable", _ms(begin))


def _describe_store(store: BlobStore) -> str:
    root = getattr(store, "root", None)
    if root is not None:
        return str(root)
    return f"bucket {getattr(store, 'bucket', '?')}"


async def check_broker(executor: Executor, *, within: float = 5.0) -> Check:
    """Whether the job executor (the Celery broker, the local pool) can take jobs now."""
    begin = time.perf_counter()
    try:
        detail = await asyncio.wait_for(executor.ping(), within)
    except Exception as exc:  # reported, not raised
        log.warning("broker_unavailable", error=repr(exc))
        reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        return Check("broker", "fail", f"unreachable ({reason})", _ms(begin))
    return Check("broker", "ok", detail, _ms(begin))


async def check_rate_limits(limiter: RateLimiter) -> Check:
    """Which store the rate limiter counts in. Redis down is not a failure: the limiter counts
    in memory meanwhile (each process on its own), so the detail says so and the check is ok."""
    begin = time.perf_counter()
    await limiter.probe()
    return Check("rate_limits", "ok", limiter.describe(), _ms(begin))


def check_secrets(settings: Settings) -> Check:
    problems = secret_problems(settings)
    if settings.profile != "production":
        return Check("secrets", "skip", "embedded profile: key kept in data_dir/secret.key")
    if problems:
        return Check("secrets", "fail", "; ".join(problems), problems=problems)
    return Check("secrets", "ok", "every secret is set and strong")


def _ms(begin: float) -> float:
    return round((time.perf_counter() - begin) * 1000, 2)


async def readiness_checks(
    engine: AsyncEngine,
    store: BlobStore,
    executor: Executor | None,
    limiter: RateLimiter | None = None,
) -> list[Check]:
    """What `/readiness` checks: the database, the blob store and, where jobs go to a broker or a
    pool in this process, the executor, and which store the rate limiter counts in. They run at
    once."""
    checks = [check_database(engine), check_storage(store)]
    if executor is not None:
        checks.append(check_broker(executor))
    if limiter is not None:
        checks.append(check_rate_limits(limiter))
    return list(await asyncio.gather(*checks))


async def diagnose(settings: Settings, engine: AsyncEngine) -> list[Check]:
    """Everything `atelier doctor` checks once the configuration has loaded."""
    database = await check_database(engine)
    if database.ok:
        migrations_check = await check_migrations(engine)
    else:
        migrations_check = Check("migrations", "skip", "database unreachable")
    try:
        store = create_blob_store(
            settings.storage, secret=settings.secret_key.get_secret_value(), clock=SystemClock()
        )
    except (OSError, RuntimeError) as exc:
        storage = Check("storage", "fail", f"cannot open the blob store ({exc})")
    else:
        storage = await check_storage(store)
    checks = [database, migrations_check, storage]
    if settings.jobs.executor == "celery":
        from atelier.adapters.executors.celery import CeleryExecutor

        executor = CeleryExecutor(settings, app=None)
        try:
            checks.append(await check_broker(executor))
        finally:
            await executor.close()
    else:
        checks.append(Check("broker", "skip", f"{settings.jobs.executor} executor: no broker"))
    return [*checks, check_secrets(settings)]
