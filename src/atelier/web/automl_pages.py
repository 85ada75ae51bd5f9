"""Pages of AutoML runs: the list, a new run (a dataset version, a target suggested from its
profile, a budget), and a run's page, live while it trains, then with its holdout metrics, its
report and its model. Same services as the API (`automl.service`).

A run's page follows it over Server-Sent Events on a route of its own, authenticated by the
session cookie like every page (the API's stream takes a Bearer token). Both streams are the
jobs service's `follow`; this one sends, on each change of the run's job, the live part of the
page as HTML rendered here (so escaped by Jinja, and in the reader's language), which
`static/js/run-events.js` puts in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from atelier.automl import service as automl
from atelier.automl.models import AutomlRun
from atelier.automl.router import REPORT_CSP
from atelier.automl.schemas import RunCreate
from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, TooManyRequests
from atelier.core.pagination import PageRequest
from atelier.core.principal import Principal
from atelier.datasets import service as datasets
from atelier.identity.web_sessions import WebUser
from atelier.jobs import service as jobs
from atelier.jobs.models import SUCCEEDED, TERMINAL, Job
from atelier.web import auth
from atelier.web.datasets_pages import PAGE_SIZE, formatters, reload_user, render_page

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

RunId = Annotated[str, Path(max_length=40)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
DatasetChoice = Annotated[str | None, Query(alias="dataset", max_length=40)]
VersionChoice = Annotated[int | None, Query(alias="version", ge=1, le=1_000_000)]
FormText = Annotated[str, Form(max_length=200)]
TASKS = tuple(automl.TASK_METRICS)
# Column names that usually hold what is to be predicted, for the suggested target.
TARGET_NAMES = ("target", "label", "y", "class", "outcome")
LEADERBOARD_ROWS = 20
KEEPALIVE_SECONDS = 15.0
# Datasets offered in the new-run form's list (newest first); a link can name any other.
DATASET_CHOICES = 200


# ---- the list --------------------------------------------------------------------------------


@router.get("/automl")
async def runs_page(
    request: Request, session: DbSession, web_user: auth.SignedIn, offset: Offset = 0
) -> Response:
    principal = web_user.principal
    page = await automl.list_runs(
        session, principal, PageRequest(limit=PAGE_SIZE, offset=offset), dataset_id=None
    )
    # One job per run shown: a page is at most PAGE_SIZE runs.
    states = {run.id: await automl.job_of(session, principal, run) for run in page.items}
    context = {"page": page, "jobs": states}
    return await render_page(request, session, web_user, "automl/list.html", context)


# ---- a new run -------------------------------------------------------------------------------


def target_choices(schema: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every column, and whether it can be predicted (the service's NOT_TARGETS rule)."""
    return [
        {"name": c["name"], "kind": c["kind"], "allowed": c["kind"] not in automl.NOT_TARGETS}
        for c in schema
    ]


def suggested_target(choices: list[dict[str, Any]]) -> str | None:
    """A column named like a target, else the last one that can be predicted (by custom, a
    table ends with what it is about)."""
    allowed = [choice["name"] for choice in choices if choice["allowed"]]
    named = [name for name in allowed if name.strip().lower() in TARGET_NAMES]
    return (named or allowed or [None])[-1]


async def _choice(
    session: AsyncSession, principal: Principal, dataset_id: str | None, number: int | None
) -> dict[str, Any]:
    """The dataset version a new run would learn from, with its columns as targets."""
    if not dataset_id:
        return {"dataset": None}
    dataset = await datasets.get_dataset(session, principal, dataset_id)
    versions = await datasets.list_versions(session, principal, dataset_id)
    version = await datasets.get_version(
        session, principal, dataset_id, number or dataset.latest_version
    )
    targets = target_choices(version.schema)
    return {
        "dataset": dataset,
        "versions": versions,
        "dataset_version": version,  # not "version": the pages show Atelier's as that
        "targets": targets,
        "suggested": suggested_target(targets),
    }


