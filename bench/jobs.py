"""Atelier's job system against bare Celery, on the real Redis and PostgreSQL.

    .venv/bin/python bench/jobs.py [--jobs 2000] [--singles 200] [--database postgresql://...]

In one run, with 2 worker processes each:
- throughput: `--jobs` no-op jobs submitted one after the other, from the first submit to the
  last end (Atelier: `jobs.service.submit` as an endpoint calls it, then the job row read back;
  bare Celery: `apply_async` of a task that only counts itself in Redis);
- the same throughput for Atelier's local executor (the pool of `atelier up`);
- submit-to-start latency: `--singles` rounds of one single no-op job on each of the three
  set-ups, one job at a time on an otherwise idle system, from the submit call to the handler's
  first line (p50 and p99). The three take turns, each going first in turn, so that whatever
  else the machine does meanwhile (a shared VM's neighbours, PostgreSQL's background writes)
  weighs on each alike: measured one set-up after the other, bare Celery's p50 alone moved
  between 2.5 and 4.2 ms from one run to the next;
- CPU per job in the throughput run, by part (submitter, PostgreSQL, Redis, the worker's main
  process, the processes that run jobs), read from /proc: unlike throughput, it hardly moves
  with whatever else the machine is doing.
Each Atelier set-up gets a fresh PostgreSQL database, dropped at the end (default: the local
server of the dev machine); Redis database 13 is used and flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import redis
import redis.asyncio
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench.kinds`, imported by the workers too

from atelier.core.db import create_engine  # noqa: E402
from atelier.identity.models import Organization  # noqa: E402
from atelier.jobs import service  # noqa: E402
from atelier.jobs.models import Job  # noqa: E402
from atelier.ops import migrations  # noqa: E402
from atelier.plans.models import Plan  # noqa: E402
from atelier.settings import Settings  # noqa: E402
from atelier.workers import build_runtime  # noqa: E402
from bench import kinds  # noqa: E402

BROKER = "redis://127.0.0.1:6379/13"
WORKERS = 2


def env_for(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        PYTHONPATH=str(REPO),
        ATELIER_DATABASE__URL=database_url,
        ATELIER_JOBS__EXECUTOR="celery",
        ATELIER_JOBS__BROKER_URL=BROKER,
        ATELIER_JOBS__MODULES="bench.kinds",
        ATELIER_LOGGING__LEVEL="WARNING",
        ATELIER_DATA_DIR=str(REPO / "var" / "bench"),
    )
    env[kinds.LATENCY_ENV] = BROKER
    return env


def spawn(command: list[str], env: dict[str, str], ready: str, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while ready not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return process


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)


def shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---- CPU per job ---------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(workers: int | None) -> dict[str, float]:
    """CPU seconds used so far by each part: this process (the submitter and its publisher
    thread), PostgreSQL's processes, Redis, and the worker's main process (Celery's consumer,
    or the local pool's parent: this process) and its children (the processes that run jobs)."""
    parts = {"submitter": 0.0, "PostgreSQL": 0.0, "Redis": 0.0, "consumer": 0.0, "runners": 0.0}
    me = os.getpid()
    processes: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / _TICK
        processes[int(entry.name)] = (
            stat[stat.index("(") + 1 : stat.rindex(")")],
            int(fields[1]),
            used,
        )

    def descends_from(pid: int, ancestor: int | None) -> bool:
        while pid > 1 and ancestor is not None:
            pid = processes.get(pid, ("", 0, 0.0))[1]
            if pid == ancestor:
                return True
        return False

    for pid, (comm, _, used) in processes.items():
        if pid == me:
            parts["submitter"] += used
        elif comm.startswith("postgres"):
            parts["PostgreSQL"] += used
        elif comm.startswith("redis-server"):
            parts["Redis"] += used
        elif pid == workers:
            parts["consumer"] += used
        elif descends_from(pid, workers) or descends_from(pid, me):
            parts["runners"] += used
    return parts


def cpu_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """Milliseconds of CPU per job, by part, between two `cpu_seconds` readings."""
    per_job = {part: (after[part] - before[part]) * 1000 / jobs for part in before}
    per_job["total"] = sum(per_job.values())
    return per_job


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---- bare Celery -----------------------------------------------------------------------------


def bare_worker(log_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), kinds.LATENCY_ENV: BROKER}
    return spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.bare_celery",
            "worker",
            "--pool=prefork",
            f"--concurrency={WORKERS}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
            "-Q",
            "bare",
        ],
        env,
        "ready.",
        log_dir / "bare-worker.log",
    )


