"""Two organizations asked for at once by a user with room for one: one is made, the other is a
402. Each request has its own connection and commits for real, so this runs in a database of
its own."""

import asyncio

import pytest

from atelier.core.clock import SystemClock
from atelier.core.context import NO_REQUEST
from atelier.core.db import create_sessionmaker
from atelier.core.errors import QuotaExceeded
from atelier.core.principal import Principal
from atelier.identity import orgs
from atelier.ops import migrations
from tests.identity.factories import make_user, personal_org_id
from tests.own_database import own_database

ROUNDS = 5


@pytest.fixture
async def sessionmaker(tmp_path):
    async with own_database(tmp_path, "org_race") as engine:
        await migrations.upgrade(engine, "head")
        yield create_sessionmaker(engine)


async def test_concurrent_creations_cannot_both_take_the_last_place(sessionmaker):
    for n in range(ROUNDS):
        async with sessionmaker() as session:
            user = await make_user(session, display_name=f"Racer {n}")  # owns 1 of 2 (trial)
            principal = Principal(
                org_id=await personal_org_id(session, user), role="owner", user_id=user.id
            )

        async def create(name: str, principal: Principal = principal) -> str:
            async with sessionmaker() as session:
                try:
                    await orgs.create_org(
                        session,
                        principal,
                        name=name,
                        plan_id="trial",
                        info=NO_REQUEST,
                        clock=SystemClock(),
                    )
                except QuotaExceeded:
                    return "refused"
                return "created"

        outcomes = await asyncio.gather(create("Left"), create("Right"))
        assert sorted(outcomes) == ["created", "refused"], f"round {n}"
