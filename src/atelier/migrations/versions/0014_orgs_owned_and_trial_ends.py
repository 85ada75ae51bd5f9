"""How many organizations a user may own, who created each organization, and trials that end.

`plans.max_orgs_owned` bounds the organizations a user owns or created (the highest among the
plans of the organizations they own); `organizations.created_by` keeps counting an organization
its creator handed over, so ownership transfers do not free a place. Organizations created
before this revision get their creator from the audit log, and those on a trial plan without an
end get one: `created_at` + the plan's `trial_days` (a trial already over ends at the next run
of `identity.expire_trials`).

Only `ADD COLUMN`, `DROP COLUMN` and indexes, never a batch copy of `organizations`: on SQLite
a copy drops the old table, and with foreign keys on that deletes every membership, key and
invitation through their `ON DELETE CASCADE`. So `created_by` is an id without a foreign key,
as the audit log keeps its actors.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Organizations a user may own on each seeded plan (None: unlimited). Every new organization
# starts on the trial plan, so a Free user makes no fresh trial organization.
SEED_ORGS_OWNED = (("trial", 2), ("free", 1), ("pro", 10), ("enterprise", None))

plans = sa.table(
    "plans",
    sa.column("id", sa.String),
    sa.column("trial_days", sa.Integer),
    sa.column("max_orgs_owned", sa.Integer),
)
organizations = sa.table(
    "organizations",
    sa.column("id", sa.String),
    sa.column("plan_id", sa.String),
    sa.column("created_by", sa.String),
    sa.column("trial_ends_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
audit_events = sa.table(
    "audit_events",
    sa.column("action", sa.String),
    sa.column("org_id", sa.String),
    sa.column("target_id", sa.String),
    sa.column("actor_user_id", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    op.add_column("plans", sa.Column("max_orgs_owned", sa.Integer(), nullable=True))
    op.add_column("organizations", sa.Column("created_by", sa.String(length=40), nullable=True))
    op.create_index("ix_organizations_created_by", "organizations", ["created_by"], unique=False)
    for plan_id, limit in SEED_ORGS_OWNED:
        op.execute(plans.update().where(plans.c.id == plan_id).values(max_orgs_owned=limit))
    _backfill_creators()
    _backfill_trial_ends()


def _backfill_creators() -> None:
    """The creator of each organization, as the audit log recorded it: `org.created` for a
    created one, `user.registered` for a personal one."""
    creator = (
        sa.select(audit_events.c.actor_user_id)
        .where(
            audit_events.c.actor_user_id.is_not(None),
            sa.or_(
                sa.and_(
                    audit_events.c.action == "org.created",
                    audit_events.c.target_id == organizations.c.id,
                ),
                sa.and_(
                    audit_events.c.action == "user.registered",
                    audit_events.c.org_id == organizations.c.id,
                ),
            ),
        )
        .order_by(audit_events.c.created_at)
        .limit(1)
        .scalar_subquery()
    )
    op.execute(organizations.update().values(created_by=creator))


def _backfill_trial_ends() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(organizations.c.id, organizations.c.created_at, plans.c.trial_days)
        .join(plans, plans.c.id == organizations.c.plan_id)
        .where(plans.c.trial_days.is_not(None), organizations.c.trial_ends_at.is_(None))
    ).all()
    for org_id, created_at, days in rows:
        connection.execute(
            organizations.update()
            .where(organizations.c.id == org_id)
            .values(trial_ends_at=created_at + timedelta(days=days))
        )


def downgrade() -> None:
    op.drop_index("ix_organizations_created_by", table_name="organizations")
    op.drop_column("organizations", "created_by")
    op.drop_column("plans", "max_orgs_owned")
