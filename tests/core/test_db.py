import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from atelier.core import db
from atelier.core.db import (
    StatementConnection,
    UTCDateTime,
    create_engine,
    create_sessionmaker,
    on_commit,
    on_rollback,
    transaction,
)
from tests.conftest import free_port

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


# ---- one-statement connections and idle pings ------------------------------------------------


@pytest.fixture
async def own_engine(database_url):
    """An engine of the test's own with a committed scratch table (statement connections
    commit, so they cannot run inside the test's rolled-back transaction)."""
    engine = create_engine(database_url)
    table = Table(
        f"test_counters_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer, nullable=False),
    )
    async with engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)
        await connection.execute(table.insert().values(id=1, n=0))
    yield engine, table
    async with engine.begin() as connection:
        await connection.run_sync(table.metadata.drop_all)
    await engine.dispose()


def bump(table):
    return update(table).where(table.c.id == 1).values(n=table.c.n + 1).returning(table.c.n)


async def test_a_statement_connection_commits_each_statement_at_once(own_engine):
    engine, table = own_engine
    statements = StatementConnection(engine)
    try:
        assert (await statements.one_or_none(bump(table)))[0] == 1
        assert await statements.one_or_none(bump(table).where(table.c.id == 2)) is None
        # Another connection sees the write: nothing waits for a commit.
        async with engine.connect() as other:
            assert await other.scalar(select(table.c.n)) == 1
        # A failing statement changes nothing and leaves the connection usable.
        with pytest.raises(IntegrityError):
            await statements.one_or_none(table.insert().values(id=1, n=5))
        assert (await statements.one_or_none(bump(table)))[0] == 2
    finally:
        await statements.close()


async def test_a_statement_goes_to_the_driver_with_its_values_converted(own_engine, monkeypatch):
    """On PostgreSQL the statement runs on asyncpg directly: JSON, timestamps, literals and
    repeated parameters arrive as SQLAlchemy would send them, and rows come back indexable."""
    engine, _ = own_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("the driver path is PostgreSQL's")
    table = Table(
        f"test_driver_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("doc", JSON),
        Column("at", UTCDateTime),
        Column("label", String(20)),
    )
    async with engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)
    statements = StatementConnection(engine)

    async def no_sqlalchemy(*args):
        raise AssertionError("the statement went through SQLAlchemy's execute")

    at = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)
    insert = (
        table.insert()
        .from_select(
            ["id", "doc", "at", "label"],
            select(
                bindparam("p_id", type_=Integer),
                bindparam("p_doc", type_=JSON),
                bindparam("p_at", type_=UTCDateTime),
                func.concat("job-", bindparam("p_id", type_=Integer)),
            ),
        )
        .returning(table.c.id, table.c.doc, table.c.at, table.c.label)
    )
    try:
        monkeypatch.setattr(statements, "_run", no_sqlalchemy)
        row = await statements.one_or_none(
            insert, {"p_id": 7, "p_doc": {"a": [1, "b"]}, "p_at": at}
        )
        assert tuple(row) == (7, {"a": [1, "b"]}, at, "job-7")
        missing = update(table).where(table.c.id == 8).values(label="x").returning(table.c.id)
        assert await statements.one_or_none(missing) is None
        async with engine.connect() as other:  # stored as SQLAlchemy itself would have
            stored = (await other.execute(select(table.c.doc, table.c.at))).one()
        assert tuple(stored) == ({"a": [1, "b"]}, at)
    finally:
        await statements.close()
        async with engine.begin() as connection:
            await connection.run_sync(table.metadata.drop_all)


async def test_a_statement_that_returns_several_rows_runs_once(own_engine):
    """It has run when its rows come back: the error must not run it again."""
    engine, table = own_engine
    statements = StatementConnection(engine)
    try:
        await statements.one_or_none(table.insert().values(id=2, n=0).returning(table.c.id))
        with pytest.raises(MultipleResultsFound):
            both = update(table).where(table.c.id >= 1).values(n=table.c.n + 1)
            await statements.one_or_none(both.returning(table.c.n))
        async with engine.connect() as other:
            counts = list(await other.scalars(select(table.c.n).order_by(table.c.id)))
        # Once (PostgreSQL: each statement commits alone) or not at all (SQLite's writer
        # transaction rolls back on the error); never twice.
        assert counts in ([1, 1], [0, 0])
    finally:
        await statements.close()


