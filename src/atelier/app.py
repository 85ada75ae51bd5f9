"""The composition root of the HTTP application: `create_app(settings)` builds the engine and
sessions, the renderer, the middleware stack, the error handlers and the routers."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any, get_args

import httpx
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import HTMLResponse

from atelier import __version__
from atelier.adapters.blobs import create_blob_store
from atelier.adapters.executors.inline import InlineExecutor, NoExecutor
from atelier.adapters.executors.local import LocalExecutor
from atelier.adapters.mail import LogMailer, SmtpMailer
from atelier.audit import router as audit
from atelier.automl import router as automl
from atelier.core import logging as core_logging
from atelier.core import metrics, problems
from atelier.core.clock import SystemClock
from atelier.core.db import create_engine, create_sessionmaker
from atelier.core.deps import AnonymousLimit
from atelier.core.mail import Mailer
from atelier.core.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedHostMiddleware,
)
from atelier.core.ratelimit import RateLimiter
from atelier.core.uploads import is_upload_route, upload_limit
from atelier.datasets import router as datasets
from atelier.identity import admin_router, sso_router
from atelier.identity import router as identity
from atelier.identity.deps import AuthAttemptLimit, CurrentPrincipal, OrgPrincipal
from atelier.identity.oidc import OidcClient
from atelier.identity.tokens import TokenConfig
from atelier.jobs import router as jobs
from atelier.jobs import scheduler as job_scheduler
from atelier.jobs.executor import Executor
from atelier.jobs.runtime import Runtime
from atelier.ops import blobs_router
from atelier.ops import router as ops
from atelier.registry import router as registry
from atelier.settings import Settings
from atelier.web import account as web_account
from atelier.web import auth as web_auth
from atelier.web import automl_pages as web_automl
from atelier.web import datasets_pages as web_datasets
from atelier.web import models_pages as web_models
from atelier.web.rendering import STATIC_DIR, Renderer
from atelier.web.router import router as web_router
from atelier.workers import build_runtime

PROBE_ROUTES = frozenset({"/health", "/readiness", "/metrics"})
log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, embedded_workers: bool = False) -> FastAPI:
    """The application. `embedded_workers` (`atelier up`): also run the local job pool (with
    the local executor) and the periodic tasks, inside this process's lifespan."""
    engine = create_engine(**settings.database.model_dump())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if metrics.multiprocess_mode():
            metrics.sample_process()
        runtime: Runtime = app.state.runtime
        scheduler = None
        if embedded_workers:
            if isinstance(runtime.dispatcher.executor, LocalExecutor):
                await runtime.dispatcher.executor.start()
                await runtime.dispatcher.recover_after_restart()
            scheduler = asyncio.create_task(job_scheduler.run_forever(runtime))
        log.info("started", version=__version__, profile=settings.profile)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scheduler
            await runtime.dispatcher.close()
            await app.state.oidc.http.aclose()
            await engine.dispose()
            metrics.mark_process_dead()

    app = FastAPI(
        title="Atelier",
        version=__version__,
        summary="A self-hosted AI platform.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.renderer = renderer = Renderer(default_language=settings.default_language)
    app.state.clock = SystemClock()
    app.state.limiter = RateLimiter(settings.redis_url)
    app.state.mailer = _mailer(settings)
    app.state.blobs = create_blob_store(
        settings.storage, secret=settings.secret_key.get_secret_value(), clock=app.state.clock
    )
    app.state.runtime = runtime = build_runtime(
        settings,
        _executor(settings, embedded_workers=embedded_workers),
        engine=engine,
        sessionmaker=app.state.sessionmaker,
        blobs=app.state.blobs,
        clock=app.state.clock,
    )
    app.state.dispatcher = runtime.dispatcher
    app.state.job_registry = runtime.registry
    app.state.oidc = OidcClient(httpx.AsyncClient(timeout=10.0, follow_redirects=False))
    app.state.tokens = TokenConfig.from_settings(
        settings.secret_key.get_secret_value(),
        issuer=settings.auth.issuer,
        access_minutes=settings.auth.access_token_minutes,
        refresh_days=settings.auth.refresh_token_days,
    )

    problems.install(app, html_page=renderer.error_page)
    app.add_exception_handler(web_auth.SignInRequired, web_auth.redirect_to_sign_in)
    # Each router carries its full prefix (see core.routing).
    routers = (
        ops.router,
        ops.api_router,
        blobs_router.router,
        *identity.ROUTERS,
        sso_router.router,
        admin_router.router,
        audit.router,
        jobs.router,
        jobs.kinds_router,
        jobs.admin_router,
        datasets.router,
        automl.router,
        registry.router,
        web_router,
        web_account.router,
        web_datasets.router,
        web_automl.router,
        web_models.router,
    )
    # Starlette wraps in reverse order of addition: the last added is the outermost.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=upload_limit(
            routers, default=settings.http.max_body_bytes, upload=settings.http.max_upload_bytes
        ),
    )
    if settings.http.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.http.cors_origins,
            allow_credentials=settings.http.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Atelier-Org", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    if settings.http.trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.http.trusted_hosts)
    app.add_middleware(RequestContextMiddleware, quiet_routes=PROBE_ROUTES)
    app.add_middleware(SecurityHeadersMiddleware)

    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_docs(app)
    _document_problems(app, routers)
    return app


