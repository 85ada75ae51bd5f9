"""The database: declarative base, engine, sessions and units of work.

One `AsyncSession` per request, job attempt or CLI command. A service that writes wraps its work in
`transaction(session)`: the outermost block commits when it exits cleanly and rolls back if it
raises; inner blocks join it. Side effects wait for the outcome: `on_commit` callbacks run after
the commit, `on_rollback` callbacks (removing files written for a failed operation) after a
rollback.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import DateTime, Executable, MetaData, Row, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    MultipleResultsFound,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

log = structlog.get_logger(__name__)

# Stable constraint names on every database, so migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 5,
    pool_timeout: float = 10.0,
    connect_timeout: float = 5.0,
    sqlite_synchronous: str = "FULL",
) -> AsyncEngine:
    """An engine for SQLite (WAL, foreign keys, durable commits) or PostgreSQL. Connects lazily.

    The keyword arguments are the fields of `DatabaseSettings`: `create_engine(**s.model_dump())`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed,
            echo=echo,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            connect_args={"timeout": connect_timeout},
        )
        _configure_sqlite(engine, synchronous=sqlite_synchronous)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_driver_name() == "asyncpg":
        connect_args["timeout"] = connect_timeout
    engine = create_async_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
    )
    _ping_idle_connections(engine)
    return engine


# A pooled connection unused for longer than this is tested before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN = "atelier.checked_in"


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Like `pool_pre_ping`, but only for connections that sat idle in the pool.

    A database restart breaks the pooled connections; testing each one at checkout hides that
    from requests, but costs a round trip per transaction (a third of a short one). A
    connection checked in less than a second ago is handed out as it is: the database would
    have to restart within that second, and then the failing statement invalidates the whole
    pool, as it would have right after a ping.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _fresh(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_CHECKED_IN, 0.0) <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            _ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (a new one if needed).
            raise DisconnectionError("pooled connection failed its ping") from exc


