"""Every domain's tables, gathered on one MetaData for Alembic and the tests.

Each domain that adds a `models.py` is imported here explicitly; nothing registers itself.
"""

from atelier.core.db import Base

metadata = Base.metadata
