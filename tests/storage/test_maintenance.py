"""Storage maintenance as an operator meets it: `atelier storage check` and the scheduled garbage
collector, run as real subprocesses on an embedded setup."""

import asyncio
import json
import sqlite3
from datetime import timedelta

import pytest

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core.clock import SystemClock
from atelier.jobs import scheduler
from atelier.jobs.registry import PeriodicTask, Registry
from tests.conftest import TEST_SECRET, cli_env, run_cli

pytestmark = pytest.mark.backend_independent

STRAY = "orgs/org_nobody/uploads/stray.bin"


@pytest.fixture
def embedded(tmp_path):
    env = cli_env(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'var' / 'atelier.db'}")
    assert run_cli("migrate", "upgrade", env=env, cwd=tmp_path).returncode == 0
    return env


def put_stray_object(tmp_path) -> None:
    """An object no row points at, as a crash between upload and commit would leave."""
    store = LocalBlobStore(tmp_path / "blobs", secret=TEST_SECRET, clock=SystemClock())

    async def chunks():
        yield b"left behind"

    asyncio.run(store.put(STRAY, chunks(), content_type="application/octet-stream", max_bytes=1024))


def test_storage_check_passes_on_a_consistent_store(tmp_path, embedded):
    result = run_cli("storage", "check", env=embedded, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 rows and 0 objects checked." in result.stdout


def test_storage_check_names_an_object_without_a_row(tmp_path, embedded):
    put_stray_object(tmp_path)
    result = run_cli("storage", "check", env=embedded, cwd=tmp_path)
    assert result.returncode == 1
    assert "1 objects without a row" in result.stdout
    assert STRAY in result.stdout
    report = json.loads(run_cli("storage", "check", "--json", env=embedded, cwd=tmp_path).stdout)
    assert report["ok"] is False
    assert report["objects_without_rows"] == {"count": 1, "examples": [STRAY]}


def test_the_garbage_collector_is_a_periodic_task_that_waits_out_its_grace(tmp_path, embedded):
    put_stray_object(tmp_path)
    collect = ("jobs", "run-periodic", "storage.collect_garbage")
    first = run_cli(*collect, env=embedded, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert '"orphans": 1, "deleted": 0' in first.stdout
    assert list((tmp_path / "blobs").rglob("stray.bin"))  # seen once: kept for the grace period
    # A day later (the sighting moved back in time), the next pass deletes it.
    with sqlite3.connect(tmp_path / "var" / "atelier.db") as db:
        moved = db.execute("UPDATE blob_orphan_sightings SET first_seen_at = '2000-01-01 00:00:00'")
        assert moved.rowcount == 1
    later = run_cli(*collect, env=embedded, cwd=tmp_path)
    assert '"orphans": 1, "deleted": 1' in later.stdout, later.stdout + later.stderr
    assert not list((tmp_path / "blobs").rglob("stray.bin"))
    assert run_cli("storage", "check", env=embedded, cwd=tmp_path).returncode == 0


async def test_a_long_periodic_task_does_not_hold_up_the_others(settings):
    """`atelier up`'s scheduler runs each task on its own: the sweeper keeps its pace while a
    garbage collection takes its time."""
    quick_runs = []
    slow_started = asyncio.Event()

    async def slow(_runtime):
        slow_started.set()
        await asyncio.sleep(10)

    async def quick(_runtime):
        quick_runs.append(1)

    registry = Registry()
    registry.periodic_tasks = {
        "slow": PeriodicTask("slow", slow, every=timedelta(days=1)),
        "quick": PeriodicTask("quick", quick, every=timedelta(seconds=0.05)),
    }

    class Runtime:
        pass

    runtime = Runtime()
    runtime.registry, runtime.settings = registry, settings
    loop = asyncio.create_task(scheduler.run_forever(runtime))
    await asyncio.wait_for(slow_started.wait(), 2)
    await asyncio.sleep(0.5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert len(quick_runs) >= 5
