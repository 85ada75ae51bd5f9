"""Pure ASGI middleware around every request: request context, body limit, hosts, headers.

Order, outermost first (see `app.create_app`):

1. `SecurityHeadersMiddleware`: CSP, nosniff, referrer policy, frame-ancestors, HSTS over HTTPS.
2. `RequestContextMiddleware`: request id, one log line, metrics, and the bare 500 for anything
   unexpected (logged with its traceback, never sent to the client), `BaseException`s from native
   libraries included; only shutdown and cancellation pass through.
3. `TrustedHostMiddleware`: refuses unknown Host headers with a problem document.
4. CORS (Starlette's).
5. `BodyLimitMiddleware`: 413 before a body over the limit is read whole.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.core import metrics
from atelier.core.problems import problem
from atelier.core.routing import route_template

log = structlog.get_logger("atelier.http")

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{8,128}$")
# Metric labels must stay bounded: a client can send any method name.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What must reach the server as raised: Ctrl-C, exit, task cancellation (a client gone, a
# shutdown), a generator closed. Anything else, e.g. polars' PanicException (a BaseException),
# is a crash like any other and gets the bare 500.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


def _passes_through(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_PASS_THROUGH) is not None
    return isinstance(exc, _PASS_THROUGH)


def _logged_path(scope: Scope, route: str) -> str:
    """The request path, or the route template where the path carries a credential (a signed
    download link, an invitation)."""
    return route if "{token}" in route else scope["path"]


class RequestContextMiddleware:
    """Give each request an id, log it once, count it, and turn crashes into a bare 500.

    Successful requests to `quiet_routes` (probes, scrapes) are logged at debug level, so an
    orchestrator polling every few seconds does not drown the log.
    """

    def __init__(self, app: ASGIApp, *, quiet_routes: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.quiet_routes = quiet_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        metrics.HTTP_IN_PROGRESS.labels(method).inc()
        begin = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            if _passes_through(exc):
                raise
            log.exception(
                "unhandled_error", method=method, path=_logged_path(scope, route_template(scope))
            )
            if started:  # too late to answer; the server closes the connection
                raise
            response = problem(
                500,
                slug="internal-error",
                title="Internal server error",
                detail="Something went wrong on our side. Quote the request id when reporting it.",
                request_id=request_id,
            )
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - begin
            route = route_template(scope)
            metrics.HTTP_IN_PROGRESS.labels(method).dec()
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_DURATION.labels(method, route, str(status)).observe(duration)
            quiet = route in self.quiet_routes and status < 400
            (log.debug if quiet else log.info)(
                "request",
                method=method,
                route=route,
                path=_logged_path(scope, route),
                status=status,
                duration_ms=round(duration * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over `max_bytes` with 413, counting while they stream in.

    A declared Content-Length over the limit is refused before the app runs. Otherwise the body
    is counted chunk by chunk; past the limit the app's next read fails and whatever it was about
    to answer is replaced by the 413, however the framework reports the failed read.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int | Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = max_bytes if callable(max_bytes) else (lambda _scope: max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return

        received = 0
        exceeded = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif not replaced and message["type"] == "http.response.start":
                replaced = True
                await self._refuse(scope, receive, send, limit)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not replaced:
                await self._refuse(scope, receive, send, limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(
            413,
            slug="payload-too-large",
            title="Request body too large",
            detail=f"The request body is larger than the limit of {limit} bytes.",
            instance=scope["path"],
            limit=limit,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class TrustedHostMiddleware:
    """Answer 400 (a problem document) to a Host header outside the allowlist."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str]) -> None:
        self.app = app
        self.exact = {h.lower() for h in allowed_hosts if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in allowed_hosts if h.startswith("*."))

    def allowed(self, host: str) -> bool:
        host = host.lower()
        name = host[1 : host.find("]")] if host.startswith("[") else host.split(":", 1)[0]
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if self.allowed(host):
            await self.app(scope, receive, send)
            return
        response = problem(
            400,
            slug="invalid-host",
            title="Invalid host",
            detail="This server does not answer to that host name.",
        )
        await response(scope, receive, send)


# Scripts and styles only from our own origin (everything is vendored under /static). The
# OpenAPI page is the exception: Swagger UI boots from an inline script.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_CSP_DOCS = _CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect")


class SecurityHeadersMiddleware:
    """Add CSP, nosniff, referrer and framing policy to every response; HSTS over HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = _CSP_DOCS if scope["path"] in _DOCS_PATHS else _CSP
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", csp)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "strict-origin-when-cross-origin")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("cross-origin-opener-policy", "same-origin")
                headers.setdefault("permissions-policy", "camera=(), microphone=(), geolocation=()")
                if https:
                    headers.setdefault(
                        "strict-transport-security", "max-age=63072000; includeSubDomains"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)
