"""Liveness, readiness and metrics, outside `/api/v1` where orchestrators expect them."""

from fastapi import APIRouter, Request, Response

from atelier import __version__
from atelier.core import metrics
from atelier.core.deps import AnonymousLimit
from atelier.core.errors import ServiceUnavailable
from atelier.core.routing import API_PREFIX, operation
from atelier.ops.checks import readiness_checks
from atelier.ops.schemas import CheckRead, HealthRead, ReadinessRead, VersionRead

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
    checks = await readiness_checks(request.app.state.engine)
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
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@api_router.get(
    "/version", summary="Atelier's version and API version", **operation("ops", "public")
)
async def version() -> VersionRead:
    return VersionRead(version=__version__, api="v1")
