"""Liveness, readiness and metrics, outside `/api/v1` where orchestrators expect them."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from atelier import __version__
from atelier.core import metrics
from atelier.core.problems import problem
from atelier.core.routing import API_PREFIX
from atelier.ops.checks import check_database

router = APIRouter(tags=["ops"])
api_router = APIRouter(prefix=API_PREFIX, tags=["ops"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readiness",
    summary="Readiness: the dependencies answer",
    responses={503: {"description": "A dependency is down; `checks` says which."}},
)
async def readiness(request: Request) -> Response:
    checks = [await check_database(request.app.state.engine)]
    details = {
        c.name: {"status": c.status, "detail": c.detail, "duration_ms": c.duration_ms}
        for c in checks
    }
    failed = [c for c in checks if not c.ok]
    if failed:
        return problem(
            503,
            slug="not-ready",
            title="Not ready",
            detail="; ".join(f"{c.name}: {c.detail}" for c in failed),
            checks=details,
        )
    return JSONResponse({"status": "ok", "checks": details})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


class VersionRead(BaseModel):
    version: str
    api: str


@api_router.get("/version", summary="Atelier's version and API version")
async def version() -> VersionRead:
    return VersionRead(version=__version__, api="v1")
