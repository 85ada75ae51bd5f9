import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from atelier.core.pagination import Page, PageRequest, paginate

scratch = MetaData()
items = Table(
    "test_items", scratch, Column("id", Integer, primary_key=True), Column("name", String(20))
)


@pytest.fixture
async def session(db_session):
    # On the test's connection, outside the session's savepoints, so rollbacks keep the table.
    await db_session.bind.run_sync(scratch.create_all)
    await db_session.execute(items.insert(), [{"id": i, "name": f"n{i}"} for i in range(1, 8)])
    return db_session


async def _page(session, limit, offset) -> Page:
    statement = select(items.c.id).order_by(items.c.id)
    return await paginate(session, statement, PageRequest(limit=limit, offset=offset))


async def test_pages_carry_items_and_the_total(session):
    first = await _page(session, 3, 0)
    assert first.items == [1, 2, 3]
    assert (first.total, first.limit, first.offset, first.has_more) == (7, 3, 0, True)
    last = await _page(session, 3, 6)
    assert last.items == [7]
    assert last.has_more is False


async def test_a_page_past_the_end_is_empty_with_the_total(session):
    page = await _page(session, 5, 50)
    assert page.items == []
    assert page.total == 7
