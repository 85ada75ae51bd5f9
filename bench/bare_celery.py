"""Bare Celery for comparison: one no-op task on Redis, Celery's defaults."""

from celery import Celery

from bench.kinds import note_start

app = Celery("bare", broker="redis://127.0.0.1:6379/13")
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@app.task(name="bench.bare_noop")
def noop(sent: float) -> None:
    note_start(sent)
