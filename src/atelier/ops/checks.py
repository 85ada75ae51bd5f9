"""Checks of a running or configured Atelier, shared by `/readiness` and `atelier doctor`."""

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from atelier.core.db import ping
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


def check_storage(root: Path) -> Check:
    """Whether a file can be written, read back and removed under the blob root."""
    begin = time.perf_counter()
    probe = root / f".doctor-{uuid.uuid4().hex}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"atelier")
        same = probe.read_bytes() == b"atelier"
        probe.unlink()
    except OSError as exc:
        return Check("storage", "fail", f"{root} is not writable ({exc.strerror})", _ms(begin))
    if not same:
        return Check("storage", "fail", f"{root} gave back other bytes", _ms(begin))
    return Check("storage", "ok", f"{root} is writable", _ms(begin))


def check_secrets(settings: Settings) -> Check:
    problems = secret_problems(settings)
    if settings.profile != "production":
        return Check("secrets", "skip", "embedded profile: key kept in data_dir/secret.key")
    if problems:
        return Check("secrets", "fail", "; ".join(problems), problems=problems)
    return Check("secrets", "ok", "every secret is set and strong")


def _ms(begin: float) -> float:
    return round((time.perf_counter() - begin) * 1000, 2)


async def readiness_checks(engine: AsyncEngine) -> list[Check]:
    """What `/readiness` checks: the dependencies a request needs (storage and broker join)."""
    return [await check_database(engine)]


async def diagnose(settings: Settings, engine: AsyncEngine) -> list[Check]:
    """Everything `atelier doctor` checks once the configuration has loaded."""
    database = await check_database(engine)
    if database.ok:
        migrations_check = await check_migrations(engine)
    else:
        migrations_check = Check("migrations", "skip", "database unreachable")
    return [
        database,
        migrations_check,
        await asyncio.to_thread(check_storage, settings.storage.root),
        check_secrets(settings),
    ]
