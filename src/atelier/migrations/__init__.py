"""Alembic migrations. Run them with `atelier migrate`; `atelier up` runs them at start."""
