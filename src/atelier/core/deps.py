"""Annotated aliases for the FastAPI dependencies every router uses, so signatures read like types:
`async def endpoint(session: DbSession)`."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import Clock
from atelier.core.context import RequestInfo


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    # Services commit inside transaction(); closing here only returns the connection. Nothing is
    # committed in this teardown, which runs after the response is sent.
    async with request.app.state.sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_session)]


def _request_info(request: Request) -> RequestInfo:
    return RequestInfo(
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:512] or None,
        request_id=getattr(request.state, "request_id", None),
    )


ClientInfo = Annotated[RequestInfo, Depends(_request_info)]


def _clock(request: Request) -> Clock:
    return request.app.state.clock


AppClock = Annotated[Clock, Depends(_clock)]


async def _anonymous_limit(request: Request) -> None:
    """Public API operations, per client address (the plan's limit applies once signed in)."""
    limiter = request.app.state.limiter
    address = request.client.host if request.client else "unknown"
    limit = request.app.state.settings.http.anonymous_requests_per_ip
    await limiter.hit_or_refuse(limit, "anonymous-ip", address, what="requests")


AnonymousLimit = Depends(_anonymous_limit)
