"""Pages of the web UI. They call the same services as the API and render Jinja2 templates."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from atelier.core.errors import NotFound
from atelier.ops.checks import readiness_checks
from atelier.web import i18n

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

ONE_YEAR = 365 * 24 * 3600


@router.get("/")
async def landing(request: Request) -> Response:
    return request.app.state.renderer.render(request, "index.html")


@router.get("/fragments/status")
async def status_fragment(request: Request) -> Response:
    checks = await readiness_checks(request.app.state.engine)
    return request.app.state.renderer.render(request, "fragments/status.html", {"checks": checks})


@router.get("/lang/{code}")
async def switch_language(
    request: Request, code: str, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """Remember the visitor's language in a cookie and go back where they were."""
    if code not in i18n.LANGUAGES:
        raise NotFound(f"No language {code!r}; choose one of {', '.join(i18n.LANGUAGES)}")
    response = RedirectResponse(i18n.safe_next(next_path), status_code=303)
    response.set_cookie(
        i18n.COOKIE,
        code,
        max_age=ONE_YEAR,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response
