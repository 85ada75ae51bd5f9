"""A finished AutoML run made directly from a model trained once per session: registering it
exercises the registry (read back through the allow-list, ONNX export, lineage, card) without
a search per test."""

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from atelier.automl import artifacts
from atelier.automl.engine import TrainConfig, train
from atelier.automl.jobs import results_of
from atelier.automl.report import build_report, render_html
from atelier.core.blobs import file_chunks, org_key
from atelier.core.clock import SystemClock
from atelier.core.ids import new_id
from atelier.identity import orgs
from atelier.storage import service as storage
from tests.automl.factories import make_run
from tests.automl.test_runs_api import homes_csv


@dataclass(frozen=True)
class Trained:
    archive: Path  # the run's model folder, zipped as the automl.train job stores it
    results: dict[str, Any]
    report: dict[str, Any]
    frame: pl.DataFrame
    model: Any


def train_homes(folder: Path, *, rows: int = 300) -> Trained:
    import io

    frame = pl.read_csv(io.BytesIO(homes_csv(rows)))
    result = train(frame, TrainConfig(target="sold_fast", budget_seconds=10, seed=0, max_trials=3))
    report = build_report(
        {"id": "run_test", "dataset_name": "Homes", "dataset_version": 1, "target": "sold_fast"},
        {"rows": frame.height, "columns": frame.width},
        result,
    )
    model_dir = folder / "model"
    artifacts.save(
        model_dir,
        result.model,
        target="sold_fast",
        metric=result.metric,
        report=report,
        report_html=render_html(report),
    )
    archive = folder / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(model_dir.iterdir()):
            zipped.write(path, path.name)
    return Trained(archive, results_of(result), report, frame, result.model)


async def finished_run(session, blobs, org_id: str, trained: Trained, **fields):
    """A succeeded run of `org_id` whose stored model is `trained`'s."""
    blob = await storage.save_upload(
        session,
        blobs,
        org_id=org_id,
        plan=await orgs.plan_of(session, org_id),
        key=org_key(org_id, "jobs", new_id("job"), "model.zip"),
        chunks=file_chunks(trained.archive),
        content_type="application/zip",
        filename="model.zip",
        max_bytes=trained.archive.stat().st_size,
        clock=SystemClock(),
        purpose="automl-model",
    )
    return await make_run(
        session,
        org_id,
        "ds_gone",
        task="binary",
        metric=trained.results.get("metric", "roc_auc"),
        results=trained.results,
        report=trained.report,
        model_blob_id=blob.id,
        **fields,
    )
