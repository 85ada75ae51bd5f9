"""The AutoML API: start a run on a dataset version, follow it (its job's events stream its
progress), read its leaderboard and results."""

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from atelier.automl import service
from atelier.automl.schemas import RunCreate, RunRead, RunWithJob
from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import Conflict
from atelier.core.pagination import Page, PageParams
from atelier.core.routing import API_PREFIX, operation
from atelier.identity.deps import CurrentPrincipal
from atelier.jobs.models import Job
from atelier.jobs.schemas import JobRead

router = APIRouter(prefix=f"{API_PREFIX}/automl/runs", tags=["automl"])

RunId = Annotated[str, Path(max_length=40)]
# The report is one page with its styles inline and no script at all.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a request with the same key to get the same run back.",
    ),
]


@router.post("", status_code=202, response_model=RunWithJob, **operation("automl_run", "create"))
async def create_run(
    body: RunCreate,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    idempotency_key: IdempotencyKey = None,
):
    """Start an AutoML run: an `automl.train` job on the `ml` queue. Follow it with
    `GET /jobs/{job_id}/events`; the run's leaderboard fills in as it goes."""
    state = request.app.state
    run, job = await service.create_run(
        session,
        state.dispatcher,
        state.job_registry.kinds[service.TRAIN_KIND],
        principal,
        body,
        settings=state.settings,
        clock=clock,
        info=info,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"{API_PREFIX}/automl/runs/{run.id}"
    # Read back: an inline run (tests) has finished already.
    job = await session.get(Job, job.id, populate_existing=True)
    await session.refresh(run)
    return RunWithJob(run=RunRead.of(run), job=JobRead.of(job))


@router.get("", response_model=Page[RunRead], **operation("automl_run", "read"))
async def list_runs(
    principal: CurrentPrincipal,
    session: DbSession,
    page: PageParams,
    dataset_id: Annotated[str | None, Query(max_length=40)] = None,
):
    """The organization's AutoML runs, newest first."""
    found = await service.list_runs(session, principal, page, dataset_id=dataset_id)
    return found.map(RunRead.of)


@router.get("/{run_id}", response_model=RunWithJob, **operation("automl_run", "read"))
async def get_run(run_id: RunId, principal: CurrentPrincipal, session: DbSession):
    """A run with its job (state, progress) and, as they come, its leaderboard and results."""
    run = await service.get_run(session, principal, run_id)
    job = await service.job_of(session, principal, run)
    return RunWithJob(run=RunRead.of(run), job=JobRead.of(job))


@router.get(
    "/{run_id}/report",
    response_class=HTMLResponse,
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
    **operation("automl_run", "read"),
)
async def get_report(
    run_id: RunId,
    principal: CurrentPrincipal,
    session: DbSession,
    format: Annotated[Literal["html", "json"], Query()] = "html",
) -> Response:
    """The run's report: one self-contained HTML page (default), or the same as JSON
    (`?format=json`) for programs. 409 until the run has finished."""
    run = await service.get_run(session, principal, run_id)
    if run.report is None:
        raise Conflict("The run has no report yet: it has not finished, or it failed")
    if format == "json":
        return JSONResponse(run.report)
    from atelier.automl.report import render_html

    return HTMLResponse(render_html(run.report), headers={"Content-Security-Policy": REPORT_CSP})


@router.get(
    "/{run_id}/model",
    status_code=307,
    response_class=RedirectResponse,
    **operation("automl_run", "read"),
)
async def download_model(
    run_id: RunId, request: Request, principal: CurrentPrincipal, session: DbSession
) -> RedirectResponse:
    """A redirect to a short-lived link to the model folder as a zip: `model.skops`,
    `signature.json`, the report. Unzip it for `atelier automl predict`."""
    url = await service.model_link(session, request.app.state.blobs, principal, run_id)
    return RedirectResponse(url, status_code=307)
