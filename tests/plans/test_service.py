from datetime import UTC, datetime

import pytest

from atelier.core.clock import FixedClock
from atelier.core.errors import QuotaExceeded
from atelier.plans import service


@pytest.fixture
def november():
    return FixedClock(datetime(2026, 11, 21, 12, tzinfo=UTC))


async def test_the_four_plans_are_seeded(db_session):
    plans = {p.id: p for p in await service.list_plans(db_session)}
    assert set(plans) == {"trial", "free", "pro", "enterprise"}
    assert plans["trial"].trial_days == 14
    assert plans["enterprise"].monthly_predictions is None  # unlimited


async def test_usage_adds_up_per_month(db_session, november):
    await service.record(db_session, "org_a", "predictions", 40, clock=november)
    await service.record(db_session, "org_a", "predictions", 2, clock=november)
    await service.record(db_session, "org_b", "predictions", 5, clock=november)
    december = FixedClock(datetime(2026, 12, 1, tzinfo=UTC))
    await service.record(db_session, "org_a", "predictions", 7, clock=december)
    assert await service.used(db_session, "org_a", "predictions", clock=november) == 42
    assert await service.used(db_session, "org_a", "predictions", clock=december) == 7
    assert await service.used(db_session, "org_b", "predictions", clock=november) == 5


async def test_over_the_limit_is_a_402_naming_meter_limit_and_usage(db_session, november):
    free = await service.get_plan(db_session, "free")  # 20 image generations a month
    await service.record(db_session, "org_a", "image_generations", 19, clock=november)
    await service.check(db_session, free, "org_a", "image_generations", clock=november)
    await service.record(db_session, "org_a", "image_generations", 1, clock=november)
    with pytest.raises(QuotaExceeded) as exc:
        await service.check(db_session, free, "org_a", "image_generations", clock=november)
    assert exc.value.status == 402
    assert exc.value.extra == {"meter": "image_generations", "limit": 20, "used": 20}
    assert "20 image_generations a month" in exc.value.detail


async def test_unlimited_plans_never_refuse(db_session, november):
    enterprise = await service.get_plan(db_session, "enterprise")
    await service.record(db_session, "org_a", "predictions", 10**12, clock=november)
    await service.check(
        db_session, enterprise, "org_a", "predictions", amount=10**6, clock=november
    )


async def test_unknown_meters_are_a_programming_error(db_session):
    with pytest.raises(ValueError):
        await service.record(db_session, "org_a", "coffee", 1)
