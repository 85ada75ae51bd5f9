"""The `automl.train` job: run the search of an AutoML run, reporting as it goes.

A re-run (after a lost worker) starts the search again from the same seed and overwrites the
run's leaderboard and results: the job is idempotent.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import exists, select, update

from atelier.automl.jsonable import plain
from atelier.automl.models import AutomlRun
from atelier.automl.service import TRAIN_KIND
from atelier.core.blobs import download_to, file_chunks
from atelier.datasets.models import DatasetVersion
from atelier.identity import orgs
from atelier.jobs.models import RUNNING, Job
from atelier.jobs.registry import registry
from atelier.jobs.runtime import JobContext
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

LEADERBOARD_EVERY_SECONDS = 2.0


class TrainPayload(BaseModel):
    run_id: str = Field(max_length=40)


class RunGone(Exception):
    """The run, or the dataset version it learns from, no longer exists."""


@registry.kind(
    TRAIN_KIND, payload=TrainPayload, queue="ml", timeout=timedelta(hours=2), max_attempts=2
)
def train(ctx: JobContext, payload: TrainPayload) -> dict[str, Any]:
    """Search models for an AutoML run within its time budget; record the leaderboard and the
    results (holdout metrics, dropped columns, feature importance) on the run."""
    try:
        return _train(ctx, payload)
    except BaseException:
        # Nothing here raises RetryableError: whatever ends this attempt (a handler error, the
        # storage quota at the save, a cancellation, the time limit) ends the job, so the run
        # ends too. Fenced: a run whose claim was lost changes nothing.
        ctx.call(_update(ctx, payload.run_id, {"finished_at": ctx.clock.now()}))
        raise


def _train(ctx: JobContext, payload: TrainPayload) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from atelier.automl.engine import TrainConfig
    from atelier.automl.engine import train as search
    from atelier.automl.report import build_report

    run = ctx.call(_load(ctx, payload.run_id))
    config = TrainConfig(
        target=run["target"],
        task=run["task"],
        metric=run["metric"],
        budget_seconds=run["budget_seconds"],
        seed=run["seed"],
        exclude=tuple(run["exclude"]),
    )
    with tempfile.TemporaryDirectory(prefix="automl-") as folder:
        path = Path(folder) / "table.parquet"
        ctx.call(download_to(ctx.blobs, run["parquet_key"], path))
        table = pq.read_table(path)
    ctx.log(f"{table.num_rows} rows, {table.num_columns} columns, {config.budget_seconds:g} s")
    saved_at = [0.0]

    def on_progress(progress: Any) -> None:
        fraction = progress.elapsed_seconds / progress.budget_seconds
        ctx.progress(min(fraction, 0.99), progress.message)
        now = time.monotonic()
        if now - saved_at[0] >= LEADERBOARD_EVERY_SECONDS:
            saved_at[0] = now
            ctx.call(_save(ctx, payload.run_id, leaderboard=plain(progress.leaderboard)))

    result = search(table, config, on_progress=on_progress, should_stop=lambda: ctx.cancelled)
    ctx.check_cancelled()
    results = results_of(result)
    report = build_report(
        {
            "id": payload.run_id,
            "dataset_name": run["dataset_name"],
            "dataset_version": run["dataset_version"],
            "target": config.target,
            "budget_seconds": config.budget_seconds,
            "seed": config.seed,
        },
        {"rows": table.num_rows, "columns": table.num_columns},
        result,
    )
    answer = {
        "run_id": payload.run_id,
        "task": result.task,
        "metric": result.metric,
        "cv_score": results["cv_score"],
        "holdout_metrics": results["holdout_metrics"],
    }
    with tempfile.TemporaryDirectory(prefix="automl-model-") as folder:
        model_dir = _write_model(Path(folder) / "model", result, config, report)
        model_blob_id = _store_model(ctx, payload.run_id, model_dir)
        ctx.call(
            _save(
                ctx,
                payload.run_id,
                leaderboard=plain(result.leaderboard),
                results=results,
                report=report,
                model_blob_id=model_blob_id,
                task=result.task,
                metric=result.metric,
                finished=True,
            )
        )
        ctx.log(f"best {result.metric} {result.cv_score:.4f} (cross-validated)")
        if ctx.settings.mlflow_tracking_uri:
            answer["mlflow_run_id"] = _track(ctx, payload.run_id, run, results, report, model_dir)
    return answer


def _write_model(model_dir: Path, result: Any, config: Any, report: dict[str, Any]) -> Path:
    """The model folder: model, signature, report (`automl.artifacts`)."""
    from atelier.automl import artifacts
    from atelier.automl.report import render_html

    artifacts.save(
        model_dir,
        result.model,
        target=config.target,
        metric=result.metric,
        report=report,
        report_html=render_html(report),
    )
    return model_dir


def _store_model(ctx: JobContext, run_id: str, model_dir: Path) -> str:
    """The model folder, zipped into the store under the job's own key: a second attempt
    replaces the first one's file."""
    archive = model_dir.parent / "model.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(model_dir.iterdir()):
            zipped.write(path, path.name)
    return ctx.call(_upload_model(ctx, run_id, archive, archive.stat().st_size))


