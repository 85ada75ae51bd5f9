"""Executors: deliver "run job X" in-process (inline), to a local process pool, or to Celery."""
