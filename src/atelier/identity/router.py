"""HTTP layer of identity: auth, /me, organizations and members, API keys."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.routing import API_PREFIX, operation
from atelier.identity import accounts, api_keys, invitations, orgs
from atelier.identity.deps import (
    AuthAttemptLimit,
    CurrentPrincipal,
    Limiter,
    OrgPrincipal,
    Tokens,
)
from atelier.identity.models import User
from atelier.identity.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    MemberRead,
    MembershipRead,
    MemberUpdate,
    MeRead,
    OrgCreate,
    OrgRead,
    OrgUpdate,
    RefreshRequest,
    TokenRead,
    UsageRead,
    UserCreate,
    UserRead,
)

auth_router = APIRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"], dependencies=[AuthAttemptLimit])
me_router = APIRouter(prefix=f"{API_PREFIX}/me", tags=["auth"])
orgs_router = APIRouter(prefix=f"{API_PREFIX}/orgs", tags=["organizations"])
keys_router = APIRouter(prefix=f"{API_PREFIX}/api-keys", tags=["API keys"])
invitations_router = APIRouter(prefix=f"{API_PREFIX}/invitations", tags=["organizations"])
ROUTERS = (auth_router, me_router, orgs_router, keys_router, invitations_router)


def token_read(pair: accounts.TokenPair, clock: AppClock) -> TokenRead:
    seconds = int((pair.access_expires_at - clock.now()).total_seconds())
    return TokenRead(
        access_token=pair.access_token, expires_in=seconds, refresh_token=pair.refresh_token
    )


@auth_router.post(
    "/register", status_code=201, response_model=UserRead, **operation("user", "public")
)
async def register(
    body: UserCreate, request: Request, session: DbSession, info: ClientInfo, clock: AppClock
) -> User:
    return await accounts.register(
        session,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
        locale=body.locale,
        invitation=body.invitation,
        auth=request.app.state.settings.auth,
        info=info,
        clock=clock,
    )


@auth_router.post("/token", **operation("token", "public"))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: DbSession,
    config: Tokens,
    limiter: Limiter,
    info: ClientInfo,
    clock: AppClock,
) -> TokenRead:
    """OAuth2 password flow: `username` is the email."""
    pair = await accounts.sign_in(
        session,
        email=form.username,
        password=form.password,
        config=config,
        limiter=limiter,
        lockout=request.app.state.settings.auth.failures_before_lockout,
        info=info,
        clock=clock,
    )
    return token_read(pair, clock)


@auth_router.post("/refresh", **operation("token", "public"))
async def refresh(
    body: RefreshRequest, session: DbSession, config: Tokens, info: ClientInfo, clock: AppClock
) -> TokenRead:
    pair = await accounts.refresh(
        session, body.refresh_token, config=config, info=info, clock=clock
    )
    return token_read(pair, clock)


@auth_router.post("/logout", status_code=204, **operation("token", "public"))
async def logout(
    body: RefreshRequest, session: DbSession, info: ClientInfo, clock: AppClock
) -> Response:
    await accounts.sign_out(session, body.refresh_token, info=info, clock=clock)
    return Response(status_code=204)


@me_router.get("", **operation("me", "read"))
async def me(principal: CurrentPrincipal, session: DbSession) -> MeRead:
    user = await session.get(User, principal.user_id) if principal.user_id else None
    memberships = await orgs.memberships_of(session, user.id) if user else []
    return MeRead(
        kind=principal.kind,
        org_id=principal.org_id,
        role=principal.role,
        scopes=sorted(principal.scopes),
        api_key_id=principal.api_key_id,
        user=UserRead.model_validate(user) if user else None,
        memberships=[MembershipRead(**vars(m)) for m in memberships],
    )


@orgs_router.get("", **operation("org", "read"))
async def list_orgs(principal: CurrentPrincipal, session: DbSession) -> list[MembershipRead]:
    """The organizations the caller belongs to (an API key: its own)."""
    return [MembershipRead(**vars(m)) for m in await orgs.organizations_of(session, principal)]


@orgs_router.post("", status_code=201, response_model=OrgRead, **operation("org", "create"))
async def create_org(
    body: OrgCreate,
    principal: CurrentPrincipal,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
):
    return await orgs.create_org(
        session,
        principal,
        name=body.name,
        plan_id=request.app.state.settings.auth.default_plan,
        info=info,
        clock=clock,
    )


@orgs_router.get("/{org_id}", response_model=OrgRead, **operation("org", "read"))
async def get_org(principal: OrgPrincipal, session: DbSession):
    return await orgs.get_org(session, principal)


@orgs_router.patch("/{org_id}", response_model=OrgRead, **operation("org", "update"))
async def update_org(
    body: OrgUpdate, principal: OrgPrincipal, session: DbSession, info: ClientInfo
):
    if body.name is None:
        return await orgs.get_org(session, principal)
    return await orgs.rename_org(session, principal, name=body.name, info=info)


@orgs_router.get("/{org_id}/members", **operation("member", "read"))
async def list_members(principal: OrgPrincipal, session: DbSession) -> list[MemberRead]:
    return [MemberRead(**vars(m)) for m in await orgs.list_members(session, principal)]


@orgs_router.patch("/{org_id}/members/{user_id}", **operation("member", "update"))
async def update_member(
    user_id: str,
    body: MemberUpdate,
    principal: OrgPrincipal,
    session: DbSession,
    info: ClientInfo,
) -> MemberRead:
    member = await orgs.change_role(session, principal, user_id, role=body.role, info=info)
    return MemberRead(**vars(member))


@orgs_router.delete("/{org_id}/members/{user_id}", status_code=204, **operation("member", "delete"))
async def remove_member(
    user_id: str, principal: OrgPrincipal, session: DbSession, info: ClientInfo, clock: AppClock
) -> Response:
    await orgs.remove_member(session, principal, user_id, info=info, clock=clock)
    return Response(status_code=204)


@orgs_router.get("/{org_id}/usage", **operation("usage", "read"))
async def get_usage(principal: OrgPrincipal, session: DbSession, clock: AppClock) -> UsageRead:
    org, period, meters = await orgs.usage(session, principal, clock=clock)
    return UsageRead(
        org_id=org.id, plan_id=org.plan_id, period=period, meters=[vars(m) for m in meters]
    )


@keys_router.get("", response_model=list[ApiKeyRead], **operation("api_key", "read"))
async def list_keys(principal: CurrentPrincipal, session: DbSession):
    return await api_keys.list_keys(session, principal)


@keys_router.post("", status_code=201, **operation("api_key", "create"))
async def create_key(
    body: ApiKeyCreate,
    principal: CurrentPrincipal,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
) -> ApiKeyCreated:
    row, key = await api_keys.create_key(
        session,
        principal,
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        info=info,
        clock=clock,
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), key=key)


@keys_router.delete("/{key_id}", status_code=204, **operation("api_key", "delete"))
async def revoke_key(
    key_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
) -> Response:
    await api_keys.revoke_key(session, principal, key_id, info=info, clock=clock)
    return Response(status_code=204)


@orgs_router.post("/{org_id}/invitations", status_code=201, **operation("invitation", "create"))
async def invite(
    body: InvitationCreate,
    principal: OrgPrincipal,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
) -> InvitationCreated:
    settings = request.app.state.settings
    invitation, link = await invitations.invite(
        session,
        principal,
        email=body.email,
        role=body.role,
        valid_for=timedelta(days=settings.auth.invitation_days),
        base_url=settings.base_url,
        mailer=request.app.state.mailer,
        info=info,
        clock=clock,
    )
    return InvitationCreated(**InvitationRead.model_validate(invitation).model_dump(), link=link)


@orgs_router.get(
    "/{org_id}/invitations",
    response_model=list[InvitationRead],
    **operation("invitation", "read"),
)
async def list_invitations(principal: OrgPrincipal, session: DbSession, clock: AppClock):
    """Pending invitations (admins)."""
    return await invitations.list_pending(session, principal, clock=clock)


@orgs_router.delete(
    "/{org_id}/invitations/{invitation_id}",
    status_code=204,
    **operation("invitation", "delete"),
)
async def revoke_invitation(
    invitation_id: str,
    principal: OrgPrincipal,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
) -> Response:
    await invitations.revoke(session, principal, invitation_id, info=info, clock=clock)
    return Response(status_code=204)


@invitations_router.post("/accept", **operation("invitation", "update"))
async def accept_invitation(
    body: InvitationAccept,
    principal: CurrentPrincipal,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
) -> MembershipRead:
    """Join the organization an invitation (sent to your email address) is for."""
    membership = await invitations.accept(session, principal, body.token, info=info, clock=clock)
    mine = await orgs.memberships_of(session, membership.user_id)
    return next(MembershipRead(**vars(m)) for m in mine if m.org_id == membership.org_id)
