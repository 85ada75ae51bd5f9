"""Limit/offset pagination with a total, for every list endpoint.

A router takes `params: PageParams` (query `?limit=&offset=`), the service calls
`paginate(session, statement, params)` and returns a `Page[T]`.
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
    offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
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
