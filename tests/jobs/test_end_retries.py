"""A database blip does not cost a job's work or its reports.

Another writer holds SQLite's write lock past the busy timeout (a backup, a long migration, a
loaded machine): the job's end is tried again until it is written, rather than the job being
left `running` for the sweeper to run again; and progress and log lines whose heartbeat write
failed are written with the next one, not dropped.
"""

import sqlite3
import threading
import time

import pytest
import structlog
from pydantic import BaseModel
from sqlalchemy import select

from atelier.core.db import create_engine, create_sessionmaker
from atelier.jobs.models import JobLogLine
from atelier.jobs.registry import registry
from atelier.jobs.runtime import JobContext
from atelier.ops import migrations
from tests.jobs.test_cancelled_writes import run_one

pytestmark = pytest.mark.backend_independent

BUSY_TIMEOUT = 1.0  # seconds a writer waits for the lock before "database is locked"
database: dict[str, str] = {}  # the test database's file, for the handlers
logged: dict[str, list[dict]] = {"entries": []}  # what the runtime logs in the running test


class Nothing(BaseModel):
    pass


def hold_write_lock_until(event: str) -> threading.Thread:
    """Another process's writer: takes the write lock now and keeps it until the runtime has
    logged `event` (at most 10 s), in a thread. Returns once the lock is held."""
    held = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database["path"], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        deadline = time.monotonic() + 10
        while not any(entry["event"] == event for entry in logged["entries"]):
            if time.monotonic() > deadline:
                break  # the test's assertions say what did not happen
            time.sleep(0.02)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    if not held.wait(5):
        raise AssertionError("the lock was not taken")
    return holder


@registry.kind("test.ends_behind_a_held_lock", payload=Nothing, max_attempts=1)
def ends_behind_a_held_lock(ctx: JobContext, payload: Nothing) -> dict:
    ctx.progress(1.0, "done")
    ctx.log("the work is done")
    hold_write_lock_until("job_end_retried")  # the end's first try fails on it
    return {"answer": 42}


@registry.kind("test.logs_while_a_heartbeat_fails", payload=Nothing, max_attempts=1)
def logs_while_a_heartbeat_fails(ctx: JobContext, payload: Nothing) -> dict:
    holder = hold_write_lock_until("job_heartbeat_failed")
    ctx.log("written late")  # the heartbeat's write of this line fails on the lock
    holder.join()
    return {"answer": 42}


@pytest.fixture
async def engine(tmp_path):
    path = tmp_path / "jobs.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", connect_timeout=BUSY_TIMEOUT)
    await migrations.upgrade(engine, "head")
    database["path"] = str(path)
    yield engine
    await engine.dispose()


@pytest.fixture
def logs():
    with structlog.testing.capture_logs() as entries:
        logged["entries"] = entries
        yield entries


async def log_lines(engine, job_id: str) -> list[str]:
    async with create_sessionmaker(engine)() as session:
        query = select(JobLogLine.message).where(JobLogLine.job_id == job_id)
        return list(await session.scalars(query.order_by(JobLogLine.id)))


async def test_a_job_ends_once_a_lock_held_past_the_busy_timeout_goes(engine, make_settings, logs):
    settings = make_settings(jobs={"executor": "local", "heartbeat_seconds": 5})
    status, job = await run_one(engine, settings, "test.ends_behind_a_held_lock")
    retries = [entry for entry in logs if entry["event"] == "job_end_retried"]
    assert retries  # the first try did fail on the lock
    assert "database is locked" in retries[0]["error"]
    assert status == "succeeded"
    assert (job.status, job.attempt, job.result) == ("succeeded", 1, {"answer": 42})
    assert (job.progress, job.progress_message) == (1.0, "done")
    # The failed try's writes were rolled back: the line is there once.
    assert await log_lines(engine, job.id) == ["the work is done"]


async def test_reports_of_a_failed_heartbeat_are_written_with_the_next(engine, make_settings, logs):
    settings = make_settings(jobs={"executor": "local", "heartbeat_seconds": 0.05})
    status, job = await run_one(engine, settings, "test.logs_while_a_heartbeat_fails")
    assert any(entry["event"] == "job_heartbeat_failed" for entry in logs)
    assert status == "succeeded"
    assert (job.status, job.attempt) == ("succeeded", 1)
    assert await log_lines(engine, job.id) == ["written late"]
