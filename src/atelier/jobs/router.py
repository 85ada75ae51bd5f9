"""The jobs API: list, read, cancel, follow (Server-Sent Events), and submit the kinds that may
be submitted directly (operators' `system.*` kinds; domains submit theirs from their own
endpoints)."""

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from atelier.core.deps import DbSession
from atelier.core.errors import Forbidden, NotFound
from atelier.core.pagination import Page, PageParams, paginate
from atelier.core.principal import Principal
from atelier.core.routing import API_PREFIX, operation
from atelier.identity.deps import CurrentPrincipal, Superadmin
from atelier.jobs import service
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.models import STATUSES, Job, JobLogLine
from atelier.jobs.registry import JobKind, Registry
from atelier.jobs.schemas import (
    AdminJobRead,
    JobCreate,
    JobKindRead,
    JobRead,
    LogLineRead,
)

router = APIRouter(prefix=f"{API_PREFIX}/jobs", tags=["jobs"])
kinds_router = APIRouter(prefix=f"{API_PREFIX}/job-kinds", tags=["jobs"])
admin_router = APIRouter(prefix=f"{API_PREFIX}/admin/jobs", tags=["admin"])

KEEPALIVE_SECONDS = 15.0
MAX_INT32 = 2**31 - 1  # job revisions and log line ids are 32-bit integers on PostgreSQL
JobId = Path(max_length=40)
StatusFilter = Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")]
KindFilter = Annotated[str | None, Query(max_length=64)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Repeat a request with the same key to get the same job back.",
    ),
]


def _dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def _registry(request: Request) -> Registry:
    return request.app.state.job_registry


Dispatch = Annotated[Dispatcher, Depends(_dispatcher)]
Kinds = Annotated[Registry, Depends(_registry)]


def _may_submit(principal: Principal, kind: JobKind) -> bool:
    if kind.submitter is None:
        return False
    if kind.submitter == "superadmin":
        return principal.is_superadmin
    return principal.kind == "user" or "write" in principal.scopes


@router.get("", response_model=Page[JobRead], **operation("job", "read"))
async def list_jobs(
    principal: CurrentPrincipal,
    session: DbSession,
    page: PageParams,
    status: StatusFilter = None,
    kind: KindFilter = None,
):
    """The organization's jobs, newest first."""
    found = await service.list_jobs(session, principal, page, status=status, kind=kind)
    return found.map(JobRead.of)


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    **operation("job", "create"),
    responses={
        200: {"description": "A repeated request (same Idempotency-Key): the same job."},
        429: {"description": "Too many of the organization's jobs wait for a slot."},
    },
)
async def submit_job(
    body: JobCreate,
    principal: CurrentPrincipal,
    session: DbSession,
    dispatcher: Dispatch,
    registry: Kinds,
    response: Response,
    idempotency_key: IdempotencyKey = None,
):
    """Submit a job of a kind that may be submitted directly (see `GET /job-kinds`)."""
    kind = registry.get(body.kind)
    if kind is None or kind.submitter is None:
        raise NotFound(f"No job kind {body.kind!r} can be submitted here")
    if not _may_submit(principal, kind):
        raise Forbidden(f"You may not submit {kind.name} jobs")
    if kind.submitter in ("member", "admin"):
        principal.require_role(kind.submitter)
    submitted = await service.submit_idempotent(
        session,
        dispatcher,
        kind,
        body.payload,
        org_id=principal.org_id,
        created_by=principal.actor_id,
        idempotency_key=idempotency_key,
    )
    # Read back: an inline run may have moved it on already.
    job = await session.get(Job, submitted.job.id, populate_existing=True)
    response.headers["Location"] = f"{API_PREFIX}/jobs/{job.id}"
    if not submitted.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return JobRead.of(job)


@router.get("/{job_id}", response_model=JobRead, **operation("job", "read"))
async def get_job(job_id: Annotated[str, JobId], principal: CurrentPrincipal, session: DbSession):
    return JobRead.of(await service.get(session, principal, job_id))


