"""What releasing waiting jobs costs as the backlog grows, on PostgreSQL.

    .venv/bin/python bench/release.py [--backlogs 200,2000,10000] [--database postgresql://...]

For each backlog size, a fresh database holds that many jobs waiting in the `default` queue
(nine in ten from one organization, the rest spread over three others) and 16 handed over.
The release the dispatcher runs when a queue's window frees up (16 slots) is timed 50 times,
each inside a transaction rolled back, so every run sees the same backlog: once on the young
table, as a flood into a fresh database meets it (no statistics yet: the planner guesses), once
after `ANALYZE`, as autovacuum leaves a table that has been in use for a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench.jobs`, `bench.kinds`

from atelier.core.clock import SystemClock  # noqa: E402
from atelier.core.db import create_engine, create_sessionmaker  # noqa: E402
from atelier.jobs import service  # noqa: E402
from atelier.jobs import statements as sql  # noqa: E402
from atelier.jobs.registry import registry  # noqa: E402
from atelier.settings import Settings  # noqa: E402
from bench import kinds  # noqa: E402, F401 - registers bench.noop
from bench.jobs import _bench_org, drop_database, fresh_database  # noqa: E402

FREE = 16
RUNS = 50


async def release_times(url: str, backlog: int, analyze: bool) -> list[float]:
    engine = create_engine(Settings(database={"url": url}).database.url)
    sessionmaker = create_sessionmaker(engine)
    orgs = []
    for _ in range(4):
        async with sessionmaker() as session:
            orgs.append(await _bench_org(session))
    kind = registry.kinds["bench.noop"]
    clock = SystemClock()
    rows = []
    for n in range(backlog + FREE):
        data = service._validate(kind, {}).model_dump(mode="json")
        org = orgs[0] if n % 10 else orgs[1 + n % 3]
        row = service._new_job(kind, data, org, None, None, clock.now())
        if n < backlog:
            row["dispatched_at"] = None  # waiting
        rows.append(row)
    async with engine.begin() as connection:
        await connection.execute(sql.INSERT, rows)
    if analyze:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("ANALYZE jobs"))
    times = []
    params = {"p_queue": "default", "p_free": FREE}
    for _ in range(RUNS + 5):
        async with engine.connect() as connection:
            transaction = await connection.begin()
            begin = time.perf_counter()
            released = await connection.execute(sql.RELEASE_PG, params | {"p_now": clock.now()})
            times.append(time.perf_counter() - begin)
            assert len(released.all()) == FREE
            await transaction.rollback()
    await engine.dispose()
    return times[5:]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", default="200,2000,10000")
    parser.add_argument(
        "--database",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        help="A PostgreSQL server (any database on it); a fresh database is made per run.",
    )
    args = parser.parse_args()
    server = Settings(database={"url": args.database}).database.url
    print("| waiting jobs | young table p50 | p99 | after ANALYZE p50 | p99 |")
    print("|---|---|---|---|---|")
    for backlog in (int(size) for size in args.backlogs.split(",")):
        cells = []
        for analyze in (False, True):
            url, name = await fresh_database(server)
            try:
                times = sorted(await release_times(url, backlog, analyze))
            finally:
                await drop_database(server, name)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            cells += [f"{statistics.median(times) * 1000:.1f} ms", f"{p99 * 1000:.1f} ms"]
        print(f"| {backlog:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
