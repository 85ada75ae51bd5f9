"""The plans and usage tables."""

from sqlalchemy import BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atelier.core.db import Base


class Plan(Base):
    """A plan's limits; NULL means unlimited."""

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # "trial", "free", ...
    name: Mapped[str] = mapped_column(String(64))
    max_members: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    monthly_compute_seconds: Mapped[int | None] = mapped_column(BigInteger)
    monthly_image_generations: Mapped[int | None] = mapped_column(Integer)
    monthly_photo_processings: Mapped[int | None] = mapped_column(Integer)
    monthly_predictions: Mapped[int | None] = mapped_column(BigInteger)
    api_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    trial_days: Mapped[int | None] = mapped_column(Integer)
    # Higher goes first when organizations wait for job slots; equal priorities take turns.
    job_priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Jobs an organization may keep waiting for a slot; more are refused with 429.
    max_waiting_jobs: Mapped[int | None] = mapped_column(Integer)
    # Organizations a user may own (or have created) while owning one on this plan; a user's
    # limit is the highest among their organizations' plans.
    max_orgs_owned: Mapped[int | None] = mapped_column(Integer)


class Usage(Base):
    """How much of a meter an organization used in one month (`period` is `YYYY-MM`)."""

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint("org_id", "meter", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(40), index=True)
    meter: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(7))
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
