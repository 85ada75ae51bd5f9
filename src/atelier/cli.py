"""The `atelier` command line. Thin: parse arguments, load settings, call services, show results."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import uvicorn
from alembic.util.exc import CommandError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from atelier import __version__, job_kinds
from atelier.app import create_app
from atelier.automl import commands as automl_commands
from atelier.core import logging as core_logging
from atelier.core import metrics
from atelier.core.clock import SystemClock
from atelier.core.context import NO_REQUEST
from atelier.core.db import create_engine, create_sessionmaker
from atelier.core.errors import AtelierError
from atelier.core.slow_clients import ReadLimits, http_protocol
from atelier.identity import accounts
from atelier.jobs import service as job_service
from atelier.jobs.models import STATUSES, Job
from atelier.jobs.registry import QUEUES
from atelier.jobs.schemas import AdminJobRead
from atelier.ops import migrations
from atelier.ops.checks import Check, diagnose
from atelier.settings import Settings, describe_error
from atelier.settings_reference import render_reference

app = typer.Typer(
    name="atelier",
    help="Atelier: a self-hosted AI platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
migrate_app = typer.Typer(help="Apply or inspect database migrations.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
admin_app = typer.Typer(help="Operator tasks: accounts and organizations.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and manage background jobs.", no_args_is_help=True)
storage_app = typer.Typer(help="Check the blob store against the database.", no_args_is_help=True)
app.add_typer(migrate_app, name="migrate")
app.add_typer(jobs_app, name="jobs")
app.add_typer(storage_app, name="storage")
app.add_typer(automl_commands.app, name="automl")
app.add_typer(config_app, name="config")
app.add_typer(admin_app, name="admin")

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # a long path stays on one line

T = TypeVar("T")
Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)]


def load_settings() -> Settings:
    """Build the settings from the environment, or exit 2 naming every problem."""
    try:
        settings = Settings()
    except ValidationError as exc:
        errors.print("[bold red]Atelier cannot start: the configuration is invalid.[/]")
        for line in describe_error(exc):
            errors.print(f"  • {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    core_logging.configure(level=settings.logging.level, fmt=settings.log_format)
    return settings


@app.command()
def version() -> None:
    """Print Atelier's version."""
    console.print(__version__)


@app.command()
def up(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Run everything: migrate the database, serve the API and web UI, run the local job
    workers (`ATELIER_JOBS__CONCURRENCY` processes) and the periodic tasks."""
    settings = load_settings()
    if settings.jobs.executor == "local" and not metrics.multiprocess_mode():
        # The job workers are processes of their own: count their metrics through shared
        # files, which must be chosen before prometheus_client loads, so start again with them.
        _fresh_multiproc_dir(settings)
        os.execv(sys.executable, [sys.executable, "-m", "atelier", *sys.argv[1:]])  # noqa: S606
    _migrate(settings, "upgrade", "head")
    if settings.storage.backend == "local":
        settings.storage.root.mkdir(parents=True, exist_ok=True)
    _serve(create_app(settings, embedded_workers=True), settings, host=host, port=port)


@app.command()
def api(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
) -> None:
    """Serve the API and web UI (no migrations, no job workers); scale with --workers."""
    settings = load_settings()
    if workers == 1:
        _serve(create_app(settings), settings, host=host, port=port)
        return
    # Several processes: each builds its app from the environment, and metrics are merged
    # through files that must exist, empty, before the workers import prometheus_client.
    _fresh_multiproc_dir(settings)
    _serve("atelier.app:app_from_environment", settings, host=host, port=port, workers=workers)


def _fresh_multiproc_dir(settings: Settings) -> None:
    multiproc_dir = os.environ.get(metrics.MULTIPROC_ENV) or str(settings.data_dir / "metrics")
    shutil.rmtree(multiproc_dir, ignore_errors=True)
    Path(multiproc_dir).mkdir(parents=True)
    os.environ[metrics.MULTIPROC_ENV] = multiproc_dir


def _serve(target, settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    limits = ReadLimits(
        header_timeout=settings.http.header_timeout_seconds,
        body_idle_timeout=settings.http.body_idle_timeout_seconds,
        body_min_rate=settings.http.body_min_bytes_per_second,
        body_grace=settings.http.body_grace_seconds,
    )
    uvicorn.run(
        target,
        factory=isinstance(target, str),
        host=host,
        port=port,
        workers=workers,
        http=http_protocol(limits),  # type: ignore[arg-type]  # a factory, as uvicorn calls it
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.http.forwarded_allow_ips,
        server_header=False,
    )


@migrate_app.command("upgrade")
def migrate_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (to the latest revision by default)."""
    _migrate(load_settings(), "upgrade", revision)


@migrate_app.command("downgrade")
def migrate_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, `-1` or `base`.")],
) -> None:
    """Downgrade the database schema to an earlier revision."""
    _migrate(load_settings(), "downgrade", revision)