def _track(
    ctx: JobContext,
    run_id: str,
    run: dict[str, Any],
    results: dict[str, Any],
    report: dict[str, Any],
    model_dir: Path,
) -> str | None:
    """Log the finished run to MLflow. A tracking server that fails costs the copy there,
    never the run: the failure goes to the job's log."""
    from atelier.automl import tracking

    try:
        mlflow_run = tracking.log_run(
            ctx.settings.mlflow_tracking_uri,
            experiment=f"atelier/{ctx.org_id}/{run['dataset_name']}",
            run={k: v for k, v in run.items() if k != "parquet_key"}
            | {"id": run_id, "task": report.get("task"), "metric": report.get("metric")},
            results=results,
            leaderboard=report.get("leaderboard") or [],
            report=report,
            report_html=(model_dir / "report.html").read_text(),
            model_dir=model_dir,
        )
    except tracking.TrackingFailed as exc:
        ctx.log(f"MLflow logging failed: {exc}", level="warning")
        return None
    ctx.log(f"logged to MLflow as run {mlflow_run}")
    return mlflow_run


async def _upload_model(ctx: JobContext, run_id: str, archive: Path, size: int) -> str:
    key = ctx.output_key("model.zip")
    async with ctx.session() as session:
        earlier = await session.scalar(select(StoredBlob).where(StoredBlob.key == key))
        if earlier is not None:
            await storage.delete_blob(session, ctx.blobs, earlier)
        blob = await storage.save_upload(
            session,
            ctx.blobs,
            org_id=ctx.org_id,
            plan=await orgs.plan_of(session, ctx.org_id),
            key=key,
            chunks=file_chunks(archive),
            content_type="application/zip",
            filename=f"{run_id}-model.zip",
            max_bytes=size,
            clock=ctx.clock,
            purpose="automl-model",
        )
        return blob.id


def results_of(result: Any) -> dict[str, Any]:
    """What the run keeps of a search's result (JSON; the holdout predictions go to the
    report, not to the row)."""
    return plain(
        {
            "cv_score": result.cv_score,
            "holdout_metrics": result.holdout_metrics,
            "classes": result.classes,
            "ensemble": result.ensemble,
            "calibration": result.calibration,
            "dropped_columns": result.dropped_columns,
            "preprocessing": result.preprocessing,
            "feature_importance": result.feature_importance,
            "score_over_time": result.score_over_time,
            "elapsed_seconds": result.elapsed_seconds,
            "library_versions": result.library_versions,
        }
    )


async def _load(ctx: JobContext, run_id: str) -> dict[str, Any]:
    async with ctx.session() as session:
        row = (
            await session.execute(
                select(AutomlRun, StoredBlob.key)
                .join(DatasetVersion, DatasetVersion.id == AutomlRun.dataset_version_id)
                .join(StoredBlob, StoredBlob.id == DatasetVersion.parquet_blob_id)
                .where(AutomlRun.id == run_id, AutomlRun.org_id == ctx.org_id)
            )
        ).one_or_none()
    if row is None:
        raise RunGone(f"AutoML run {run_id} or the dataset version it learns from is gone")
    run, key = row
    return {
        "target": run.target,
        "task": run.task,
        "metric": run.metric,
        "budget_seconds": run.budget_seconds,
        "seed": run.seed,
        "exclude": run.exclude,
        "dataset_name": run.dataset_name,
        "dataset_version": run.dataset_version,
        "parquet_key": key,
    }


async def _save(
    ctx: JobContext,
    run_id: str,
    *,
    leaderboard: list[dict[str, Any]],
    results: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    model_blob_id: str | None = None,
    task: str | None = None,
    metric: str | None = None,
    finished: bool = False,
) -> None:
    values: dict[str, Any] = {"leaderboard": leaderboard}
    if finished:
        values.update(
            results=results,
            report=report,
            model_blob_id=model_blob_id,
            task=task,
            metric=metric,
            finished_at=ctx.clock.now(),
        )
    await _update(ctx, run_id, values)


async def _update(ctx: JobContext, run_id: str, values: dict[str, Any]) -> None:
    # Fenced like the job's own writes: a run whose claim was lost changes nothing.
    current = exists().where(
        Job.id == ctx.job_id, Job.attempt == ctx.attempt, Job.status == RUNNING
    )
    async with ctx.session() as session:
        await session.execute(
            update(AutomlRun)
            .where(AutomlRun.id == run_id, AutomlRun.org_id == ctx.org_id, current)
            .values(**values)
        )
        await session.commit()
