"""FastAPI dependencies that resolve the caller: `CurrentPrincipal` (organization from the
`X-Atelier-Org` header, else the caller's first) and `OrgPrincipal` (organization from the
`{org_id}` of the path)."""

from typing import Annotated

from fastapi import Depends, Header, Path, Request, Response
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import Unauthorized
from atelier.core.principal import Principal
from atelier.core.ratelimit import RateLimiter
from atelier.identity import orgs, principals, web_sessions
from atelier.identity.tokens import TokenConfig
from atelier.identity.web_sessions import WebUser

TOKEN_URL = "/api/v1/auth/token"  # noqa: S105 - a path, not a password
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)

Credential = Annotated[str | None, Depends(_bearer)]
OrgHeader = Annotated[
    str | None,
    Header(alias="X-Atelier-Org", max_length=40, description="Organization to act in."),
]


def _token_config(request: Request) -> TokenConfig:
    return request.app.state.tokens


Tokens = Annotated[TokenConfig, Depends(_token_config)]


def _require(credential: str | None) -> str:
    if not credential:
        raise Unauthorized(
            "Sign in, or send an API key: `Authorization: Bearer <token or key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credential


async def _current(
    request: Request,
    session: DbSession,
    credential: Credential,
    config: Tokens,
    clock: AppClock,
    header_org: OrgHeader = None,
) -> Principal:
    principal = await principals.resolve(
        session, _require(credential), org_id=header_org, config=config, clock=clock
    )
    await _plan_rate_limit(request, session, principal)
    return principal


async def _for_org(
    request: Request,
    session: DbSession,
    credential: Credential,
    config: Tokens,
    clock: AppClock,
    org_id: Annotated[str, Path(max_length=40)],
) -> Principal:
    principal = await principals.resolve(
        session, _require(credential), org_id=org_id, config=config, clock=clock
    )
    await _plan_rate_limit(request, session, principal)
    return principal


async def _plan_rate_limit(request: Request, session: DbSession, principal: Principal) -> None:
    """API requests per minute from the plan, counted per API key or per user."""
    per_minute = await orgs.requests_per_minute(session, principal.org_id)
    if per_minute is not None:
        limiter: RateLimiter = request.app.state.limiter
        caller = principal.api_key_id or f"user:{principal.user_id}"
        await limiter.hit_or_refuse(f"{per_minute}/minute", "api", caller, what="API requests")


CurrentPrincipal = Annotated[Principal, Depends(_current)]
OrgPrincipal = Annotated[Principal, Depends(_for_org)]


def _limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


Limiter = Annotated[RateLimiter, Depends(_limiter)]


async def _per_ip_auth_limit(request: Request, limiter: Limiter, info: ClientInfo) -> None:
    """Sign-in, sign-up and refresh calls per client address."""
    limit = request.app.state.settings.auth.attempts_per_ip
    await limiter.hit_or_refuse(limit, "auth-ip", info.ip or "unknown", what="attempts")


AuthAttemptLimit = Depends(_per_ip_auth_limit)


async def _superadmin(principal: CurrentPrincipal) -> Principal:
    """A platform operator, checked before the request body is even validated."""
    principal.require_superadmin()
    return principal


Superadmin = Annotated[Principal, Depends(_superadmin)]


# ---- the web UI's session cookie ------------------------------------------------------------

SESSION_COOKIE = "atelier_session"


async def current_web_user(request: Request, session: AsyncSession) -> WebUser | None:
    """Who is signed in to the web UI (None: nobody, or an ended session)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await web_sessions.resolve(session, token, clock=request.app.state.clock)


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    days = request.app.state.settings.auth.web_session_days
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=days * 86400,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