def _ping(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()


_SYNCHRONOUS = {"NORMAL": "NORMAL", "FULL": "FULL"}


def _configure_sqlite(engine: AsyncEngine, *, synchronous: str) -> None:
    """Pragmas on every connection, and transactions that SQLAlchemy (not pysqlite) controls.

    pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; SQLAlchemy documents
    taking it over. Reads begin DEFERRED, so they never wait for each other. A unit of work
    (`transaction()`) begins IMMEDIATE: it takes the write lock up front, so two writers queue
    on busy_timeout instead of one failing with "database is locked" when its read upgrades.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL is a property of the file: switching needs a lock, so only the first connection
        # to a new database does it.
        cursor.execute("PRAGMA journal_mode")
        if cursor.fetchone()[0] != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={_SYNCHRONOUS[synchronous]}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        writer = connection.get_execution_options().get(_WRITER, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)


def is_transient(exc: BaseException) -> bool:
    """A database failure that may pass if the work is tried again: the server or the
    connection (refused, dropped, restarted), a lock held past the busy timeout, no free pooled
    connection in time; not a statement the database refuses (a constraint, a type)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
        if sqlite_code is not None:  # a missing table is an OperationalError there too
            return sqlite_code & 0xFF in _SQLITE_BUSY_CODES
        return isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError | TimeoutError | PoolTimeout)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def ping(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class StatementConnection:
    """A connection of its own for one-statement writes on a hot path (a job's claim and end).

    A session per statement costs more than the statement: the pool checkout with its ping,
    BEGIN and COMMIT round trips, the unit of work. This holds one connection and runs each
    statement alone: in autocommit on PostgreSQL (one round trip), in a writer transaction on
    SQLite. A held connection found broken (the database restarted) is replaced, and the
    statement tried once more on the new one.

    On PostgreSQL a statement goes to the driver (asyncpg) directly, compiled once
    (`DriverStatement`): SQLAlchemy's execution and result machinery cost about as much CPU as
    the round trip. A statement that fails there (it changed nothing: each one commits alone)
    is run again through SQLAlchemy, which replaces a broken connection and raises its usual
    exceptions.

    `durable=False` (PostgreSQL): commits do not wait for the WAL to reach
    the disk (`synchronous_commit = off`), for writes whose loss in a database server crash is
    recovered otherwise; what was committed is never corrupted, only the last fraction of a
    second may be lost. The connection is taken out of the pool, so the setting never reaches
    another session.
    """

    def __init__(self, engine: AsyncEngine, *, durable: bool = True) -> None:
        self.engine = engine
        self._autocommit = engine.dialect.name == "postgresql"
        self._relaxed = self._autocommit and not durable
        self._connection: AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._compiled: dict[Executable, DriverStatement | None] = {}

    async def one_or_none(
        self, statement: Executable, params: dict[str, Any] | None = None
    ) -> Row[Any] | None:
        """Run `statement`, committed at once; its only row, or None."""
        async with self._lock:
            if self._autocommit:
                rows = await self._run_on_driver(await self._held(), statement, params)
                if rows is not None:
                    if len(rows) > 1:  # it ran, and committed: never run it again
                        raise MultipleResultsFound("the statement returned more than one row")
                    return rows[0] if rows else None
            try:
                return await self._run(await self._held(), statement, params)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                await self.close()
            # The connection had broken (most often: the database restarted since its last
            # use, so the statement never reached it). Once more, on a new connection.
            return await self._run(await self._held(), statement, params)

    async def _held(self) -> AsyncConnection:
        if self._connection is None:
            connection = await self._prepare(await self.engine.connect())
            if self._relaxed:
                connection.sync_connection.detach()
                await connection.exec_driver_sql("SET synchronous_commit = off")
            self._connection = connection
        return self._connection

    async def _prepare(self, connection: AsyncConnection) -> AsyncConnection:
        if self._autocommit:
            return await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await connection.execution_options(**{_WRITER: True})

    async def _run_on_driver(
        self, connection: AsyncConnection, statement: Executable, params: dict[str, Any] | None
    ) -> list[Any] | None:
        """The statement's rows (asyncpg Records: indexable like Rows), or None where it did
        not run there: a statement the driver path cannot take, or a failure (each statement
        commits alone, so a failed one changed nothing; SQLAlchemy then says why, or
        reconnects)."""
        if statement not in self._compiled:
            try:
                self._compiled[statement] = DriverStatement(statement, connection.dialect)
            except Exception:  # e.g. no parameters: always SQLAlchemy's execute
                self._compiled[statement] = None
        compiled = self._compiled[statement]
        if compiled is None:
            return None
        try:
            arguments = compiled.arguments(params or {})
            driver = connection.sync_connection.connection.dbapi_connection.driver_connection
            return await driver.fetch(compiled.sql, *arguments)
        except Exception:
            log.debug("driver_statement_failed", exc_info=True)
            return None

    async def _run(
        self, connection: AsyncConnection, statement: Executable, params: dict[str, Any] | None
    ) -> Row[Any] | None:
        if self._autocommit:
            return (await connection.execute(statement, params)).one_or_none()
        async with connection.begin():
            return (await connection.execute(statement, params)).one_or_none()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # already broken: the pool discards it
                log.debug("statement_connection_close_failed", exc_info=True)


class DriverStatement:
    """A Core statement compiled once for the driver: its SQL with positional parameters, and
    how to make those from a dict (SQLAlchemy's bind processors, e.g. JSON and timestamps; the
    values of the literals the statement carries)."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if not compiled.positiontup:
            raise ValueError("not a statement with positional parameters")
        if any(bind.expanding or bind.literal_execute for bind in compiled.binds.values()):
            raise ValueError("parameters rendered per call (IN lists): SQLAlchemy's execute")
        self.sql: str = compiled.string
        processors = compiled._bind_processors
        self.names = tuple(compiled.positiontup)
        self.processors = tuple(processors.get(name) for name in self.names)
        self.literals = {
            name: bind.value for name, bind in compiled.binds.items() if not bind.required
        }

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else self.literals[name]
            values.append(value if process is None else process(value))
        return values


# ---- units of work -------------------------------------------------------------------------

Callback = Callable[..., Awaitable[Any] | Any]
_DEPTH = "atelier.tx_depth"
_WRITER = "atelier_writer"
_ON_COMMIT = "atelier.on_commit"
_ON_ROLLBACK = "atelier.on_rollback"


@asynccontextmanager
async def transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on clean exit of the outermost block, roll back on error."""
    depth = session.info.get(_DEPTH, 0)
    session.info[_DEPTH] = depth + 1
    if depth:
        try:
            yield session
        finally:
            session.info[_DEPTH] = depth
        return
    session.info[_ON_COMMIT] = []
    session.info[_ON_ROLLBACK] = []
    try:
        if session.in_transaction() and not (session.new or session.dirty or session.deleted):
            # Only reads so far (e.g. resolving the caller): end that snapshot, so the unit of
            # work begins as a writer below rather than upgrading a read (SQLITE_BUSY).
            await session.commit()
        if not session.in_transaction():
            # Begin now, as a writer (BEGIN IMMEDIATE on SQLite; a plain BEGIN elsewhere).
            await session.connection(execution_options={_WRITER: True})
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        await _run(session.info.pop(_ON_ROLLBACK, []), "rollback")
        session.info.pop(_ON_COMMIT, None)
        raise
    else:
        session.info.pop(_ON_ROLLBACK, None)
        await _run(session.info.pop(_ON_COMMIT, []), "commit")
    finally:
        session.info[_DEPTH] = 0


def in_unit_of_work(session: AsyncSession) -> bool:
    """Whether the session has writes under way: an open `transaction` block or ORM changes."""
    return bool(session.info.get(_DEPTH) or session.new or session.dirty or session.deleted)


def on_commit(session: AsyncSession, fn: Callback, *args: Any) -> None:
    """Run `fn(*args)` after the current transaction commits; dropped if it rolls back."""
    _callbacks(session, _ON_COMMIT).append((fn, args))


def on_rollback(session: AsyncSession, fn: Callback, *args: Any) -> None:
    """Run `fn(*args)` if the current transaction rolls back (e.g. delete a file it wrote)."""
    _callbacks(session, _ON_ROLLBACK).append((fn, args))


def _callbacks(session: AsyncSession, key: str) -> list[tuple[Callback, tuple[Any, ...]]]:
    if not session.info.get(_DEPTH):
        raise RuntimeError("on_commit/on_rollback need an open transaction(session) block")
    return session.info[key]


async def _run(callbacks: list[tuple[Callback, tuple[Any, ...]]], outcome: str) -> None:
    # A failing callback must not hide the others or the transaction's own outcome.
    for fn, args in callbacks:
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("transaction_callback_failed", outcome=outcome, callback=repr(fn))
