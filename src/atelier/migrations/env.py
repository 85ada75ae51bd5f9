"""Alembic environment. Atelier runs it through `atelier.ops.migrations`, which hands over an open
connection; the `alembic` command line (for `alembic revision --autogenerate`) gets one from the
`ATELIER_*` settings instead."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from atelier import tables
from atelier.core.db import UTCDateTime, create_engine
from atelier.settings import Settings

config = context.config
target_metadata = tables.metadata


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Write our column types as plain SQLAlchemy ones, so revisions never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=_render_item,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_settings() -> None:
    engine = create_engine(**Settings().database.model_dump())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_with_settings())
