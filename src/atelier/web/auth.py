"""CSRF protection of every form of the web UI (the session cookie is `identity.deps`').

CSRF uses signed double-submit tokens: a random value in an HttpOnly cookie, and in each form an
HMAC of it under the server's secret. A cross-site page can neither read the cookie nor compute
the HMAC, and a cookie planted by a sibling subdomain does not match any token it could show.
"""

import hashlib
import hmac
import secrets

from fastapi import Request
from starlette.responses import Response

from atelier.core.errors import Forbidden

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
