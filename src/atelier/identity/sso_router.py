"""Single sign-on routes: start at the provider, come back with a token pair."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from itsdangerous import BadSignature, URLSafeTimedSerializer

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import AtelierError, BadRequest, NotFound
from atelier.core.ids import new_id
from atelier.core.routing import API_PREFIX, operation
from atelier.identity import accounts, oidc, sso, web_sessions
from atelier.identity.deps import AuthAttemptLimit, Tokens, set_session_cookie
from atelier.identity.models import User
from atelier.identity.router import token_read
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
async def oidc_login(
    provider: str,
    request: Request,
    clock: AppClock,
    web: Annotated[
        bool, Query(description="Sign in to the web UI rather than get tokens.")
    ] = False,
) -> Response:
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
        _oidc_signer(request).dumps({"pending": pending.to_dict(), "web": web}),
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
    """The provider sends the browser back here: API sign-ins get a token pair, web ones a
    session cookie and the home page."""
    settings_provider = _oidc_provider(request, provider)
    try:
        pending, web = _pending_login(request, provider)
        identity = await oidc.finish_login(
            settings_provider,
            pending,
            params=dict(request.query_params),
            client=request.app.state.oidc,
            clock=clock,
        )
        settings = request.app.state.settings
        if web:
            lifetime = timedelta(days=settings.auth.web_session_days)

            async def start(user: User) -> str:
                return await web_sessions.start(session, user, lifetime=lifetime, clock=clock)

        else:

            async def start(user: User) -> accounts.TokenPair:
                return await accounts.issue_pair(
                    session, user.id, family_id=new_id("fam"), config=config, clock=clock
                )

        started = await sso.sign_in(
            session,
            settings_provider,
            identity,
            auth=settings.auth,
            info=info,
            clock=clock,
            start=start,
        )
    except AtelierError as exc:
        # A pending login is used once, whatever the outcome.
        exc.headers["Set-Cookie"] = _cleared_oidc_cookie()
        raise
    if web:
        response: Response = RedirectResponse("/", status_code=303)
        set_session_cookie(request, response, started)
    else:
        response = JSONResponse(token_read(started, clock).model_dump())
    response.headers.append("Set-Cookie", _cleared_oidc_cookie())
    return response


def _pending_login(request: Request, provider: str) -> tuple[oidc.PendingLogin, bool]:
    try:
        raw = _oidc_signer(request).loads(
            request.cookies.get(OIDC_COOKIE, ""), max_age=oidc.MAX_LOGIN_AGE.total_seconds()
        )
        pending, web = oidc.PendingLogin.from_dict(raw["pending"]), bool(raw["web"])
    except (BadSignature, KeyError, TypeError):
        raise BadRequest(
            "This sign-in was not started in this browser, or took too long: start again",
            reason="no-pending-login",
        ) from None
    if pending.provider != provider:
        raise BadRequest("This sign-in was started with another provider", reason="provider")
    return pending, web


def _cleared_oidc_cookie() -> str:
    response = Response()
    response.delete_cookie(OIDC_COOKIE, path=OIDC_COOKIE_PATH)
    return response.headers["set-cookie"]
