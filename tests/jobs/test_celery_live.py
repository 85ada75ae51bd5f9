"""Celery as the executor, with real processes: `atelier api` + `atelier worker` +
`atelier scheduler` on a Redis server of the test's own (so the test may stop and restart it)."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import cli_env, free_port, run_cli
from tests.jobs.live import FAST_JOBS, get, sign_up, submit, wait_for, wait_for_line

pytestmark = pytest.mark.live


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def stack_database(tmp_path, database_url):
    """A database of its own, migrated: PostgreSQL when the suite runs on it, else SQLite."""
    if not database_url.startswith("postgresql"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'celery.db'}"
        yield url
        return
    name = f"atelier_celery_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_url.rsplit("/", 1)[0] + "/" + name
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


class Stack:
    def __init__(self, tmp_path, database, redis, start_server) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self.redis = redis
        self.env = {
            **FAST_JOBS,
            "ATELIER_JOBS__EXECUTOR": "celery",
            "ATELIER_JOBS__BROKER_URL": redis.url,
            "ATELIER_JOBS__PUBLISH_TIMEOUT_SECONDS": "1",
        }
        result = run_cli("migrate", "upgrade", env=self.cli_env(), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        self.api = start_server("api", database=database, **self.env)
        self.processes: list[subprocess.Popen] = []

    def cli_env(self) -> dict[str, str]:
        return cli_env(self.tmp_path, self.database, **self.env)

    def spawn(self, *args: str, ready: str) -> subprocess.Popen:
        log_path = self.tmp_path / f"{args[0]}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "atelier", *args],
                env=self.cli_env(),
                cwd=self.tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process.log_path = log_path  # type: ignore[attr-defined]
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while ready not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        return process

    def worker(self, *extra: str) -> subprocess.Popen:
        return self.spawn(
            "worker", "--concurrency", "2", "--loglevel", "INFO", *extra, ready="ready."
        )

    def scheduler(self) -> subprocess.Popen:
        return self.spawn("scheduler", ready="beat: Starting")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def stack(tmp_path, stack_database, redis_server, start_server):
    stack = Stack(tmp_path, stack_database, redis_server, start_server)
    yield stack
    stack.stop()


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def worker_events(process: subprocess.Popen, *names: str, within: float = 10.0) -> list[dict]:
    """Atelier's JSON events in a worker's log, once one of each of `names` is there (a job's
    line is written just after its row)."""
    deadline = time.monotonic() + within
    while True:
        events = []
        for line in process.log_path.read_text(errors="replace").splitlines():  # type: ignore[attr-defined]
            if line.startswith("{"):
                events.append(json.loads(line))
        if {e.get("event") for e in events} >= set(names) or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_api_worker_and_scheduler_run_jobs(stack):
    metrics_port = free_port()
    stack.worker("--metrics-port", str(metrics_port))
    stack.scheduler()
    headers = sign_up(stack.api.url)
    jobs = [submit(stack.api.url, headers, "test.work", {"seconds": 0.2}) for _ in range(4)]
    done = [wait_for(stack.api.url, headers, j["id"], "succeeded") for j in jobs]
    assert all(d["attempt"] == 1 for d in done)
    assert len({d["result"]["pid"] for d in done}) == 2  # both worker processes took jobs
    ready = httpx.get(stack.api.url + "/readiness", timeout=10).json()
    assert ready["checks"]["broker"]["status"] == "ok"
    assert ready["checks"]["broker"]["detail"].startswith("celery broker redis://")
    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finished = 'atelier_jobs_finished_total{kind="test.work",status="succeeded"} 4.0'
    assert finished in worker_metrics


def test_a_worker_process_killed_mid_job_is_redone_once(stack, tmp_path):
    worker = stack.worker()
    headers = sign_up(stack.api.url)
    ledger = tmp_path / "ledger.txt"
    job = submit(stack.api.url, headers, "test.work", {"seconds": 2, "ledger": str(ledger)})
    pid = int(wait_for_line(ledger, "start")[3])
    os.kill(pid, signal.SIGKILL)
    # Celery puts the message back (reject on worker lost); the next delivery finds the job's
    # process gone and recovers it at once: no scheduler needed, no heartbeat timeout.
    done = wait_for(stack.api.url, headers, job["id"], "succeeded", within=30)
    assert done["attempt"] == 2
    assert done["result"]["pid"] != pid
    events = [line.split()[0] for line in ledger.read_text().splitlines()]
    assert events == ["start", "start", "done"]
    # The recovery shows in the worker's log, as it does in the embedded pool's.
    logged = worker_events(worker, "jobs_requeued_after_lost_run", "job_finished")
    requeued = [e for e in logged if e["event"] == "jobs_requeued_after_lost_run"]
    assert [e["jobs"] for e in requeued] == [[job["id"]]]
    finished = [e for e in logged if e["event"] == "job_finished"]
    assert [(e["job_id"], e["status"]) for e in finished] == [(job["id"], "succeeded")]


def test_celery_worker_logs_carry_the_job_events(stack):
    """Each worker process logs Atelier's job events as JSON lines on the worker's stderr,
    bound to their job, as the embedded pool does (Celery must not swallow or re-route them)."""
    worker = stack.worker()
    headers = sign_up(stack.api.url)
    ok = submit(stack.api.url, headers, "test.noop")
    bad = submit(stack.api.url, headers, "test.boom")
    wait_for(stack.api.url, headers, ok["id"], "succeeded")
    wait_for(stack.api.url, headers, bad["id"], "failed")
    logged = worker_events(worker, "job_finished", "job_handler_failed")
    finished = {e["job_id"]: e for e in logged if e["event"] == "job_finished"}
    assert finished[ok["id"]]["status"] == "succeeded"
    assert finished[ok["id"]]["kind"] == "test.noop"
    assert finished[ok["id"]]["level"] == "info"
    assert finished[bad["id"]]["status"] == "failed"
    broke = [e for e in logged if e["event"] == "job_handler_failed"]
    assert [(e["job_id"], e["kind"], e["level"]) for e in broke] == [
        (bad["id"], "test.boom", "error")
    ]
    assert "ValueError: the handler broke" in broke[0]["exception"]


def test_a_whole_worker_killed_mid_job_is_recovered_by_the_sweeper(stack, tmp_path):
    first = stack.worker()
    stack.scheduler()
    headers = sign_up(stack.api.url)
    ledger = tmp_path / "ledger.txt"
    job = submit(stack.api.url, headers, "test.work", {"seconds": 2, "ledger": str(ledger)})
    wait_for_line(ledger, "start")
    os.killpg(first.pid, signal.SIGKILL)  # the main process and its children at once
    first.wait()
    stack.worker()
    # Redis would hand the unacknowledged message back only after its visibility timeout; the
    # sweeper re-queues the job once its heartbeat is stale (3 s here) and dispatches it again.
    done = wait_for(stack.api.url, headers, job["id"], "succeeded", within=40)
    assert done["attempt"] == 2
    events = [line.split()[0] for line in ledger.read_text().splitlines()]
    assert events == ["start", "start", "done"]


def test_a_job_submitted_while_the_broker_is_down_runs_when_it_is_back(stack):
    stack.worker()
    stack.scheduler()
    headers = sign_up(stack.api.url)
    stack.redis.stop()
    began = time.monotonic()
    job = submit(stack.api.url, headers, "test.work", {"seconds": 0.1})
    assert time.monotonic() - began < 5  # the publish timeout, not a hang
    stored = get(stack.api.url, headers, job["id"])
    assert stored["status"] == "queued"
    not_ready = httpx.get(stack.api.url + "/readiness", timeout=10)
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["broker"]["status"] == "fail"
    time.sleep(1)
    assert get(stack.api.url, headers, job["id"])["status"] == "queued"
    stack.redis.start()
    done = wait_for(stack.api.url, headers, job["id"], "succeeded", within=60)
    assert done["attempt"] == 1


def test_time_limits_and_cancellation_under_celery(stack):
    stack.worker()
    headers = sign_up(stack.api.url)
    stubborn = submit(stack.api.url, headers, "test.stubborn")
    cooperative = submit(stack.api.url, headers, "test.cooperative_slow")
    for job in (stubborn, cooperative):
        failed = wait_for(stack.api.url, headers, job["id"], "failed")
        assert failed["error"]["type"] == "/problems/job-time-limit"
    long = submit(stack.api.url, headers, "test.work", {"seconds": 30})
    wait_for(stack.api.url, headers, long["id"], "running")
    httpx.post(f"{stack.api.url}/api/v1/jobs/{long['id']}/cancel", headers=headers, timeout=10)
    cancelled = wait_for(stack.api.url, headers, long["id"], "cancelled", within=10)
    assert cancelled["finished_at"]
