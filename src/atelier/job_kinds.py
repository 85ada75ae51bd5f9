"""Every domain's job kinds and periodic tasks, gathered on one registry.

Each domain with a `jobs.py` is imported here explicitly; nothing registers itself from afar.
Every process that submits or runs jobs calls `load(settings)`, so all see the same kinds.
"""

import importlib

from atelier.automl import jobs as automl_jobs
from atelier.identity import jobs as identity_jobs
from atelier.jobs import periodic as jobs_periodic
from atelier.jobs.registry import Registry, registry
from atelier.ops import jobs as ops_jobs
from atelier.storage import jobs as storage_jobs

DOMAIN_JOBS = (jobs_periodic, ops_jobs, identity_jobs, storage_jobs, automl_jobs)


def load(modules: list[str] | tuple[str, ...] = ()) -> Registry:
    """The registry, after importing the extra modules named in `jobs.modules`."""
    for name in modules:
        importlib.import_module(name)
    return registry
