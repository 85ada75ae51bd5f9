"""CSRF protection of every form of the web UI (the session cookie is `identity.deps`').

CSRF uses signed double-submit tokens: a random value in an HttpOnly cookie, and in each form an
HMAC of it under the server's secret. A cross-site page can neither read the cookie nor compute
the HMAC, and a cookie planted by a sibling subdomain does not match any token it could show.
"""

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from atelier.core.deps import DbSession
from atelier.core.errors import Forbidden
from atelier.identity.deps import current_web_user
from atelier.identity.web_sessions import WebUser

CSRF_COOKIE = "atelier_csrf"
CSRF_FIELD = "csrf_token"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _sign(request: Request, value: str) -> str:
    key = request.app.state.settings.secret_key.get_secret_value().encode()
    return hmac.new(key, b"atelier/csrf/" + value.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The token to put in forms; a new CSRF cookie is set by `remember_csrf_cookie`."""
    value = request.cookies.get(CSRF_COOKIE)
    if not value:
        value = secrets.token_urlsafe(24)
        request.state.new_csrf_cookie = value
    return _sign(request, value)


def remember_csrf_cookie(request: Request, response: Response) -> None:
    value = getattr(request.state, "new_csrf_cookie", None)
    if value:
        response.set_cookie(
            CSRF_COOKIE, value, httponly=True, samesite="lax", secure=_secure(request), path="/"
        )


def verify_csrf(request: Request, submitted: str | None) -> None:
    value = request.cookies.get(CSRF_COOKIE)
    if not value or not submitted or not hmac.compare_digest(_sign(request, value), submitted):
        raise Forbidden(
            "The form expired or came from another site: reload the page and retry", reason="csrf"
        )


# ---- who may use a page ---------------------------------------------------------------------


class SignInRequired(Exception):
    """Raised by the page dependencies below; the app answers with a redirect to sign in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _page_of(request: Request) -> str:
    """Where to come back after signing in: the page itself, or for a form post, the page it
    belongs to (its first two path segments: `/settings/members/x/role` -> `/settings/members`)."""
    if request.method == "GET":
        return request.url.path
    return "/" + "/".join(request.url.path.strip("/").split("/")[:2])


async def _signed_in(request: Request, session: DbSession) -> WebUser:
    web_user = await current_web_user(request, session)
    if web_user is None:
        raise SignInRequired(_page_of(request))
    return web_user


async def _signed_in_form(
    request: Request,
    session: DbSession,
    csrf: Annotated[str | None, Form(alias=CSRF_FIELD, max_length=128)] = None,
) -> WebUser:
    verify_csrf(request, csrf)
    return await _signed_in(request, session)


def redirect_to_sign_in(request: Request, exc: Exception) -> RedirectResponse:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)


SignedIn = Annotated[WebUser, Depends(_signed_in)]
SignedInForm = Annotated[WebUser, Depends(_signed_in_form)]  # CSRF checked first
