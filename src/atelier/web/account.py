"""Pages of a signed-in user's organization: members and invitations, API keys, and the page
behind an invitation link. Same services as the API; errors render as HTML pages."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.principal import ROLE_SCOPES, ROLES, ApiScope, Role
from atelier.identity import api_keys, invitations, orgs, web_sessions
from atelier.identity.deps import current_web_user
from atelier.identity.orgs import memberships_of
from atelier.identity.web_sessions import WebUser
from atelier.web import auth

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

Name = Annotated[str, Form(min_length=1, max_length=100)]


def _go(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


async def _render(
    request: Request,
    session: AsyncSession,
    web_user: WebUser | None,
    name: str,
    context: dict,
    *,
    status_code: int = 200,
) -> Response:
    memberships = await memberships_of(session, web_user.user.id) if web_user else []
    return request.app.state.renderer.render(
        request,
        name,
        {"web_user": web_user, "memberships": memberships, **context},
        status_code=status_code,
    )


# ---- members and invitations ----------------------------------------------------------------


async def _members_page(
    request: Request, session: AsyncSession, web_user: WebUser, clock, **extra
) -> Response:
    principal = web_user.principal
    is_admin = principal.role in ("admin", "owner")
    context = {
        "members": await orgs.list_members(session, principal),
        "pending": await invitations.list_pending(session, principal, clock=clock)
        if is_admin
        else [],
        "is_admin": is_admin,
        "roles": ROLES if principal.role == "owner" else ROLES[:-1],
        "plan_status": await orgs.plan_status(session, principal, clock=clock),
        **extra,
    }
    return await _render(request, session, web_user, "members.html", context)


@router.get("/settings/members")
async def members(
    request: Request, session: DbSession, clock: AppClock, web_user: auth.SignedIn
) -> Response:
    return await _members_page(request, session, web_user, clock)


@router.post("/settings/members/invite")
async def invite(
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    email: Annotated[str, Form(max_length=254)],
    web_user: auth.SignedInForm,
    role: Annotated[Role, Form()] = "member",
) -> Response:
    settings = request.app.state.settings
    _, link = await invitations.invite(
        session,
        web_user.principal,
        email=email,
        role=role,
        valid_for=timedelta(days=settings.auth.invitation_days),
        base_url=settings.base_url,
        mailer=request.app.state.mailer,
        info=info,
        clock=clock,
    )
    return await _members_page(
        request, session, web_user, clock, new_link=link, invited=email.strip().lower()
    )


@router.post("/settings/members/{user_id}/role")
async def change_role(
    user_id: str,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    role: Annotated[Role, Form()],
    web_user: auth.SignedInForm,
) -> Response:
    await orgs.change_role(session, web_user.principal, user_id, role=role, info=info)
    return _go("/settings/members")


@router.post("/settings/members/{user_id}/remove")
async def remove_member(
    user_id: str,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    web_user: auth.SignedInForm,
) -> Response:
    await orgs.remove_member(session, web_user.principal, user_id, info=info, clock=clock)
    return _go("/" if user_id == web_user.user.id else "/settings/members")


@router.post("/settings/members/orgs")
async def create_org(
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    name: Name,
    web_user: auth.SignedInForm,
) -> Response:
    """A new organization, owned by the user, who switches to it."""
    org = await orgs.create_org(
        session,
        web_user.principal,
        name=name.strip(),
        plan_id=request.app.state.settings.auth.default_plan,
        info=info,
        clock=clock,
    )
    await web_sessions.choose_org(session, web_user, org.id)
    return _go("/settings/members")


# ---- API keys ------------------------------------------------------------------------------


async def _keys_page(
    request: Request, session: AsyncSession, web_user: WebUser, **extra
) -> Response:
    principal = web_user.principal
    context = {
        "keys": await api_keys.list_keys(session, principal) if principal.role != "viewer" else [],
        "can_create": principal.role != "viewer",
        "scopes": sorted(ROLE_SCOPES[principal.role]),
        **extra,
    }
    return await _render(request, session, web_user, "api_keys.html", context)


@router.get("/settings/api-keys")
async def keys(request: Request, session: DbSession, web_user: auth.SignedIn) -> Response:
    return await _keys_page(request, session, web_user)


@router.post("/settings/api-keys")
async def create_key(
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    name: Name,
    web_user: auth.SignedInForm,
    scopes: Annotated[list[ApiScope], Form()] = ("read",),  # type: ignore[assignment]
) -> Response:
    row, key = await api_keys.create_key(
        session,
        web_user.principal,
        name=name.strip(),
        scopes=list(scopes),
        expires_at=None,
        info=info,
        clock=clock,
    )
    return await _keys_page(request, session, web_user, new_key=key, new_key_name=row.name)


@router.post("/settings/api-keys/{key_id}/revoke")
async def revoke_key(
    key_id: str,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    web_user: auth.SignedInForm,
) -> Response:
    await api_keys.revoke_key(session, web_user.principal, key_id, info=info, clock=clock)
    return _go("/settings/api-keys")


# ---- the page behind an invitation link ------------------------------------------------------


@router.get("/invitations/{token}")
async def invitation_page(
    token: str, request: Request, session: DbSession, clock: AppClock
) -> Response:
    invitation, org_name = await invitations.describe(session, token, clock=clock)
    web_user = await current_web_user(request, session)
    context = {
        "invitation": invitation,
        "org_name": org_name,
        "token": token,
        "here": f"/invitations/{token}",
        "for_me": web_user is not None and web_user.user.email == invitation.email,
    }
    return await _render(request, session, web_user, "invitation.html", context)


@router.post("/invitations/{token}/accept")
async def accept_invitation(
    token: str,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    web_user: auth.SignedInForm,
) -> Response:
    membership = await invitations.accept(
        session, web_user.principal, token, info=info, clock=clock
    )
    await web_sessions.choose_org(session, web_user, membership.org_id)
    return _go("/settings/members")
