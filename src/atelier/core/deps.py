"""Annotated aliases for the FastAPI dependencies every router uses, so signatures read like types:
`async def endpoint(session: DbSession)`."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    # Services commit inside transaction(); closing here only returns the connection. Nothing is
    # committed in this teardown, which runs after the response is sent.
    async with request.app.state.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]
