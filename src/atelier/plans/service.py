"""Plan limits and usage metering."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import Clock, SystemClock
from atelier.core.errors import NotFound, QuotaExceeded
from atelier.plans.models import Plan, Usage

# Meters counted per calendar month (UTC), and the plan column holding each one's limit.
MONTHLY_METERS = {
    "compute_seconds": "monthly_compute_seconds",
    "image_generations": "monthly_image_generations",
    "photo_processings": "monthly_photo_processings",
    "predictions": "monthly_predictions",
}
# Limits on a current amount (members, stored bytes, running jobs), checked against a count
# the caller provides.
GAUGE_LIMITS = {
    "members": "max_members",
    "storage_bytes": "max_storage_bytes",
    "concurrent_jobs": "max_concurrent_jobs",
}


@dataclass(frozen=True)
class MeterUsage:
    meter: str
    used: int
    limit: int | None


def period_of(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m")


async def get_plan(session: AsyncSession, plan_id: str) -> Plan:
    plan = await session.get(Plan, plan_id)
    if plan is None:
        raise NotFound(f"No plan {plan_id!r}")
    return plan


async def list_plans(session: AsyncSession) -> list[Plan]:
    return list(await session.scalars(select(Plan).order_by(Plan.id)))


async def used(session: AsyncSession, org_id: str, meter: str, *, clock: Clock) -> int:
    amount = await session.scalar(
        select(Usage.amount).where(
            Usage.org_id == org_id, Usage.meter == meter, Usage.period == period_of(clock)
        )
    )
    return amount or 0


async def check(
    session: AsyncSession,
    plan: Plan,
    org_id: str,
    meter: str,
    *,
    amount: int = 1,
    clock: Clock | None = None,
) -> None:
    """Refuse (402) if adding `amount` to this month's `meter` would pass the plan's limit."""
    limit = getattr(plan, MONTHLY_METERS[meter])
    if limit is None:
        return
    current = await used(session, org_id, meter, clock=clock or SystemClock())
    if current + amount > limit:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {limit} {meter} a month; {current} used so far",
            meter=meter,
            limit=limit,
            used=current,
        )


def check_gauge(plan: Plan, limit_name: str, *, current: int, adding: int = 1) -> None:
    """Refuse (402) if `current + adding` passes a plan's limit on a current amount."""
    limit = getattr(plan, GAUGE_LIMITS[limit_name])
    if limit is not None and current + adding > limit:
        raise QuotaExceeded(
            f"The {plan.name} plan allows {limit} {limit_name.replace('_', ' ')}; {current} in use",
            meter=limit_name,
            limit=limit,
            used=current,
        )


def orgs_owned_limit(plans: Sequence[Plan]) -> int | None:
    """A user's limit on organizations: the highest `max_orgs_owned` among the plans of the
    organizations they own (None: unlimited)."""
    limits = [plan.max_orgs_owned for plan in plans]
    return None if None in limits else max(limits, default=0)


def check_orgs_owned(plans: Sequence[Plan], *, current: int) -> None:
    """Refuse (402, meter `orgs_owned`) one more organization past the user's limit."""
    limit = orgs_owned_limit(plans)
    if limit is not None and current + 1 > limit:
        raise QuotaExceeded(
            f"Your plan allows owning {limit} organization{'s' if limit != 1 else ''}; "
            f"you own or created {current}",
            meter="orgs_owned",
            limit=limit,
            used=current,
        )


def trial_end(plan: Plan, *, clock: Clock) -> datetime | None:
    """When a trial of `plan` starting now ends (None: the plan is no trial)."""
    return clock.now() + timedelta(days=plan.trial_days) if plan.trial_days else None


def trial_days_left(plan: Plan, trial_ends_at: datetime | None, *, clock: Clock) -> int | None:
    """Whole days left of a trial, a part day counting as one; 0 once it has ended, None when
    the plan is no trial."""
    if plan.trial_days is None or trial_ends_at is None:
        return None
    left = (trial_ends_at - clock.now()) / timedelta(days=1)
    return max(0, math.ceil(left))


async def record(
    session: AsyncSession, org_id: str, meter: str, amount: int, *, clock: Clock | None = None
) -> None:
    """Add `amount` to this month's `meter`, atomically (one upsert, no read-modify-write)."""
    if meter not in MONTHLY_METERS:
        raise ValueError(f"unknown meter {meter!r}")
    values = {
        "org_id": org_id,
        "meter": meter,
        "period": period_of(clock or SystemClock()),
        "amount": amount,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Usage).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["org_id", "meter", "period"],
        set_={"amount": Usage.amount + statement.excluded.amount},
    )
    await session.execute(statement)


async def usage_report(
    session: AsyncSession, plan: Plan, org_id: str, *, clock: Clock | None = None
) -> list[MeterUsage]:
    """This month's usage of every monthly meter against the plan."""
    clock = clock or SystemClock()
    rows = dict(
        (
            await session.execute(
                select(Usage.meter, Usage.amount).where(
                    Usage.org_id == org_id, Usage.period == period_of(clock)
                )
            )
        ).all()
    )
    return [
        MeterUsage(meter, rows.get(meter, 0), getattr(plan, column))
        for meter, column in MONTHLY_METERS.items()
    ]