def bare_throughput(jobs: int, submitters: int, worker: int) -> dict:
    from bench.bare_celery import noop

    r = redis.Redis.from_url(BROKER)
    noop.apply_async(args=[0.0], queue="bare")  # warm the connection pools
    _wait_count(r, 1)
    r.delete(kinds.DONE_KEY, kinds.STARTS_KEY)
    cpu_before = cpu_seconds(worker)
    begin = time.perf_counter()
    with ThreadPoolExecutor(submitters) as pool:
        list(
            pool.map(
                lambda n: [noop.apply_async(args=[0.0], queue="bare") for _ in range(n)],
                shares(jobs, submitters),
            )
        )
    _wait_count(r, jobs)
    throughput = jobs / (time.perf_counter() - begin)
    return {"throughput": throughput, "cpu": cpu_per_job(cpu_before, cpu_seconds(worker), jobs)}


async def bare_single(r: redis.Redis) -> float:
    """One bare task's submit-to-start, in seconds. Blocking on purpose: the bare side has no
    event loop, and nothing else runs while it waits."""
    from bench.bare_celery import noop

    r.delete(kinds.DONE_KEY, kinds.STARTS_KEY)
    sent = time.time()
    noop.apply_async(args=[sent], queue="bare")
    latency = _started(r) - sent
    _wait_count(r, 1)
    return latency


def _started(r: redis.Redis) -> float:
    """When the single job's handler started: it pushes that time; waiting blocks in Redis, so
    the measuring side does not load the machine meanwhile."""
    popped = r.blpop([kinds.STARTS_KEY], timeout=60)
    if popped is None:
        raise SystemExit("a single job did not start within 60 s")
    return float(popped[1])


async def _started_async(r: redis.asyncio.Redis) -> float:
    """`_started` on the event loop: a thread blocked in Redis would compete for the GIL with
    the submitter's publisher thread, and add its wake-ups to the latency measured (the bare
    Celery side waits in its only thread)."""
    popped = await r.blpop([kinds.STARTS_KEY], timeout=60)
    if popped is None:
        raise SystemExit("a single job did not start within 60 s")
    return float(popped[1])


