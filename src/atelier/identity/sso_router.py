"""Single sign-on routes: start at the provider, come back with a token pair."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import AtelierError, BadRequest, NotFound
from atelier.core.routing import API_PREFIX, operation
from atelier.identity import accounts, oidc, sso
from atelier.identity.deps import AuthAttemptLimit, Tokens
from atelier.identity.router import token_read
from atelier.identity.tokens import TokenConfig
from atelier.settings import OidcProviderSettings

router = APIRouter(prefix=f"{API_PREFIX}/auth/oidc", tags=["auth"], dependencies=[AuthAttemptLimit])
OIDC_COOKIE = "atelier_oidc"
OIDC_COOKIE_PATH = f"{API_PREFIX}/auth/oidc/"


def _oidc_provider(request: Request, name: str) -> OidcProviderSettings:
    for provider in request.app.state.settings.oidc_providers:
        if provider.name == name:
            return provider
    raise NotFound(f"No single sign-on provider {name!r}")


def _oidc_signer(request: Request) -> URLSafeTimedSerializer:
    secret = request.app.state.settings.secret_key.get_secret_value()
    return URLSafeTimedSerializer(secret, salt="atelier.oidc-login")


@router.get("/{provider}/login", status_code=302, **operation("token", "public"))
async def oidc_login(provider: str, request: Request, clock: AppClock) -> Response:
    """Start single sign-on: redirects to the provider. The state, nonce and PKCE verifier stay
    in a signed, HttpOnly cookie bound to this browser for ten minutes."""
    settings = request.app.state.settings
    config = _oidc_provider(request, provider)
    redirect_uri = f"{settings.base_url.rstrip('/')}{API_PREFIX}/auth/oidc/{provider}/callback"
    url, pending = await oidc.start_login(
        config, redirect_uri=redirect_uri, client=request.app.state.oidc, clock=clock
    )
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        OIDC_COOKIE,
        _oidc_signer(request).dumps(pending.to_dict()),
        max_age=int(oidc.MAX_LOGIN_AGE.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=OIDC_COOKIE_PATH,
    )
    return response


@router.get("/{provider}/callback", **operation("token", "public"))
async def oidc_callback(
    provider: str,
    request: Request,
    session: DbSession,
    config: Tokens,
    info: ClientInfo,
    clock: AppClock,
) -> Response:
    """The provider sends the browser back here; answers the token pair of the signed-in user."""
    settings_provider = _oidc_provider(request, provider)
    try:
        pair = await _finish_sso(request, provider, settings_provider, session, config, info, clock)
    except AtelierError as exc:
        # A pending login is used once, whatever the outcome.
        exc.headers["Set-Cookie"] = _cleared_oidc_cookie()
        raise
    response = JSONResponse(token_read(pair, clock).model_dump())
    response.headers["Set-Cookie"] = _cleared_oidc_cookie()
    return response


async def _finish_sso(
    request: Request,
    provider: str,
    settings_provider: OidcProviderSettings,
    session: AsyncSession,
    config: TokenConfig,
    info: RequestInfo,
    clock: Clock,
) -> accounts.TokenPair:
    try:
        raw = _oidc_signer(request).loads(
            request.cookies.get(OIDC_COOKIE, ""), max_age=oidc.MAX_LOGIN_AGE.total_seconds()
        )
    except BadSignature:
        raise BadRequest(
            "This sign-in was not started in this browser, or took too long: start again",
            reason="no-pending-login",
        ) from None
    pending = oidc.PendingLogin.from_dict(raw)
    if pending.provider != provider:
        raise BadRequest("This sign-in was started with another provider", reason="provider")
    identity = await oidc.finish_login(
        settings_provider,
        pending,
        params=dict(request.query_params),
        client=request.app.state.oidc,
        clock=clock,
    )
    return await sso.sign_in(
        session,
        settings_provider,
        identity,
        auth=request.app.state.settings.auth,
        config=config,
        info=info,
        clock=clock,
    )


def _cleared_oidc_cookie() -> str:
    response = Response()
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH)
    return response.headers["set-cookie"]