async def _new_run_page(
    request: Request,
    session: AsyncSession,
    web_user: WebUser,
    *,
    dataset_id: str | None,
    number: int | None,
    values: dict[str, str] | None = None,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> Response:
    principal = web_user.principal
    choice = await _choice(session, principal, dataset_id, number)
    listed = await datasets.list_datasets(session, principal, PageRequest(limit=DATASET_CHOICES))
    offered = list(listed.items)
    if choice["dataset"] is not None and choice["dataset"].id not in {d.id for d in offered}:
        offered.append(choice["dataset"])
    settings = request.app.state.settings.automl
    context = {
        **choice,
        "datasets": offered,
        "tasks": TASKS,
        "metrics": automl.ALL_METRICS,
        "default_budget": settings.default_budget_seconds,
        "max_budget": settings.max_budget_seconds,
        "values": values or {},
        "problems": problems or [],
    }
    return await render_page(
        request, session, web_user, "automl/new.html", context, status_code=status_code
    )


@router.get("/automl/new")
async def new_run_page(
    request: Request,
    session: DbSession,
    web_user: auth.SignedIn,
    dataset: DatasetChoice = None,
    version: VersionChoice = None,
) -> Response:
    """The form; `?dataset=` (and `&version=`) come from a dataset's "Train a model"."""
    return await _new_run_page(request, session, web_user, dataset_id=dataset, number=version)


@router.get("/automl/new/fields")
async def run_fields(
    request: Request,
    session: DbSession,
    web_user: auth.SignedIn,
    dataset: DatasetChoice = None,
    version: VersionChoice = None,
) -> Response:
    """The form's version and target fields for another dataset (htmx swaps them in)."""
    choice = await _choice(session, web_user.principal, dataset, version)
    renderer = request.app.state.renderer
    context = {**choice, "values": {}, **formatters(renderer.language(request))}
    return renderer.render(request, "automl/_run_fields.html", context)


@router.post("/automl/runs")
async def start_run(
    request: Request,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    web_user: auth.SignedInForm,
    dataset: Annotated[str, Form(max_length=40)],
    target: FormText = "",
    version: FormText = "",
    task: FormText = "",
    metric: FormText = "",
    budget_seconds: FormText = "",
) -> Response:
    """Start the run and go to its page; a refused request shows the form again, filled in."""
    state = request.app.state
    values = {"target": target, "task": task, "metric": metric, "budget_seconds": budget_seconds}
    try:
        body = RunCreate.model_validate(
            {
                "dataset_id": dataset,
                "version": version or None,
                "target": target,
                "task": task or None,
                "metric": metric or None,
                "budget_seconds": budget_seconds or None,
            }
        )
        run, _ = await automl.create_run(
            session,
            state.dispatcher,
            state.job_registry.kinds[automl.TRAIN_KIND],
            web_user.principal,
            body,
            settings=state.settings,
            clock=clock,
            info=info,
        )
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        status = 422
    except (InvalidInput, Conflict, QuotaExceeded, TooManyRequests) as exc:
        problems = [e["detail"] for e in exc.extra.get("errors", [])] or [exc.detail]
        status = exc.status
    else:
        return RedirectResponse(f"/automl/runs/{run.id}", status_code=303)
    await reload_user(session, web_user)
    return await _new_run_page(
        request,
        session,
        web_user,
        dataset_id=dataset,
        number=int(version) if version.isdigit() else None,
        values=values,
        problems=problems,
        status_code=status,
    )


# ---- a run -----------------------------------------------------------------------------------


def _elapsed(job: Job, now: datetime) -> str | None:
    if job.started_at is None:
        return None
    seconds = max(int(((job.finished_at or now) - job.started_at).total_seconds()), 0)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _live(run: AutomlRun, job: Job, now: datetime) -> dict[str, Any]:
    """What the live part of a run's page shows (`automl/_run_live.html`)."""
    board = run.leaderboard or []
    return {
        "run": run,
        "job": job,
        "ended": job.status in TERMINAL,
        "percent": 100 if job.status == SUCCEEDED else int(job.progress * 100),
        "elapsed": _elapsed(job, now),
        "best": board[0]["cv_score"] if board else None,
        "leaderboard": board[:LEADERBOARD_ROWS],
        "more_trials": max(len(board) - LEADERBOARD_ROWS, 0),
    }


@router.get("/automl/runs/{run_id}")
async def run_page(
    run_id: RunId, request: Request, session: DbSession, clock: AppClock, web_user: auth.SignedIn
) -> Response:
    principal = web_user.principal
    run = await automl.get_run(session, principal, run_id)
    job = await automl.job_of(session, principal, run)
    context = _live(run, job, clock.now())
    return await render_page(request, session, web_user, "automl/run.html", context)


@router.get("/automl/runs/{run_id}/events")
async def run_events(
    run_id: RunId, request: Request, session: DbSession, web_user: auth.SignedIn
) -> StreamingResponse:
    """Server-Sent Events: `run` (the live part of the page, as HTML) at once and whenever
    the run's job changes, then `end` once it has ended."""
    run = await automl.get_run(session, web_user.principal, run_id)
    # The stream reads with short sessions of its own; free this one's connection now.
    await session.close()
    return StreamingResponse(
        _run_events(request, web_user, run.id, run.job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _run_events(
    request: Request, web_user: WebUser, run_id: str, job_id: str
) -> AsyncIterator[str]:
    state = request.app.state
    followed = jobs.follow(
        state.sessionmaker,
        job_id,
        poll=state.settings.jobs.event_poll_seconds,
        keepalive=KEEPALIVE_SECONDS,
        disconnected=request.is_disconnected,
    )
    async for name, item, _ in followed:
        if name == "keep-alive":
            yield ": keep-alive\n\n"
        elif name == "end" and isinstance(item, Job):
            yield _event("end", item.status)
        elif name == "job" and isinstance(item, Job):
            async with state.sessionmaker() as session:
                try:
                    run = await automl.get_run(session, web_user.principal, run_id)
                except NotFound:  # deleted with its organization while watched
                    return
            context = {
                "can_write": web_user.principal.role != "viewer",
                **formatters(state.renderer.language(request)),
                **_live(run, item, state.clock.now()),
            }
            fragment = state.renderer.render(request, "automl/_run_live.html", context)
            yield _event("run", fragment.body.decode())


def _event(name: str, data: str) -> str:
    """One Server-Sent Event; each line of `data` gets its own `data:` field."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


@router.post("/automl/runs/{run_id}/cancel")
async def cancel_run(
    run_id: RunId, request: Request, session: DbSession, web_user: auth.SignedInForm
) -> Response:
    """Ask the run to stop; its page then shows it stopping, then cancelled."""
    principal = web_user.principal
    principal.require_role("member")
    job_id = (await automl.get_run(session, principal, run_id)).job_id
    with contextlib.suppress(Conflict):  # it ended meanwhile: its page says how
        await jobs.cancel(session, request.app.state.dispatcher, principal, job_id)
    return RedirectResponse(f"/automl/runs/{run_id}", status_code=303)


@router.get("/automl/runs/{run_id}/report")
async def report_page(run_id: RunId, session: DbSession, web_user: auth.SignedIn) -> HTMLResponse:
    """The run's report as the API serves it: one page, no script, under the same strict CSP
    (which also keeps it from being framed)."""
    run = await automl.get_run(session, web_user.principal, run_id)
    if run.report is None:
        raise Conflict("The run has no report yet: it has not finished, or it failed")
    # Imported here as in the API: the report's plotting code loads numpy.
    from atelier.automl.report import render_html

    return HTMLResponse(render_html(run.report), headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/automl/runs/{run_id}/model")
async def download_model(
    run_id: RunId, request: Request, session: DbSession, web_user: auth.SignedIn
) -> RedirectResponse:
    """To a short-lived link of the model folder, zipped."""
    url = await automl.model_link(session, request.app.state.blobs, web_user.principal, run_id)
    return RedirectResponse(url, status_code=303)
