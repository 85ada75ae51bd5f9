"""AutoML runs: start one on a dataset version (an `automl.train` job on the `ml` queue), read
them. The search itself is `automl.engine`, run by the job (`automl.jobs`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.automl.models import AutomlRun
from atelier.automl.schemas import RunCreate
from atelier.core.blobs import BlobStore
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, InvalidInput
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal
from atelier.core.tenancy import get_owned, org_select
from atelier.datasets import service as datasets
from atelier.identity import orgs
from atelier.jobs import service as jobs
from atelier.jobs.dispatch import Dispatcher
from atelier.jobs.models import Job
from atelier.jobs.registry import JobKind
from atelier.settings import Settings
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

TRAIN_KIND = "automl.train"
MODEL_LINK_LIFETIME = timedelta(minutes=10)
# The room a run must find left in the organization's storage when it is submitted: its model
# folder (zipped: the skops ensemble, its signature and report) is stored at the end; on a
# 400-row table with a 10 s budget it takes 1.3 to 3.5 MB, more on larger tables. Below this
# floor the run would spend its whole budget, then fail on the save. A floor, not an estimate:
# the save still enforces the limit exactly.
MODEL_ROOM_BYTES = 8 << 20
# What each task may be scored with; the first is the default.
TASK_METRICS = {
    "binary": ("roc_auc", "log_loss", "accuracy", "balanced_accuracy", "f1"),
    "multiclass": ("log_loss", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"),
    "regression": ("rmse", "mae", "r2"),
}
ALL_METRICS = sorted({m for metrics in TASK_METRICS.values() for m in metrics})
# Column kinds that cannot be a target (see datasets.profiling).
NOT_TARGETS = {
    "identifier": "it is unique on every row (an id)",
    "constant": "it has a single value",
    "text": "it is free text",
}


async def create_run(
    session: AsyncSession,
    dispatcher: Dispatcher,
    kind: JobKind,
    principal: Principal,
    body: RunCreate,
    *,
    settings: Settings,
    clock: Clock,
    info: RequestInfo,
    idempotency_key: str | None = None,
) -> tuple[AutomlRun, Job]:
    """Check the request against the dataset version's schema, then store the run and submit
    its job in one unit of work (the job is handed over once that commits)."""
    principal.require_role("member")
    dataset = await datasets.get_dataset(session, principal, body.dataset_id)
    number = body.version or dataset.latest_version
    version = await datasets.get_version(session, principal, dataset.id, number)
    _check_request(body, version.schema, settings)
    request = {**body.model_dump(), "version": number}
    if idempotency_key is not None:
        earlier = await jobs.by_idempotency_key(session, principal.org_id, idempotency_key)
        if earlier is not None:
            run = await _run_of_job(session, principal, earlier.id)
            if run.request != request:
                raise jobs.IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different run", run_id=run.id
                )
            return run, earlier
    plan = await orgs.plan_of(session, principal.org_id)
    await storage.check_room(
        session, principal.org_id, plan, needed=MODEL_ROOM_BYTES, what="an AutoML run's model"
    )
    budget = body.budget_seconds or settings.automl.default_budget_seconds
    async with transaction(session):
        run = AutomlRun(
            org_id=principal.org_id,
            dataset_id=dataset.id,
            dataset_version=number,
            dataset_version_id=version.id,
            dataset_name=dataset.name,
            target=body.target,
            task=body.task,
            metric=body.metric or (TASK_METRICS[body.task][0] if body.task else None),
            budget_seconds=float(budget),
            seed=body.seed,
            exclude=list(dict.fromkeys(body.exclude)),
            job_id="",
            leaderboard=[],
            results=None,
            request=request,
            created_by=principal.actor_id,
            created_at=clock.now(),
        )
        session.add(run)
        await session.flush()
        try:
            submitted = await jobs.submit(
                session,
                dispatcher,
                kind,
                {"run_id": run.id},
                org_id=principal.org_id,
                created_by=principal.actor_id,
                idempotency_key=idempotency_key,
            )
        except jobs.IdempotencyRace:
            raise Conflict(
                "Another request with this Idempotency-Key is being handled; send it again"
            ) from None
        run.job_id = submitted.job.id
        await audit.record(
            session,
            "automl.run_created",
            info=info,
            principal=principal,
            target=("automl_run", run.id),
            details={"dataset_id": dataset.id, "version": number, "target": body.target},
        )
    return run, submitted.job


def _check_request(body: RunCreate, schema: list[dict[str, Any]], settings: Settings) -> None:
    kinds = {column["name"]: column["kind"] for column in schema}
    errors = []
    if body.target not in kinds:
        errors.append(
            {"pointer": "/target", "detail": f"no column {body.target!r} in this version"}
        )
    elif kinds[body.target] in NOT_TARGETS:
        errors.append(
            {
                "pointer": "/target",
                "detail": f"{body.target!r} cannot be predicted: {NOT_TARGETS[kinds[body.target]]}",
            }
        )
    if body.target in body.exclude:
        errors.append({"pointer": "/exclude", "detail": "the target cannot be excluded"})
    unknown = [name for name in body.exclude if name not in kinds]
    if unknown:
        errors.append({"pointer": "/exclude", "detail": f"no such columns: {unknown[:10]}"})
    if body.metric is not None:
        allowed = TASK_METRICS[body.task] if body.task else ALL_METRICS
        if body.metric not in allowed:
            errors.append({"pointer": "/metric", "detail": f"one of {', '.join(allowed)}"})
    if body.budget_seconds is not None and body.budget_seconds > settings.automl.max_budget_seconds:
        errors.append(
            {
                "pointer": "/budget_seconds",
                "detail": f"at most {settings.automl.max_budget_seconds} seconds",
            }
        )
    if errors:
        raise InvalidInput("The AutoML run cannot start as asked", errors=errors)


async def _run_of_job(session: AsyncSession, principal: Principal, job_id: str) -> AutomlRun:
    run = await session.scalar(org_select(AutomlRun, principal).where(AutomlRun.job_id == job_id))
    if run is None:  # an Idempotency-Key first used for another kind of job
        raise jobs.IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different request", job_id=job_id
        )
    return run


async def list_runs(
    session: AsyncSession, principal: Principal, page: PageRequest, *, dataset_id: str | None
) -> Page[AutomlRun]:
    statement = org_select(AutomlRun, principal)
    if dataset_id is not None:
        statement = statement.where(AutomlRun.dataset_id == dataset_id)
    statement = statement.order_by(AutomlRun.created_at.desc(), AutomlRun.id.desc())
    return await paginate(session, statement, page)


async def get_run(session: AsyncSession, principal: Principal, run_id: str) -> AutomlRun:
    return await get_owned(session, AutomlRun, principal, run_id, what="AutoML run")


async def job_of(session: AsyncSession, principal: Principal, run: AutomlRun) -> Job:
    return await jobs.get(session, principal, run.job_id)


async def model_link(
    session: AsyncSession, store: BlobStore, principal: Principal, run_id: str
) -> str:
    """A ten-minute link to the run's model folder (zip); 409 until the run has one."""
    run = await get_run(session, principal, run_id)
    blob = await session.get(StoredBlob, run.model_blob_id) if run.model_blob_id else None
    if blob is None:
        raise Conflict("The run has no model: it has not finished, or it failed")
    return await store.signed_url(blob.key, expires_in=MODEL_LINK_LIFETIME, filename=blob.filename)
