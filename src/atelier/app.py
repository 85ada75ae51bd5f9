"""The composition root of the HTTP application: `create_app(settings)` builds the engine and
sessions, the renderer, the middleware stack, the error handlers and the routers."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
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
from atelier.core.mail import Mailer
from atelier.core.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    TrustedHostMiddleware,
)
from atelier.core.ratelimit import RateLimiter
from atelier.core.uploads import upload_limit
from atelier.datasets import router as datasets
from atelier.identity import admin_router, sso_router
from atelier.identity import router as identity
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