@migrate_app.command("current")
def migrate_current() -> None:
    """Show the database's revision and the code's head revision."""
    current = _with_engine(load_settings(), migrations.current_revision)
    head = migrations.head_revision()
    state = "up to date" if current == head else "behind"
    console.print(f"database: {current or '(empty)'}  head: {head}  [{state}]", markup=False)


def _migrate(settings: Settings, direction: str, revision: str) -> None:
    move = migrations.upgrade if direction == "upgrade" else migrations.downgrade

    async def run(engine: AsyncEngine) -> str | None:
        with console.status(f"Migrating the database ({direction} to {revision})…"):
            await move(engine, revision)
        return await migrations.current_revision(engine)

    current = _with_engine(settings, run)
    errors.print(f"Database at revision {current or '(empty)'}.")


def _with_engine(settings: Settings, operation: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `operation` on a fresh engine; exit 1 with a clear message if the database fails."""

    async def run() -> T:
        engine = create_engine(**settings.database.model_dump())
        try:
            return await operation(engine)
        finally:
            await engine.dispose()

    where = make_url(settings.database.url).render_as_string(hide_password=True)
    try:
        return asyncio.run(run())
    except CommandError as exc:  # Alembic: unknown revision, diverging heads...
        errors.print(f"Migration refused: {exc}", markup=False)
    except (OSError, SQLAlchemyError) as exc:
        errors.print(f"The database at {where} failed: {exc}", markup=False)
    raise typer.Exit(1)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Check the configuration, database, migrations, storage and secrets; exit 1 on a failure."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = describe_error(exc)
        checks = [Check("config", "fail", "invalid configuration", problems=problems)]
        checks += [
            Check(name, "skip", "configuration invalid")
            for name in ("database", "migrations", "storage", "broker", "secrets")
        ]
    else:
        core_logging.configure(level="ERROR", fmt=settings.log_format)
        config = Check("config", "ok", f"valid ({settings.profile} profile)")
        checks = [config, *_with_engine(settings, lambda engine: diagnose(settings, engine))]
    failed = any(not c.ok for c in checks)
    if as_json:
        console.print_json(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}))
    else:
        _print_checks(checks)
    raise typer.Exit(1 if failed else 0)


def _print_table(table: Table) -> None:
    """On a terminal, fitted to its width; through a pipe (where Rich would fold at 80 columns,
    breaking ids and paths across lines) as wide as the table needs."""
    (console if console.is_terminal else Console(width=1000)).print(table)


def _print_checks(checks: list[Check]) -> None:
    table = Table(title="Atelier doctor")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    style = {"ok": "[green]ok[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}
    for check in checks:
        detail = "\n".join(check.problems) if check.problems else check.detail
        table.add_row(check.name, style[check.status], detail)
    _print_table(table)


ADMIN_PASSWORD_ENV = "ATELIER_ADMIN_PASSWORD"  # noqa: S105 - a variable name


@admin_app.command("create-user")
def admin_create_user(
    email: Annotated[str, typer.Option(help="Sign-in email of the new account.")],
    display_name: Annotated[str, typer.Option(help="Name shown to others.")] = "Administrator",
    superadmin: Annotated[bool, typer.Option(help="Make a platform operator.")] = False,
) -> None:
    """Create an account (whatever the registration mode). The password comes from
    $ATELIER_ADMIN_PASSWORD, or is asked for twice."""
    settings = load_settings()
    password = os.environ.get(ADMIN_PASSWORD_ENV) or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )

    async def create(engine: AsyncEngine) -> tuple[str, str]:
        async with create_sessionmaker(engine)() as session:
            user = await accounts.create_user(
                session,
                email=email,
                password=password,
                display_name=display_name,
                is_superadmin=superadmin,
                auth=settings.auth,
                info=NO_REQUEST,
                clock=SystemClock(),
            )
            return user.id, user.email

    try:
        user_id, stored_email = _with_engine(settings, create)
    except AtelierError as exc:
        errors.print(f"Not created: {exc.detail}", markup=False)
        for item in exc.extra.get("errors", []):
            errors.print(f"  • {item['detail']}", markup=False)
        raise typer.Exit(1) from None
    kind = "superadmin" if superadmin else "user"
    console.print(f"Created {kind} {stored_email} ({user_id}).", markup=False)


# ---- jobs -------------------------------------------------------------------------------------


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Processes; default: ATELIER_JOBS__CONCURRENCY.", min=1)
    ] = None,
    queues: Annotated[str, typer.Option(help="Queues to consume, comma-separated.")] = (
        "default,ml,media"
    ),
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's job metrics for Prometheus on this port."),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Interface of the metrics port (0.0.0.0 in a container).")
    ] = "127.0.0.1",
) -> None:
    """Run a Celery worker for Atelier's jobs (needs ATELIER_JOBS__EXECUTOR=celery)."""
    settings = _celery_settings()
    if metrics_port is not None and not metrics.multiprocess_mode():
        # Jobs run in child processes: their metrics go through shared files, chosen before
        # prometheus_client loads, so start again with them.
        _fresh_multiproc_dir(settings)
        os.execv(sys.executable, [sys.executable, "-m", "atelier", *sys.argv[1:]])  # noqa: S606
    from atelier.adapters.executors.celery import make_celery, serve_metrics

    unknown = set(queues.split(",")) - set(QUEUES)
    if unknown:
        errors.print(f"Unknown queue(s): {', '.join(sorted(unknown))}; known: {', '.join(QUEUES)}")
        raise typer.Exit(2)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one job per process; no oversubscription
    if metrics_port is not None:
        serve_metrics(metrics_port, metrics_host)
    make_celery(settings).worker_main(
        [
            "worker",
            f"--concurrency={concurrency or settings.jobs.concurrency}",
            "--pool=prefork",
            f"--queues={queues}",
            f"--loglevel={loglevel}",
            "--hostname=atelier@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@app.command()
def scheduler(
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
) -> None:
    """Run the periodic tasks (the sweeper...) as Celery beat; run exactly one."""
    settings = _celery_settings()
    from atelier.adapters.executors.celery import make_celery

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    make_celery(settings).start(
        [
            "beat",
            f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
            f"--loglevel={loglevel}",
        ]
    )


def _celery_settings() -> Settings:
    settings = load_settings()
    if settings.jobs.executor != "celery":
        errors.print(
            "This command runs Celery: set ATELIER_JOBS__EXECUTOR=celery and a broker "
            "(ATELIER_JOBS__BROKER_URL or ATELIER_REDIS_URL). With the local executor, "
            "`atelier up` runs the workers and periodic tasks itself."
        )
        raise typer.Exit(2)
    return settings


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded...")] = None,
    kind: Annotated[str | None, typer.Option(help="A job kind, e.g. system.sleep.")] = None,
    org: Annotated[str | None, typer.Option(help="An organization id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """The latest jobs of every organization, newest first."""
    settings = load_settings()
    if status is not None and status not in STATUSES:
        errors.print(f"Unknown status {status!r}; one of {', '.join(STATUSES)}")
        raise typer.Exit(2)

    async def fetch(engine: AsyncEngine) -> list[Job]:
        query = job_service.all_jobs_query(status=status, kind=kind, org_id=org).limit(limit)
        async with create_sessionmaker(engine)() as session:
            return list(await session.scalars(query))

    found = _with_engine(settings, fetch)
    if as_json:
        console.print_json(json.dumps([AdminJobRead.of(j).model_dump(mode="json") for j in found]))
        return
    table = Table(title=f"Jobs ({len(found)} shown)")
    for column in ("id", "organization", "kind", "status", "progress", "attempt", "created"):
        table.add_column(column, overflow="fold")
    for job in found:
        status_text = job.status + (
            " (waiting)" if job.status == "queued" and not job.dispatched_at else ""
        )
        table.add_row(
            job.id,
            job.org_id,
            job.kind,
            status_text,
            f"{job.progress:.0%}",
            f"{job.attempt}/{job.max_attempts}",
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _print_table(table)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a job of any organization: at once if queued, cooperatively if running."""
    settings = load_settings()

    async def cancel(engine: AsyncEngine) -> Job:
        runtime = _cli_runtime(settings, engine)
        try:
            async with runtime.sessionmaker() as session:
                return await job_service.cancel_by_id(session, runtime.dispatcher, job_id)
        finally:
            await runtime.dispatcher.close()

    try:
        job = _with_engine(settings, cancel)
    except AtelierError as exc:
        errors.print(exc.detail, markup=False)
        raise typer.Exit(1) from None
    what = "cancelled" if job.status == "cancelled" else "asked to stop (it is running)"
    console.print(f"Job {job.id} {what}.", markup=False)


@jobs_app.command("run-periodic")
def jobs_run_periodic(
    name: Annotated[str, typer.Argument(help="A periodic task, e.g. jobs.sweep.")],
) -> None:
    """Run one periodic task now, in this process."""
    settings = load_settings()
    registry = job_kinds.load(settings.jobs.modules)
    if name not in registry.periodic_tasks:
        known = ", ".join(sorted(registry.periodic_tasks))
        errors.print(f"No periodic task {name!r}; known: {known}", markup=False)
        raise typer.Exit(2)

    async def run(engine: AsyncEngine) -> object:
        runtime = _cli_runtime(settings, engine)
        try:
            return await registry.periodic_tasks[name].fn(runtime)
        finally:
            await runtime.dispatcher.close()

    result = _with_engine(settings, run)
    console.print(f"{name}: {json.dumps(result, default=str)}", markup=False)


@storage_app.command("check")
def storage_check(
    examples: Annotated[int, typer.Option(help="Keys shown per kind of mismatch.", min=0)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Compare stored-blob rows with the store's objects, and count what crashed uploads left;
    exit 1 on any mismatch, or on a leftover older than the garbage collector's grace.

    Reads only (one stat per row: run it off-peak on a remote store). Objects without rows
    and leftovers younger than the grace period may be uploads in flight.
    """
    from dataclasses import asdict
    from datetime import timedelta

    from atelier.adapters.blobs import create_blob_store
    from atelier.storage.integrity import integrity_report, spool_root

    settings = load_settings()
    store = create_blob_store(
        settings.storage, secret=settings.secret_key.get_secret_value(), clock=SystemClock()
    )

    async def run(engine: AsyncEngine):
        async with create_sessionmaker(engine)() as session:
            return await integrity_report(
                session,
                store,
                examples=examples,
                spool_root=spool_root(settings.data_dir),
                clock=SystemClock(),
                grace=timedelta(seconds=settings.storage.gc_grace_seconds),
            )

    report = _with_engine(settings, run)
    if as_json:
        console.print_json(json.dumps({**asdict(report), "ok": report.ok}))
    else:
        console.print(
            f"{report.rows_checked} rows and {report.objects_checked} objects checked.",
            markup=False,
        )
        for label, finding in (
            ("rows whose object is missing", report.rows_without_objects),
            ("rows whose object has another size", report.size_mismatches),
            ("objects without a row", report.objects_without_rows),
        ):
            console.print(f"{finding.count} {label}", markup=False)
            for key in finding.examples:
                console.print(f"  {key}", markup=False)
        for label, leftovers in (
            ("unfinished writes in the store", report.partial_writes),
            ("upload spool folders", report.spool_folders),
        ):
            console.print(
                f"{leftovers.count} {label} ({leftovers.bytes} bytes, "
                f"{leftovers.stale} past the grace period)",
                markup=False,
            )
            for name in leftovers.examples:
                console.print(f"  {name}", markup=False)
    if not report.ok:
        raise typer.Exit(1)


def _cli_runtime(settings: Settings, engine: AsyncEngine):
    """A runtime for one command: jobs it releases go to Celery, run here (inline), or are left
    for `atelier up` (local: its pool lives in that process)."""
    from atelier.adapters.executors.inline import InlineExecutor, NoExecutor
    from atelier.workers import build_runtime

    if settings.jobs.executor == "celery":
        from atelier.adapters.executors.celery import CeleryExecutor

        executor = CeleryExecutor(settings, app=None)
    elif settings.jobs.executor == "inline":
        executor = InlineExecutor()
    else:
        executor = NoExecutor()
    return build_runtime(settings, executor, engine=engine)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as JSON (secrets masked)."""
    settings = load_settings()
    console.print_json(settings.model_dump_json())


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md is this output)."""
    sys.stdout.write(render_reference())


def main() -> None:
    app()
