"""Every domain's tables, gathered on one MetaData for Alembic and the tests.

Each domain that adds a `models.py` is imported here explicitly; nothing registers itself.
"""

from atelier.audit import models as audit_models
from atelier.automl import models as automl_models
from atelier.core.db import Base
from atelier.datasets import models as datasets_models
from atelier.identity import models as identity_models
from atelier.jobs import models as jobs_models
from atelier.plans import models as plans_models
from atelier.registry import models as registry_models
from atelier.storage import models as storage_models

metadata = Base.metadata
DOMAIN_MODELS = (
    audit_models,
    plans_models,
    identity_models,
    storage_models,
    jobs_models,
    datasets_models,
    automl_models,
    registry_models,
)
