"""Job metrics. Counters and the duration histogram are kept by the process where the event
happens (API for submits, workers for ends); gauges are read from the jobs table at scrape time,
since the table, not any process, knows what is queued and running."""

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from atelier.jobs.registry import QUEUES

JOBS_SUBMITTED = Counter("atelier_jobs_submitted_total", "Jobs accepted, by kind.", ["kind"])
JOBS_FINISHED = Counter(
    "atelier_jobs_finished_total",
    "Jobs that reached a final state, by kind and status.",
    ["kind", "status"],
)
JOB_DURATION = Histogram(
    "atelier_job_duration_seconds",
    "Time a job's last attempt ran, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600),
)


def record_submitted(kind: str) -> None:
    JOBS_SUBMITTED.labels(kind).inc()


def record_finished(kind: str, status: str, seconds: float | None) -> None:
    JOBS_FINISHED.labels(kind, status).inc()
    if seconds is not None:
        JOB_DURATION.labels(kind).observe(seconds)


def table_gauges(by_status: list[tuple[str, str, int]]) -> list[GaugeMetricFamily]:
    """Gauges from `(queue, status, count)` rows of active jobs (see `jobs.service.load`)."""
    queued = GaugeMetricFamily(
        "atelier_jobs_queued", "Jobs waiting to start, by queue.", labels=["queue"]
    )
    running = GaugeMetricFamily(
        "atelier_jobs_running", "Jobs running now, by queue.", labels=["queue"]
    )
    depth = GaugeMetricFamily(
        "atelier_jobs_queue_depth",
        "Jobs queued per queue, split by whether they were handed to the executor.",
        labels=["queue", "state"],
    )
    totals: dict[tuple[str, str], int] = {}
    for queue, state, count in by_status:
        totals[(queue, state)] = count
    for queue in sorted({*QUEUES, *(q for q, _ in totals)}):
        waiting = totals.get((queue, "waiting"), 0)
        handed = totals.get((queue, "dispatched"), 0)
        queued.add_metric([queue], waiting + handed)
        running.add_metric([queue], totals.get((queue, "running"), 0))
        depth.add_metric([queue, "waiting"], waiting)
        depth.add_metric([queue, "dispatched"], handed)
    return [queued, running, depth]
