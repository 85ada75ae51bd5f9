"""Prometheus metrics for HTTP traffic and the process, correct under several worker processes.

With one process the default registry is served as is. When uvicorn runs several workers,
`PROMETHEUS_MULTIPROC_DIR` is set before they start (see `cli.api`), every worker writes its
samples to files there, and `/metrics` merges them; process metrics, which prometheus_client
cannot merge, are sampled per worker into gauges labelled by `pid`.
"""

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    process_collector,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Module-level metric objects are the accepted exception to "no global state" (STYLE.md §13).
HTTP_REQUESTS = Counter(
    "atelier_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "atelier_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_PROGRESS = Gauge(
    "atelier_http_requests_in_progress",
    "HTTP requests being answered now.",
    ["method"],
    multiprocess_mode="livesum",
)
RATELIMIT_FALLBACK = Counter(
    "atelier_ratelimit_fallback_total",
    "Rate-limit calls counted in process memory because the shared Redis store did not answer.",
)
RATELIMIT_STORE_UP = Gauge(
    "atelier_ratelimit_store_up",
    "0 while the rate limiter's Redis store does not answer and it counts in memory instead, "
    "else 1.",
    multiprocess_mode="livemin",
)

# Per-worker process samples, only used in multiprocess mode.
_PROCESS_GAUGES = {
    name: Gauge(f"atelier_worker_{name}", help_text, multiprocess_mode="liveall")
    for name, help_text in (
        ("cpu_seconds", "CPU time used by this worker process, in seconds."),
        ("resident_memory_bytes", "Resident memory of this worker process, in bytes."),
        ("open_fds", "Open file descriptors of this worker process."),
        ("start_time_seconds", "Start time of this worker process, in seconds since the epoch."),
    )
}
_PROCESS_SOURCES = {
    "process_cpu_seconds": "cpu_seconds",
    "process_resident_memory_bytes": "resident_memory_bytes",
    "process_open_fds": "open_fds",
    "process_start_time_seconds": "start_time_seconds",
}


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def sample_process() -> None:
    """Copy this process's CPU, memory and descriptor counts into its per-worker gauges."""
    for family in process_collector.ProcessCollector(registry=None).collect():
        target = _PROCESS_SOURCES.get(family.name)
        if target and family.samples:
            _PROCESS_GAUGES[target].set(family.samples[0].value)


def mark_process_dead() -> None:
    """Drop this worker's live gauges from the shared files when it stops."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, merged across workers when there are several."""
    if not multiprocess_mode():
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    sample_process()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def now() -> float:
    return time.perf_counter()