def _wait_count(r: redis.Redis, count: int, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while int(r.get(kinds.DONE_KEY) or 0) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {r.get(kinds.DONE_KEY)} of {count} tasks ran")
        time.sleep(0.002)


# ---- Atelier -----------------------------------------------------------------------------------


class Atelier:
    """One Atelier set-up (its own database, runtime and executor) under measure."""

    def __init__(self, settings: Settings, executor, workers: int | None) -> None:
        self.runtime = build_runtime(settings, executor)
        self.executor = executor
        self.workers = workers  # the worker's main process, None for the local pool
        self.kind = self.runtime.registry.kinds["bench.noop"]
        self.single_ids: list[str] = []
        self.org_id = ""

    async def start(self) -> None:
        if hasattr(self.executor, "start"):
            await self.executor.start()
        async with self.runtime.sessionmaker() as session:
            self.org_id = await _bench_org(session)
        self.waiter = redis.asyncio.Redis.from_url(BROKER)
        # Warm up: connections, worker imports.
        first = await self._submit({})
        await _wait_jobs(self.runtime, [first])

    async def _submit(self, payload: dict) -> str:
        async with self.runtime.sessionmaker() as session:
            submitted = await service.submit(
                session,
                self.runtime.dispatcher,
                self.kind,
                payload,
                org_id=self.org_id,
                created_by=None,
            )
        return submitted.job.id

    async def throughput(self, jobs: int, submitters: int) -> dict:
        r = redis.Redis.from_url(BROKER)
        r.delete(kinds.DONE_KEY, kinds.STARTS_KEY)
        cpu_before = cpu_seconds(self.workers)
        begin = time.perf_counter()
        ids: list[str] = []

        async def submit(count: int) -> None:
            async with self.runtime.sessionmaker() as session:
                for _ in range(count):
                    submitted = await service.submit(
                        session,
                        self.runtime.dispatcher,
                        self.kind,
                        {},
                        org_id=self.org_id,
                        created_by=None,
                    )
                    ids.append(submitted.job.id)

        await asyncio.gather(*(submit(n) for n in shares(jobs, submitters)))
        submitted_in = time.perf_counter() - begin
        # Every handler ran (its Redis counter, polled as for bare Celery), then every row says
        # so (one query or two, not one every few milliseconds through the run).
        await asyncio.to_thread(_wait_count, r, jobs)
        await _wait_jobs(self.runtime, ids)
        throughput = jobs / (time.perf_counter() - begin)
        print(
            f"  {jobs} jobs submitted in {submitted_in:.2f} s, all ended in "
            f"{jobs / throughput:.2f} s",
            flush=True,
        )
        return {
            "throughput": throughput,
            "cpu": cpu_per_job(cpu_before, cpu_seconds(self.workers), jobs),
        }

    async def single(self) -> float:
        """One job's submit-to-start, in seconds; returns once the job has ended."""
        await self.waiter.delete(kinds.DONE_KEY, kinds.STARTS_KEY)
        sent = time.time()
        job_id = await self._submit({"sent": sent})
        latency = await _started_async(self.waiter) - sent
        await _wait_jobs(self.runtime, [job_id])
        self.single_ids.append(job_id)
        return latency

    async def steps(self) -> str:
        """The singles' median from the row's creation to its claim, and from claim to end."""
        async with self.runtime.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(Job.created_at, Job.started_at, Job.finished_at).where(
                        Job.id.in_(self.single_ids)
                    )
                )
            ).all()
        claim_ms = statistics.median((s - c).total_seconds() * 1000 for c, s, _ in rows)
        run_ms = statistics.median((f - s).total_seconds() * 1000 for _, s, f in rows)
        return f"created->claimed {claim_ms:.1f} ms, claimed->finished {run_ms:.1f} ms"

    async def close(self) -> None:
        await self.waiter.aclose()
        await self.executor.close()
        await self.runtime.close()


async def _bench_org(session) -> str:
    from tests.identity.factories import make_user, personal_org_id

    user = await make_user(session, email=f"bench-{uuid.uuid4().hex[:8]}@example.com")
    org_id = await personal_org_id(session, user)
    await session.execute(
        update(Organization).where(Organization.id == org_id).values(plan_id="enterprise")
    )
    # The whole batch is submitted at once: let it all wait for slots rather than get 429s.
    await session.execute(
        update(Plan).where(Plan.id == "enterprise").values(max_waiting_jobs=1_000_000)
    )
    await session.commit()
    return org_id


async def _wait_jobs(runtime, ids: list[str], within: float = 300) -> None:
    deadline = time.monotonic() + within
    pending = list(ids)
    while pending:
        async with runtime.sessionmaker() as session:
            done = await session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(pending[:1000]), Job.status == "succeeded")
            )
        if done == len(pending[:1000]):
            pending = pending[1000:]
            continue
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} jobs did not finish")
        await asyncio.sleep(0.002 if len(ids) == 1 else 0.05)


# ---- main --------------------------------------------------------------------------------------


async def fresh_database(server_url: str) -> tuple[str, str]:
    name = f"atelier_bench_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    engine = create_engine(Settings(database={"url": url}).database.url)
    await migrations.upgrade(engine, "head")
    await engine.dispose()
    return url, name


async def drop_database(server_url: str, name: str) -> None:
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument(
        "--submitters",
        type=int,
        default=1,
        help="Concurrent submitters in the throughput run (threads for bare Celery, tasks with "
        "a session each for Atelier, as concurrent requests would be).",
    )
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument(
        "--database",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="A PostgreSQL server (any database on it); fresh databases are made there.",
    )
    args = parser.parse_args()
    log_dir = REPO / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(BROKER).flushdb()
    server = Settings(database={"url": args.database}).database.url
    # One database for each Atelier set-up: two executors never share one in real use (each
    # would release the other's waiting jobs).
    databases = [asyncio.run(fresh_database(server)) for _ in range(2)]
    try:
        results = measure(args, [url for url, _ in databases], log_dir)
    finally:
        for _, name in databases:
            asyncio.run(drop_database(server, name))
    report(args, results)


CELERY, LOCAL, BARE = "Atelier, Celery executor", "Atelier, local executor", "bare Celery"


