"""A database of a test's own, empty (not migrated), for tests that commit for real or move the
schema up and down: a SQLite file, or a PostgreSQL database made and dropped on the server of
`ATELIER_TEST_DATABASE_URL`."""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from atelier.core.db import create_engine
from atelier.settings import DatabaseSettings


@asynccontextmanager
async def own_database(tmp_path: Path, prefix: str) -> AsyncIterator[AsyncEngine]:
    url = os.environ.get("ATELIER_TEST_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / f'{prefix}.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    server = DatabaseSettings(url=url).url
    name = f"atelier_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(server.rsplit("/", 1)[0] + "/" + name)
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
