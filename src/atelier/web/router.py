"""Pages of the web UI. They call the same services as the API and render Jinja2 templates."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import Response

from atelier.core.db import transaction
from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import InvalidInput, NotFound, TooManyRequests, Unauthorized
from atelier.identity import accounts, web_sessions
from atelier.identity.deps import (
    SESSION_COOKIE,
    clear_session_cookie,
    current_web_user,
    set_session_cookie,
)
from atelier.identity.orgs import memberships_of
from atelier.ops.checks import readiness_checks
from atelier.web import auth, i18n

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

ONE_YEAR = 365 * 24 * 3600
SIGN_IN_FAILED = i18n.N_("Incorrect email or password")
SIGN_IN_LOCKED = i18n.N_("Too many failed attempts: try again later")
Text = Annotated[str, Form(max_length=256)]
CsrfField = Annotated[str | None, Form(alias=auth.CSRF_FIELD, max_length=128)]


async def _page(
    request: Request, session, name: str, context: dict | None = None, *, status_code: int = 200
) -> Response:
    """Render a page with the signed-in user (if any) and their organizations."""
    web_user = await current_web_user(request, session)
    memberships = await memberships_of(session, web_user.user.id) if web_user else []
    return request.app.state.renderer.render(
        request,
        name,
        {"web_user": web_user, "memberships": memberships, **(context or {})},
        status_code=status_code,
    )


def _go(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/")
async def landing(request: Request, session: DbSession) -> Response:
    return await _page(request, session, "index.html")


@router.get("/fragments/status")
async def status_fragment(request: Request) -> Response:
    state = request.app.state
    checks = await readiness_checks(state.engine, state.blobs, None)
    return request.app.state.renderer.render(request, "fragments/status.html", {"checks": checks})


NextPath = Annotated[str | None, Query(alias="next", max_length=2000)]
NextField = Annotated[str | None, Form(alias="next", max_length=2000)]


@router.get("/login")
async def login_page(request: Request, session: DbSession, next_path: NextPath = None) -> Response:
    return await _page(
        request, session, "login.html", _login_context(request, next=i18n.safe_next(next_path))
    )


def _login_context(request: Request, **extra) -> dict:
    settings = request.app.state.settings
    return {
        "providers": settings.oidc_providers,
        "registration_open": settings.auth.registration == "open",
        **extra,
    }


@router.post("/login")
async def login(
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    email: Text,
    password: Text,
    csrf: CsrfField = None,
    next_path: NextField = None,
) -> Response:
    auth.verify_csrf(request, csrf)
    settings = request.app.state.settings
    lifetime = timedelta(days=settings.auth.web_session_days)
    go_to = i18n.safe_next(next_path)

    async def start(user):
        return await web_sessions.start(session, user, lifetime=lifetime, clock=clock)

    try:
        token = await accounts.authenticate(
            session,
            email=email,
            password=password,
            limiter=request.app.state.limiter,
            lockout=settings.auth.failures_before_lockout,
            info=info,
            clock=clock,
            start=start,
        )
    except (Unauthorized, TooManyRequests) as exc:
        message = request.app.state.renderer.gettext(
            request, SIGN_IN_FAILED if isinstance(exc, Unauthorized) else SIGN_IN_LOCKED
        )
        response = await _page(
            request,
            session,
            "login.html",
            _login_context(request, error=message, email=email, next=go_to),
            status_code=exc.status,
        )
        response.headers.update(exc.headers)
        return response
    response = _go(go_to)
    set_session_cookie(request, response, token)
    return response


@router.get("/signup")
async def signup_page(request: Request, session: DbSession, next_path: NextPath = None) -> Response:
    return await _page(request, session, "signup.html", {"next": i18n.safe_next(next_path)})


@router.post("/signup")
async def signup(
    request: Request,
    session: DbSession,
    info: ClientInfo,
    clock: AppClock,
    email: Text,
    password: Text,
    display_name: Annotated[str, Form(max_length=100)],
    csrf: CsrfField = None,
    next_path: NextField = None,
) -> Response:
    auth.verify_csrf(request, csrf)
    settings = request.app.state.settings
    go_to = i18n.safe_next(next_path)
    try:
        user = await accounts.register(
            session,
            email=email,
            password=password,
            display_name=display_name.strip(),
            locale=request.app.state.renderer.language(request),
            auth=settings.auth,
            info=info,
            clock=clock,
        )
    except InvalidInput as exc:
        problems = [e["detail"] for e in exc.extra.get("errors", [])] or [exc.detail]
        return await _page(
            request,
            session,
            "signup.html",
            {"problems": problems, "email": email, "display_name": display_name},
            status_code=422,
        )
    async with transaction(session):
        token = await web_sessions.start(
            session, user, lifetime=timedelta(days=settings.auth.web_session_days), clock=clock
        )
    response = _go(go_to)
    set_session_cookie(request, response, token)
    return response


@router.post("/logout")
async def logout(
    request: Request, session: DbSession, clock: AppClock, csrf: CsrfField = None
) -> Response:
    auth.verify_csrf(request, csrf)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await web_sessions.end(session, token, clock=clock)
    response = _go("/")
    clear_session_cookie(response)
    return response


@router.post("/session/org")
async def switch_org(
    request: Request,
    session: DbSession,
    org_id: Annotated[str, Form(max_length=40)],
    csrf: CsrfField = None,
) -> Response:
    auth.verify_csrf(request, csrf)
    web_user = await current_web_user(request, session)
    if web_user is None:
        return _go("/login")
    await web_sessions.choose_org(session, web_user, org_id)
    return _go("/")


@router.get("/lang/{code}")
async def switch_language(
    request: Request,
    code: str,
    next_path: Annotated[str | None, Query(alias="next")] = None,
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
