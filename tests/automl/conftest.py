"""The Celery stack of the jobs tests (`atelier api` + `atelier worker` on a Redis of their own),
for the AutoML run that goes through it."""

from tests.jobs.test_celery_live import redis_server, stack, stack_database  # noqa: F401