@router.post("/{job_id}/cancel", response_model=JobRead, **operation("job", "update"))
async def cancel_job(
    job_id: Annotated[str, JobId],
    principal: CurrentPrincipal,
    session: DbSession,
    dispatcher: Dispatch,
):
    """A queued job is cancelled at once; a running one is asked to stop (`cancel_requested`)
    and ends `cancelled` when its handler next checks."""
    principal.require_role("member")
    return JobRead.of(await service.cancel(session, dispatcher, principal, job_id))


@router.get("/{job_id}/log", response_model=list[LogLineRead], **operation("job", "read"))
async def job_log(
    job_id: Annotated[str, JobId],
    principal: CurrentPrincipal,
    session: DbSession,
    # Line ids are 32-bit INTEGERs on PostgreSQL; a larger one would fail in the driver (500).
    after: Annotated[int, Query(ge=0, le=MAX_INT32, description="Lines after this line id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
):
    await service.get(session, principal, job_id)
    return await service.log_lines(session, job_id, after=after, limit=limit)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    **operation("job", "read"),
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    request: Request,
    job_id: Annotated[str, JobId],
    principal: CurrentPrincipal,
    session: DbSession,
):
    """Server-Sent Events: `job` (the job, whenever it changes) and `log` (each new log line),
    until the job ends. Reconnecting with `Last-Event-ID` resumes without repeats."""
    await service.get(session, principal, job_id)
    # The stream polls with short sessions of its own; free this one's connection now.
    await session.close()
    return StreamingResponse(
        _events(request, job_id, _resume_after(request.headers.get("last-event-id", ""))),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_after(last_event_id: str) -> tuple[int, int]:
    """(revision, line id) from a `Last-Event-ID` of ours, `revision:line`; anything else,
    numbers past the columns' 32 bits included, starts the stream from the beginning."""
    parts = last_event_id.split(":")
    if len(parts) == 2 and all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        revision, line = int(parts[0]), int(parts[1])
        if max(revision, line) <= MAX_INT32:
            return revision, line
    return (-1, 0)


async def _events(request: Request, job_id: str, after: tuple[int, int]) -> AsyncIterator[str]:
    followed = service.follow(
        request.app.state.sessionmaker,
        job_id,
        after=after,
        poll=request.app.state.settings.jobs.event_poll_seconds,
        keepalive=KEEPALIVE_SECONDS,
        disconnected=request.is_disconnected,
    )
    async for name, item, event_id in followed:
        if isinstance(item, JobLogLine):
            yield _event(name, LogLineRead.model_validate(item).model_dump_json(), event_id)
        elif isinstance(item, Job) and name == "end":
            yield _event(name, json.dumps({"status": item.status}), event_id)
        elif isinstance(item, Job):
            yield _event(name, JobRead.of(item).model_dump_json(), event_id)
        else:
            yield ": keep-alive\n\n"


def _event(name: str, data: str, event_id: str) -> str:
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n"


# ---- kinds ---------------------------------------------------------------------------------


@kinds_router.get("", response_model=list[JobKindRead], **operation("job", "read"))
async def list_kinds(principal: CurrentPrincipal, registry: Kinds):
    """The kinds this caller may submit with `POST /jobs`."""
    return [
        JobKindRead(
            name=kind.name,
            queue=kind.queue,
            description=kind.description,
            timeout_seconds=int(kind.timeout.total_seconds()),
            max_attempts=kind.max_attempts,
            payload_schema=kind.payload.model_json_schema(),
        )
        for kind in sorted(registry.kinds.values(), key=lambda k: k.name)
        if _may_submit(principal, kind)
    ]


# ---- operators -----------------------------------------------------------------------------


@admin_router.get("", response_model=Page[AdminJobRead], **operation("job", "admin"))
async def admin_list_jobs(
    principal: Superadmin,
    session: DbSession,
    page: PageParams,
    status: StatusFilter = None,
    kind: KindFilter = None,
    org_id: Annotated[str | None, Query(max_length=40)] = None,
):
    """Every organization's jobs, newest first (platform operators)."""
    query = service.all_jobs_query(status=status, kind=kind, org_id=org_id)
    return (await paginate(session, query, page)).map(AdminJobRead.of)
