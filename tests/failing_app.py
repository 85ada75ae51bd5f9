"""Atelier with one more route, which fails the way a read fails when the database is in trouble.

Started by uvicorn in live tests (`tests.failing_app:build`) to measure what an unhandled error
costs every other request; production code has no such route.
"""

from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from atelier.app import app_from_environment
from atelier.core.deps import DbSession

FAIL_PATH = "/api/v1/test/fail"
READ_PATH = "/api/v1/test/read"

router = APIRouter()


@router.get(FAIL_PATH)
async def fail(session: DbSession) -> None:
    await session.execute(text("SELECT * FROM no_such_table"))


@router.get(READ_PATH)
async def read(session: DbSession) -> int:
    """The same read, succeeding: to warm the server up (connections, compiled statements)."""
    return (await session.execute(text("SELECT 1"))).scalar_one()


def build() -> FastAPI:
    """The app `atelier api` serves (settings from ATELIER_*), plus the failing route."""
    app = app_from_environment()
    app.include_router(router)
    return app
