from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from atelier import tables
from atelier.ops import migrations


async def test_upgrade_downgrade_and_upgrade_again(engine):
    head = migrations.head_revision()
    assert head is not None
    await migrations.upgrade(engine, "head")
    assert await migrations.current_revision(engine) == head
    assert await migrations.is_current(engine)

    await migrations.downgrade(engine, "base")
    assert await migrations.current_revision(engine) is None
    assert not await migrations.is_current(engine)

    await migrations.upgrade(engine, "head")
    assert await migrations.current_revision(engine) == head


async def test_migrations_build_exactly_the_tables_the_models_declare(engine):
    """Fails when a models.py changes without a migration (or a migration without the model)."""

    def diff(connection):
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, tables.metadata)

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []
        names = await connection.run_sync(lambda c: inspect(c).get_table_names())
    assert "alembic_version" in names
