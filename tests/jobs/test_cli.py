"""`atelier jobs list` and `atelier jobs cancel` as an operator meets them: real subprocesses on
an embedded database, their output read through a pipe as a script would."""

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from atelier.core.db import create_engine, create_sessionmaker
from atelier.jobs.models import RUNNING
from tests.conftest import cli_env, run_cli
from tests.identity.factories import make_user, personal_org_id
from tests.jobs.factories import make_job

pytestmark = pytest.mark.backend_independent


@pytest.fixture
def embedded(tmp_path):
    """A migrated embedded database with two organizations' jobs: `ids` holds them by name."""
    database = tmp_path / "var" / "atelier.db"
    env = cli_env(tmp_path, f"sqlite+aiosqlite:///{database}")
    assert run_cli("migrate", "upgrade", env=env, cwd=tmp_path).returncode == 0

    async def fill() -> dict[str, str]:
        engine = create_engine(f"sqlite+aiosqlite:///{database}")
        try:
            async with create_sessionmaker(engine)() as session:
                ada = await personal_org_id(session, await make_user(session))
                bob = await personal_org_id(session, await make_user(session))
                now = datetime.now(UTC)
                waiting = await make_job(session, ada, created_at=now - timedelta(seconds=2))
                running = await make_job(
                    session,
                    ada,
                    status=RUNNING,
                    started_at=now,
                    created_at=now - timedelta(seconds=5),
                )
                other = await make_job(session, bob, kind="automl.train", queue="ml")
                return {
                    "waiting": waiting.id,
                    "running": running.id,
                    "other": other.id,
                    "ada": ada,
                    "bob": bob,
                }
        finally:
            await engine.dispose()

    ids = asyncio.run(fill())
    return env, database, ids


def status_of(database, job_id: str) -> tuple[str, str | None]:
    with sqlite3.connect(database) as db:
        return db.execute(
            "SELECT status, cancel_requested_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()


def test_jobs_list_shows_every_organization_newest_first_with_whole_ids(tmp_path, embedded):
    env, _, ids = embedded
    result = run_cli("jobs", "list", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Jobs (3 shown)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "job_" in line]
    # One line per job, ids whole (not folded at 80 columns through a pipe), newest first.
    assert [next(i for i in ids.values() if i in row) for row in rows] == [
        ids["other"],
        ids["waiting"],
        ids["running"],
    ]
    assert ids["bob"] in rows[0]
    assert "automl.train" in rows[0]
    assert "queued (waiting)" in rows[1]
    assert "running" in rows[2]
    assert ids["ada"] in rows[2]


def test_jobs_list_filters_and_prints_json(tmp_path, embedded):
    env, _, ids = embedded
    result = run_cli(
        "jobs", "list", "--status", "queued", "--org", ids["ada"], "--json", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [(j["id"], j["org_id"], j["status"], j["waiting"]) for j in jobs] == [
        (ids["waiting"], ids["ada"], "queued", True)
    ]
    by_kind = json.loads(
        run_cli("jobs", "list", "--kind", "automl.train", "--json", env=env, cwd=tmp_path).stdout
    )
    assert [j["id"] for j in by_kind] == [ids["other"]]
    limited = json.loads(
        run_cli("jobs", "list", "--limit", "1", "--json", env=env, cwd=tmp_path).stdout
    )
    assert [j["id"] for j in limited] == [ids["other"]]


def test_jobs_list_refuses_an_unknown_status(tmp_path, embedded):
    env, _, _ = embedded
    result = run_cli("jobs", "list", "--status", "done", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "Unknown status 'done'; one of queued, running" in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_cancel_ends_a_queued_job_and_asks_a_running_one(tmp_path, embedded):
    env, database, ids = embedded
    queued = run_cli("jobs", "cancel", ids["waiting"], env=env, cwd=tmp_path)
    assert queued.returncode == 0, queued.stderr
    assert f"Job {ids['waiting']} cancelled." in queued.stdout
    assert status_of(database, ids["waiting"])[0] == "cancelled"

    running = run_cli("jobs", "cancel", ids["running"], env=env, cwd=tmp_path)
    assert running.returncode == 0, running.stderr
    assert f"Job {ids['running']} asked to stop (it is running)." in running.stdout
    status, requested = status_of(database, ids["running"])
    assert status == "running"
    assert requested is not None


def test_jobs_cancel_explains_a_missing_or_ended_job(tmp_path, embedded):
    env, database, ids = embedded
    missing = run_cli("jobs", "cancel", "job_nope", env=env, cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "No job job_nope"
    assert run_cli("jobs", "cancel", ids["other"], env=env, cwd=tmp_path).returncode == 0
    again = run_cli("jobs", "cancel", ids["other"], env=env, cwd=tmp_path)
    assert again.returncode == 1
    assert f"Job {ids['other']} already ended (cancelled)" in again.stderr
    assert status_of(database, ids["other"])[0] == "cancelled"
