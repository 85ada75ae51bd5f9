"""Pages of the model registry: the organization's models, a model's versions with their
stages (promotion), model cards, downloads, and registering an AutoML run's model. Same
service as the API (`registry.service`)."""

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.pagination import Offset, PageRequest
from atelier.identity.orgs import memberships_of
from atelier.registry import service, versions
from atelier.registry.models import STAGES
from atelier.registry.schemas import Stage
from atelier.web import auth

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

Name = Annotated[str, Path(max_length=100)]
Number = Annotated[int, Path(ge=1, le=1_000_000)]
PAGE_SIZE = 50


async def _render(request: Request, session, web_user, name: str, context: dict) -> Response:
    memberships = await memberships_of(session, web_user.user.id)
    return request.app.state.renderer.render(
        request, name, {"web_user": web_user, "memberships": memberships, **context}
    )


@router.get("/models")
async def models_page(
    request: Request, session: DbSession, web_user: auth.SignedIn, offset: Offset = 0
) -> Response:
    principal = web_user.principal
    page = await service.list_models(
        session, principal, PageRequest(limit=PAGE_SIZE, offset=offset)
    )
    production = await service.production_versions(session, principal, [m.id for m in page.items])
    return await _render(
        request,
        session,
        web_user,
        "models/list.html",
        {"page": page, "production": production},
    )


@router.get("/models/{name}")
async def model_page(
    name: Name, request: Request, session: DbSession, web_user: auth.SignedIn
) -> Response:
    principal = web_user.principal
    model = await service.get_model(session, principal, name)
    versions = await service.list_versions(
        session, principal, name, PageRequest(limit=PAGE_SIZE, offset=0)
    )
    return await _render(
        request,
        session,
        web_user,
        "models/detail.html",
        {
            "model": model,
            "versions": versions,
            "stages": STAGES,
            "can_edit": principal.role != "viewer",
        },
    )


@router.get("/models/{name}/versions/{number}/card")
async def card_page(
    name: Name, number: Number, request: Request, session: DbSession, web_user: auth.SignedIn
) -> Response:
    version = await service.get_version(session, web_user.principal, name, number)
    return await _render(
        request,
        session,
        web_user,
        "models/card.html",
        {"name": name, "version": version, "card": service.card_of(name, version)},
    )


@router.get("/models/{name}/versions/{number}/download")
async def download(
    name: Name, number: Number, request: Request, session: DbSession, web_user: auth.SignedIn
) -> Response:
    url = await service.download_link(
        session, request.app.state.blobs, web_user.principal, name, number
    )
    return RedirectResponse(url, status_code=303)


@router.post("/models/{name}/versions/{number}/stage")
async def change_stage(
    name: Name,
    number: Number,
    request: Request,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    stage: Annotated[Stage, Form()],
    web_user: auth.SignedInForm,
) -> Response:
    await service.set_stage(
        session, web_user.principal, name, number, stage, clock=clock, info=info
    )
    return RedirectResponse(f"/models/{name}", status_code=303)


@router.post("/models/register")
async def register_run(
    request: Request,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    run_id: Annotated[str, Form(max_length=40)],
    name: Annotated[str, Form(min_length=1, max_length=100)],
    web_user: auth.SignedInForm,
) -> Response:
    """Register an AutoML run's model as the next version of `name` (created if new)."""
    state = request.app.state
    version = await versions.register_run(
        session,
        state.blobs,
        web_user.principal,
        name.strip(),
        run_id,
        description=None,
        settings=state.settings,
        clock=clock,
        info=info,
    )
    return RedirectResponse(f"/models/{name.strip()}#v{version.number}", status_code=303)
