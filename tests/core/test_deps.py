import pytest
from fastapi import APIRouter
from sqlalchemy import text

from atelier.core.deps import DbSession

router = APIRouter(prefix="/api/v1/test")
seen = []


@router.get("/session")
async def use_session(session: DbSession) -> dict:
    seen.append(session)
    return {"one": await session.scalar(text("SELECT 1"))}


@pytest.fixture
def app(app):
    app.include_router(router)
    return app


async def test_each_request_gets_its_own_session_closed_afterwards(client):
    seen.clear()
    for _ in range(2):
        response = await client.get("/api/v1/test/session")
        assert response.json() == {"one": 1}
    first, second = seen
    assert first is not second
    assert not first.in_transaction()  # closed: its connection went back to the pool