async def test_statements_the_driver_path_cannot_take_run_through_sqlalchemy(own_engine):
    """No parameters, or an IN list SQLAlchemy renders per call."""
    engine, table = own_engine
    statements = StatementConnection(engine)
    in_list = select(table.c.n).where(table.c.id.in_([1, 5]))
    try:
        for _ in range(2):
            assert (await statements.one_or_none(text("SELECT 1")))[0] == 1
            assert (await statements.one_or_none(in_list, {}))[0] == 0
        if engine.dialect.name == "postgresql":  # known once, not a failed round trip a call
            assert statements._compiled[in_list] is None
    finally:
        await statements.close()


async def postgres_pid(connection) -> int:
    return await connection.scalar(text("SELECT pg_backend_pid()"))


async def terminate(engine, pid: int) -> None:
    """Have the server close a connection (from a connection outside the engine's pool)."""
    admin = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        async with admin.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await admin.dispose()


async def test_a_statement_connection_replaces_a_connection_the_server_closed(own_engine):
    engine, table = own_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("a server that can close connections")
    statements = StatementConnection(engine)
    try:
        await statements.one_or_none(bump(table))
        held = statements._connection
        await terminate(engine, await postgres_pid(held))
        # The statement fails on the dead connection, then runs once on a new one.
        assert (await statements.one_or_none(bump(table)))[0] == 2
        assert statements._connection is not held
    finally:
        await statements.close()


async def test_a_relaxed_statement_connection_keeps_its_setting_to_itself(own_engine):
    engine, table = own_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("synchronous_commit is a PostgreSQL setting")
    statements = StatementConnection(engine, durable=False)
    try:
        await statements.one_or_none(bump(table))
        setting = await statements._connection.scalar(text("SHOW synchronous_commit"))
        assert setting == "off"
    finally:
        await statements.close()
    # Its connection left the pool: every pooled one still commits durably.
    async with engine.connect() as a, engine.connect() as b:
        assert {await c.scalar(text("SHOW synchronous_commit")) for c in (a, b)} == {"on"}


async def test_an_idle_pooled_connection_is_tested_before_use(own_engine, monkeypatch):
    engine, _ = own_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("a server that can close connections")
    async with engine.connect() as connection:
        pid = await postgres_pid(connection)
    await terminate(engine, pid)  # the pooled connection is now dead
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with engine.connect() as connection:
        # The ping found it dead; the pool handed out a new connection instead.
        assert await postgres_pid(connection) != pid


async def test_only_connections_idle_for_a_while_are_pinged(own_engine, monkeypatch):
    engine, _ = own_engine
    if engine.dialect.name != "postgresql":
        pytest.skip("pings are for PostgreSQL")
    pings = []
    real_ping = db._ping
    monkeypatch.setattr(db, "_ping", lambda c: (pings.append(c), real_ping(c)))
    for _ in range(3):  # a new connection, then the same one again at once
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    assert pings == []
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.05)
    await asyncio.sleep(0.1)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    assert len(pings) == 1


# ---- which failures are worth another try ---------------------------------------------------


@pytest.mark.backend_independent
async def test_transient_failures_are_told_from_refused_statements(tmp_path):
    """Real failures: a lock held past the busy timeout and a server that refuses the
    connection pass; a broken constraint does not."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}", connect_timeout=0.1)
    async with engine.begin() as connection:
        await connection.run_sync(scratch.create_all)
    maker = create_sessionmaker(engine)
    try:
        async with maker() as holder, transaction(holder):
            await holder.execute(notes.insert().values(id=1, body="held"))
            with pytest.raises(OperationalError, match="database is locked") as locked:
                async with maker() as other, transaction(other):
                    await other.execute(notes.insert().values(body="waits"))
        with pytest.raises(IntegrityError) as duplicate:
            async with maker() as session, transaction(session):
                await session.execute(notes.insert().values(id=1, body="again"))
        with pytest.raises(OperationalError, match="no such table") as missing:
            async with maker() as session:
                await session.execute(text("SELECT * FROM no_such_table"))
    finally:
        await engine.dispose()
    nowhere = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
    with pytest.raises(Exception) as refused:
        await db.ping(nowhere)
    await nowhere.dispose()

    assert db.is_transient(locked.value) is True
    assert db.is_transient(refused.value) is True
    assert db.is_transient(PoolTimeout("QueuePool limit reached")) is True
    assert db.is_transient(duplicate.value) is False
    assert db.is_transient(missing.value) is False  # SQLite's OperationalError for a bug
    assert db.is_transient(ValueError("not the database")) is False
