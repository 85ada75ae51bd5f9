"""Liveness, readiness and metrics, outside `/api/v1` where orchestrators expect them."""

import asyncio

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest

from atelier import __version__
from atelier.adapters.executors.inline import NoExecutor
from atelier.core import metrics
from atelier.core.deps import AnonymousLimit
from atelier.core.errors import ServiceUnavailable
from atelier.core.routing import API_PREFIX, operation
from atelier.jobs import metrics as job_metrics
from atelier.jobs import service as job_service
from atelier.ops.checks import readiness_checks
from atelier.ops.schemas import CheckRead, HealthRead, ReadinessRead, VersionRead

log = structlog.get_logger(__name__)
router = APIRouter(tags=["ops"])
api_router = APIRouter(prefix=API_PREFIX, tags=["ops"], dependencies=[AnonymousLimit])


class NotReady(ServiceUnavailable):
    slug, title = "not-ready", "Not ready"


@router.get("/health", summary="Liveness: the process answers", **operation("ops", "public"))
async def health() -> HealthRead:
    return HealthRead()


@router.get(
    "/readiness",
    summary="Readiness: the dependencies answer",
    **operation("ops", "public"),
    responses={503: {"description": "A dependency is down; `checks` says which."}},
)
async def readiness(request: Request) -> ReadinessRead:
    state = request.app.state
    executor = state.dispatcher.executor
    checks = await readiness_checks(
        state.engine,
        state.blobs,
        None if isinstance(executor, NoExecutor) else executor,
        state.limiter,
    )
    details = {
        c.name: CheckRead(status=c.status, detail=c.detail, duration_ms=c.duration_ms)
        for c in checks
    }
    failed = [c for c in checks if not c.ok]
    if failed:
        raise NotReady(
            "; ".join(f"{c.name}: {c.detail}" for c in failed),
            checks={name: check.model_dump() for name, check in details.items()},
        )
    return ReadinessRead(checks=details)


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response, **operation("ops", "public")
)
async def prometheus_metrics(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body + await _job_gauges(request), media_type=content_type)


async def _job_gauges(request: Request) -> bytes:
    """Queued and running jobs per queue, read from the jobs table (the source of truth)."""
    try:
        async with asyncio.timeout(2), request.app.state.sessionmaker() as session:
            rows = await job_service.load(session)
    except Exception as exc:  # metrics must answer even when the database does not
        log.warning("job_gauges_unavailable", error=type(exc).__name__)
        return b""
    registry = CollectorRegistry()
    registry.register(_Families(job_metrics.table_gauges(rows)))
    return generate_latest(registry)


class _Families:
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return self.families


@api_router.get(
    "/version", summary="Atelier's version and API version", **operation("ops", "public")
)
async def version() -> VersionRead:
    return VersionRead(version=__version__, api="v1")
