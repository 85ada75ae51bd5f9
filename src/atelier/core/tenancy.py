"""The one way to reach tenant-owned rows: filtered by the principal's organization.

Every tenant-owned table has an `org_id` column. Reading through `org_select` / `get_owned`
makes another organization's row indistinguishable from a missing one (404, never 403).
"""

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.errors import NotFound
from atelier.core.principal import Principal

T = TypeVar("T")


def org_select(model: type[T], principal: Principal) -> Select[tuple[T]]:
    """`SELECT model WHERE org_id = <the principal's organization>`; add filters to it."""
    return select(model).where(model.org_id == principal.org_id)  # type: ignore[attr-defined]


async def get_owned(
    session: AsyncSession, model: type[T], principal: Principal, object_id: Any, *, what: str
) -> T:
    """The row with this id in the principal's organization, or NotFound."""
    row = await session.scalar(
        org_select(model, principal).where(model.id == object_id)  # type: ignore[attr-defined]
    )
    if row is None:
        raise NotFound(f"No {what} {object_id}")
    return row