def measure(args: argparse.Namespace, urls: list[str], log_dir: Path) -> dict[str, dict]:
    """Throughput of each set-up in turn, the others idle; then the singles of all three
    interleaved, so that what the machine is doing meanwhile weighs on each alike."""
    results: dict[str, dict] = {BARE: {}, CELERY: {}, LOCAL: {}}
    processes: list[subprocess.Popen] = []
    try:
        bare = bare_worker(log_dir)
        processes.append(bare)
        results[BARE] = bare_throughput(args.jobs, args.submitters, bare.pid)
        print(BARE, results[BARE], flush=True)
        celery_env = env_for(urls[0])
        worker = spawn(
            [sys.executable, "-m", "atelier", "worker", f"--concurrency={WORKERS}"],
            celery_env,
            "ready.",
            log_dir / "atelier-worker.log",
        )
        processes.append(worker)
        asyncio.run(_measure_atelier(args, results, urls, worker.pid))
    finally:
        for process in reversed(processes):
            stop(process)
        from bench.bare_celery import app

        app.close()
    return results


async def _measure_atelier(
    args: argparse.Namespace, results: dict[str, dict], urls: list[str], worker: int
) -> None:
    from atelier.adapters.executors.celery import CeleryExecutor
    from atelier.adapters.executors.local import LocalExecutor

    celery_settings = _settings(env_for(urls[0]))
    local_env = env_for(urls[1]) | {
        "ATELIER_JOBS__EXECUTOR": "local",
        "ATELIER_JOBS__CONCURRENCY": str(WORKERS),
    }
    # The local pool's processes take their settings from the environment.
    os.environ.update(
        {k: v for k, v in local_env.items() if k.startswith(("ATELIER_", "PYTHON", "BENCH_"))}
    )
    local_settings = _settings(local_env)
    celery = Atelier(celery_settings, CeleryExecutor(celery_settings, app=None), worker)
    local = Atelier(local_settings, LocalExecutor(local_settings), None)
    try:
        for label, atelier in ((CELERY, celery), (LOCAL, local)):
            await atelier.start()
            results[label] = await atelier.throughput(args.jobs, args.submitters)
            print(label, results[label], flush=True)
        r = redis.Redis.from_url(BROKER)
        singles = [
            (BARE, lambda: bare_single(r)),
            (CELERY, celery.single),
            (LOCAL, local.single),
        ]
        latencies: dict[str, list[float]] = {label: [] for label, _ in singles}
        for round_ in range(args.singles):
            # Each set-up goes first in turn: none always follows the same one.
            shift = round_ % len(singles)
            for label, single in singles[shift:] + singles[:shift]:
                latencies[label].append(await single())
        for label, samples in latencies.items():
            p50, p99 = percentiles(samples)
            results[label] |= {"p50_ms": p50 * 1000, "p99_ms": p99 * 1000}
        for label, atelier in ((CELERY, celery), (LOCAL, local)):
            print(f"  {label}, singles' median: {await atelier.steps()}", flush=True)
    finally:
        for atelier in (celery, local):
            await atelier.close()


def report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    print(
        f"# {datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {WORKERS} worker processes, PostgreSQL + Redis"
    )
    print(f"| executor | {args.jobs} no-op jobs: jobs/s | submit-to-start p50 | p99 |")
    print("|---|---|---|---|")
    for label, figures in results.items():
        print(
            f"| {label} | {figures['throughput']:.0f} | {figures['p50_ms']:.1f} ms | "
            f"{figures['p99_ms']:.1f} ms |"
        )
    parts = list(results[BARE]["cpu"])
    print(f"\nCPU per job in the throughput run, ms: | executor | {' | '.join(parts)} |")
    print("|---|" + "---|" * len(parts))
    for label, figures in results.items():
        cells = " | ".join(f"{figures['cpu'][part]:.2f}" for part in parts)
        print(f"| {label} | {cells} |")
    bare, ours = results[BARE], results[CELERY]
    print(
        f"\nAtelier/Celery throughput: {ours['throughput'] / bare['throughput']:.0%} of bare "
        f"Celery (target >= 50%); p50 latency: {ours['p50_ms'] / bare['p50_ms']:.2f}x "
        f"(target < 2x)"
    )


def _settings(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return Settings(_env_file=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