def _executor(settings: Settings, *, embedded_workers: bool) -> Executor:
    """Where this process sends jobs. The local pool exists only inside `atelier up`; another
    process with the local executor stores jobs and leaves them for it."""
    match settings.jobs.executor:
        case "inline":
            return InlineExecutor()
        case "celery":
            from atelier.adapters.executors.celery import CeleryExecutor

            return CeleryExecutor(settings, app=None)
        case _:
            return LocalExecutor(settings) if embedded_workers else NoExecutor()


def _mailer(settings: Settings) -> Mailer:
    smtp = settings.smtp
    if not smtp.host:
        return LogMailer()
    return SmtpMailer(
        host=smtp.host,
        port=smtp.port,
        sender=smtp.sender,
        username=smtp.username,
        password=smtp.password.get_secret_value() if smtp.password else None,
        security=smtp.security,
    )


# ---- the problem responses of the OpenAPI document -------------------------------------------

# What a dependency can answer, wherever a route uses it. A principal: no or bad credentials
# (401), a role or scope short (403), an unknown organization (404), the plan's rate (429).
_PRINCIPAL_PROBLEMS = frozenset({401, 403, 404, 429})
_DEPENDENCY_PROBLEMS = {
    get_args(CurrentPrincipal)[1].dependency: _PRINCIPAL_PROBLEMS,
    get_args(OrgPrincipal)[1].dependency: _PRINCIPAL_PROBLEMS,
    AuthAttemptLimit.dependency: frozenset({429}),
    AnonymousLimit.dependency: frozenset({429}),
}
# What an operation's services raise, besides what its dependencies, parameters and body can
# refuse (`_route_problems`); tests/test_openapi_problems.py checks each names an operation.
SERVICE_PROBLEMS: dict[str, set[int]] = {
    "POST /api/v1/auth/register": {403, 404, 409},  # closed sign-up, bad invitation, email taken
    "POST /api/v1/auth/token": {401},  # wrong credentials, a disabled account
    "POST /api/v1/auth/refresh": {401},  # an unknown, expired or reused refresh token
    "POST /api/v1/orgs": {402},  # organizations owned, by plan
    "PATCH /api/v1/orgs/{org_id}/members/{user_id}": {409},  # the last owner
    "DELETE /api/v1/orgs/{org_id}/members/{user_id}": {409},
    "POST /api/v1/orgs/{org_id}/invitations": {409},  # already a member
    "POST /api/v1/invitations/accept": {402, 409},  # members, by plan; expired, already in
    "GET /api/v1/auth/oidc/{provider}/callback": {400, 401, 409},  # state, provider, email taken
    "PATCH /api/v1/admin/users/{user_id}": {409},  # operators cannot demote themselves
    "PATCH /api/v1/admin/orgs/{org_id}": {402},  # the new plan's member limit
    "POST /api/v1/datasets": {409},  # the name is taken
    "POST /api/v1/jobs": {402, 409},  # compute quota; an Idempotency-Key reused
    "POST /api/v1/jobs/{job_id}/cancel": {409},  # already ended
    "POST /api/v1/automl/runs": {402, 409},
    "GET /api/v1/automl/runs/{run_id}/report": {409},  # not finished
    "GET /api/v1/automl/runs/{run_id}/model": {409},
    "POST /api/v1/models/{name}/versions": {409},  # a run without a model
    "PATCH /api/v1/models/{name}/versions/{number}": {409},
    "DELETE /api/v1/models/{name}/versions/{number}": {409},
    "GET /api/v1/models/{name}/versions/{number}/export": {409, 503},  # no MLflow flavour
}


def _document_problems(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Declare once, for every operation, the problem responses it can answer: what its
    dependencies, parameters and body can refuse, and what its services raise
    (`SERVICE_PROBLEMS`). A route may still declare a status itself, with a description.
    Errors of the framework (405, 406) and of the server (500) are left out."""
    by_operation: dict[str, set[int]] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                for method in route.methods:
                    name = f"{method} {route.path_format}"
                    by_operation[name] = _route_problems(route) | SERVICE_PROBLEMS.get(name, set())
    build = app.openapi

    def statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
        found = set(by_operation.get(f"{method} {path}", set()))
        parameters = operation.get("parameters", [])
        if "requestBody" in operation:
            # Not UTF-8 (FastAPI's 400); over ATELIER_HTTP__MAX_BODY_BYTES or the upload
            # limit; not valid
            found |= {400, 413, 422}
        if parameters:
            found.add(422)
        if any(p["in"] == "path" for p in parameters):
            found.add(404)
        return found

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            problems.document_problems(build(), statuses)
        return app.openapi_schema  # type: ignore[return-value]  # build() stored it

    app.openapi = openapi  # type: ignore[method-assign]


def _route_problems(route: APIRoute) -> set[int]:
    """What the route's dependencies refuse, wherever they are in its tree; uploads."""
    statuses: set[int] = set()
    for call in _calls(route.dependant):
        statuses |= _DEPENDENCY_PROBLEMS.get(call, frozenset())
    if is_upload_route(route):
        statuses |= {402, 415}  # the storage quota; not multipart, or an unknown format
    return statuses


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _add_docs(app: FastAPI) -> None:
    """Swagger UI from the vendored copy, so /docs renders with no network."""

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Atelier API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes (`atelier api --workers N`): settings from ATELIER_*."""
    settings = Settings()
    core_logging.configure(level=settings.logging.level, fmt=settings.log_format)
    return create_app(settings)
