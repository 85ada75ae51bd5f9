"""Limit/offset pagination with a total, for every list endpoint.

A router takes `params: PageParams` (query `?limit=&offset=`), the service calls
`paginate(session, statement, params)` and returns a `Page[T]`. A page that takes only an offset
(the web UI's lists) uses `Offset`.

Both are bounded, so a client gets a 422 rather than a database error: SQLite and PostgreSQL
take 64-bit integers, and `offset=100000000000000000000` failed in the driver with a 500.
`MAX_OFFSET` (10^9) is far beyond any table an organisation lists page by page and far within
every integer type a database binds it to.
"""

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_OFFSET = 1_000_000_000

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]


class PageRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int = DEFAULT_LIMIT
    offset: int = 0


class Page(BaseModel, Generic[T]):
    """One page of results: `items`, the `total` matching, and where this page starts."""

    items: list[T]
    total: int
    limit: int
    offset: int

    def map(self, convert: Callable[[T], Any]) -> "Page[Any]":
        """The same page with each item converted (e.g. a row into what the API shows)."""
        return Page(
            items=[convert(item) for item in self.items],
            total=self.total,
            limit=self.limit,
            offset=self.offset,
        )

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


def _page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> PageRequest:
    return PageRequest(limit=limit, offset=offset)


PageParams = Annotated[PageRequest, Depends(_page_request)]


async def paginate(session: AsyncSession, statement: Select[Any], page: PageRequest) -> Page[Any]:
    """Run `statement` for one page, plus a count of all rows it matches.

    The statement must have a deterministic `ORDER BY`, or pages may overlap.
    """
    total = await session.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    rows = await session.scalars(statement.limit(page.limit).offset(page.offset))
    return Page(items=list(rows), total=total or 0, limit=page.limit, offset=page.offset)
