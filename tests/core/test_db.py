import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text

from atelier.core.db import (
    UTCDateTime,
    create_engine,
    create_sessionmaker,
    on_commit,
    on_rollback,
    transaction,
)

scratch = MetaData()
notes = Table(
    "test_notes",
    scratch,
    Column("id", Integer, primary_key=True),
    Column("body", String(50), nullable=False),
    Column("at", UTCDateTime, nullable=True),
)


@pytest.fixture
async def session(db_session):
    """The test session with a scratch table, created inside the test's outer transaction."""
    # On the test's connection, outside the session's savepoints, so rollbacks keep the table.
    await db_session.bind.run_sync(scratch.create_all)
    return db_session


async def count(session) -> int:
    return await session.scalar(select(func.count()).select_from(notes))


async def test_transaction_commits_when_the_block_ends(session):
    async with transaction(session):
        await session.execute(notes.insert().values(body="kept"))
    await session.rollback()  # nothing left to roll back: the block committed
    assert await count(session) == 1


async def test_transaction_rolls_back_everything_on_error(session):
    with pytest.raises(ValueError, match="half-way"):
        async with transaction(session):
            await session.execute(notes.insert().values(body="first"))
            await session.execute(notes.insert().values(body="second"))
            raise ValueError("failed half-way")
    assert await count(session) == 0


async def test_nested_blocks_join_the_outer_unit_of_work(session):
    with pytest.raises(RuntimeError):
        async with transaction(session):
            await session.execute(notes.insert().values(body="outer"))
            async with transaction(session):
                await session.execute(notes.insert().values(body="inner"))
            # the inner block's exit did not commit: the outer failure undoes both
            raise RuntimeError
    assert await count(session) == 0


async def test_on_commit_runs_after_commit_and_on_rollback_is_dropped(session):
    calls = []

    async def async_hook(name):
        calls.append(("async", name))

    async with transaction(session):
        await session.execute(notes.insert().values(body="x"))
        on_commit(session, calls.append, "committed")
        on_commit(session, async_hook, "committed")
        on_rollback(session, calls.append, "rolled back")
        assert calls == []  # nothing runs before the outcome is known
    assert calls == ["committed", ("async", "committed")]


async def test_on_rollback_runs_after_rollback_and_on_commit_is_dropped(session):
    calls = []
    with pytest.raises(KeyError):
        async with transaction(session):
            on_commit(session, calls.append, "committed")
            on_rollback(session, calls.append, "cleaned up")
            raise KeyError
    assert calls == ["cleaned up"]


async def test_a_failing_callback_does_not_stop_the_others(session):
    calls = []

    def broken():
        raise OSError("disk gone")

    async with transaction(session):
        on_commit(session, broken)
        on_commit(session, calls.append, "still ran")
    assert calls == ["still ran"]


async def test_callbacks_need_an_open_transaction(session):
    with pytest.raises(RuntimeError, match="open transaction"):
        on_commit(session, print)


async def test_utc_datetimes_come_back_aware_and_in_utc(session):
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 21, 20, 30, tzinfo=paris)
    async with transaction(session):
        await session.execute(notes.insert().values(body="t", at=moment))
    stored = await session.scalar(select(notes.c.at))
    assert stored == moment
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 19


async def test_naive_datetimes_are_refused(session):
    with pytest.raises(Exception, match="naive datetime"):
        await session.execute(notes.insert().values(body="t", at=datetime(2026, 1, 1)))


async def test_sqlite_connections_are_durable_with_foreign_keys(session, engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    assert (await session.scalar(text("PRAGMA journal_mode"))) == "wal"
    assert (await session.scalar(text("PRAGMA foreign_keys"))) == 1
    assert (await session.scalar(text("PRAGMA synchronous"))) == 2  # FULL


async def test_now_is_aware():
    assert datetime.now(UTC).tzinfo is UTC


async def test_sqlite_readers_never_wait_and_writers_queue(tmp_path):
    """Reads begin DEFERRED; a unit of work begins IMMEDIATE and waits for the write lock."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(scratch.create_all)
    maker = create_sessionmaker(engine)
    second_writer_in = asyncio.Event()

    async def second_writer():
        async with maker() as other, transaction(other):
            second_writer_in.set()
            await other.execute(notes.insert().values(body="second"))

    try:
        async with maker() as writer, maker() as reader:
            async with transaction(writer):
                await writer.execute(notes.insert().values(body="first"))
                # An open writer does not block a reader, which sees the last committed state.
                assert await asyncio.wait_for(count(reader), 1) == 0
                await reader.rollback()
                queued = asyncio.create_task(second_writer())
                await asyncio.sleep(0.3)
                assert not second_writer_in.is_set()  # still waiting for the lock at BEGIN
            await asyncio.wait_for(queued, 5)
            assert await count(reader) == 2
    finally:
        await engine.dispose()
