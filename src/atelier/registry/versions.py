"""New model versions: from a finished AutoML run, or from an uploaded ONNX or skops file.

A version is built whole before anything is kept: its folder (`registry.folders`) is prepared
in a temporary directory off the event loop (the run's model read back through the allow-list
and exported to ONNX, or the upload detected; an uploaded skops file is checked, loaded and
converted to ONNX in a child process, `registry.isolated`, never in the API process), and only
then are the zip and the row stored in one unit of work. A refused file leaves nothing behind
(P5, P10).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier import __version__
from atelier.audit import service as audit
from atelier.automl import service as automl
from atelier.core.blobs import BlobStore, download_to, file_chunks, org_key
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, InvalidInput, PayloadTooLarge
from atelier.core.ids import new_id
from atelier.core.principal import Principal
from atelier.core.uploads import Upload
from atelier.datasets.service import clean_description
from atelier.identity import orgs
from atelier.registry import cards, folders, formats, isolated, service
from atelier.registry.models import ModelVersion, RegisteredModel
from atelier.settings import Settings
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PURPOSE = "model-version"


@dataclass(frozen=True)
class _Prepared:
    """A version folder made ready in a temporary directory, before its number is known."""

    folder: Path
    format: str
    signature: dict[str, Any]
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    sha256: str
    onnx_export: bool = False
    onnx_note: str | None = None


# ---- new versions -----------------------------------------------------------------------------


async def register_run(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    run_id: str,
    *,
    description: str | None,
    settings: Settings,
    clock: Clock,
    info: RequestInfo,
) -> ModelVersion:
    """A new version of model `name` (created if needed) from a finished AutoML run's model."""
    principal.require_role("member")
    name = check_name(name)
    description = clean_description(description)
    run = await automl.get_run(session, principal, run_id)
    blob = await session.get(StoredBlob, run.model_blob_id) if run.model_blob_id else None
    if blob is None or run.results is None:
        raise Conflict(f"AutoML run {run_id} has no model: it has not finished, or it failed")
    lineage = _run_lineage(run, principal, clock)
    async with service.workspace(settings) as work:
        archive = await download_to(store, blob.key, work / "run-model.zip")
        prepared = await asyncio.to_thread(
            _prepare_run_model, archive, work / "version", lineage, settings
        )
        return await _store_version(
            session,
            store,
            principal,
            name,
            prepared,
            source="automl",
            run=run,
            description=description,
            clock=clock,
            info=info,
        )


async def upload_version(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    upload: Upload,
    *,
    description: str | None,
    settings: Settings,
    clock: Clock,
    info: RequestInfo,
) -> ModelVersion:
    """A new version of model `name` (created if needed) from an ONNX or skops file.

    Pickle-based files are refused from their first bytes; a skops file holding anything
    outside the allow-list is refused from its schema; neither is ever deserialized. A skops
    file that passes is loaded in a child process, and exported to ONNX where it converts."""
    principal.require_role("member")
    name = check_name(name)
    description = clean_description(description)
    async with service.workspace(settings) as work:
        source = work / "upload"
        digest = hashlib.sha256()
        size = 0
        with source.open("wb") as out:
            async for chunk in upload.chunks:
                size += len(chunk)
                if size > upload.max_bytes:
                    raise PayloadTooLarge(f"The file is larger than {upload.max_bytes} bytes")
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        lineage = {
            "source": "upload",
            "filename": upload.filename,
            "sha256": digest.hexdigest(),
            "size_bytes": size,
            **_stamp(principal, clock),
        }
        prepared = await _prepare_upload(
            source, work / "version", lineage, digest.hexdigest(), settings
        )
        return await _store_version(
            session,
            store,
            principal,
            name,
            prepared,
            source="upload",
            run=None,
            description=description,
            clock=clock,
            info=info,
        )


def _prepare_run_model(
    archive: Path, folder: Path, lineage: dict[str, Any], settings: Settings
) -> _Prepared:
    """The run's model folder, read back through the allow-list, with its ONNX export."""
    from atelier.automl import artifacts

    folders.unzip_folder(archive, folder, max_bytes=settings.http.max_upload_bytes * 4)
    model, signature = artifacts.load(folder)
    exported, note = False, None
    if settings.registry.onnx_export:
        from atelier.registry import onnx_export

        export = onnx_export.export(model)
        if export.onnx is not None:
            (folder / folders.ONNX_FILE).write_bytes(export.onnx)
            exported = True
        note = export.reason
    else:
        note = "ONNX export is turned off (ATELIER_REGISTRY__ONNX_EXPORT)"
    return _Prepared(
        folder=folder,
        format=formats.ATELIER,
        signature=signature,
        lineage=lineage,
        metrics=lineage["metrics"],
        sha256=_sha256(folder / folders.SKOPS_FILE),
        onnx_export=exported,
        onnx_note=note,
    )


async def _prepare_upload(
    source: Path, folder: Path, lineage: dict[str, Any], digest: str, settings: Settings
) -> _Prepared:
    """The upload's folder. A skops file is checked, loaded and converted to ONNX in a child
    process (`registry.isolated`); the API process only tells the formats apart."""
    detected, signature = await asyncio.to_thread(_place_upload, source, folder)
    model_format, exported, note = formats.ONNX, False, None
    if detected.format != formats.ONNX:
        read = await isolated.prepare_skops(
            source, folder, onnx_export=settings.registry.onnx_export
        )
        model_format, signature = read["format"], read["signature"]
        exported, note = read["onnx_export"], read["onnx_note"]
        await asyncio.to_thread(shutil.move, source, folder / folders.SKOPS_FILE)
    return _Prepared(
        folder=folder,
        format=model_format,
        signature=signature,
        lineage={**lineage, "format": model_format, **detected.details},
        metrics={},
        sha256=digest,
        onnx_export=exported,
        onnx_note=note,
    )


def _place_upload(source: Path, folder: Path) -> tuple[formats.Detected, dict[str, Any]]:
    """The upload's format; an ONNX graph is checked and moved into the folder at once."""
    detected = formats.detect(source)
    folder.mkdir(parents=True)
    if detected.format != formats.ONNX:
        return detected, {}
    from atelier.registry import onnx as onnx_models

    signature = onnx_models.inspect(source.read_bytes())
    shutil.move(source, folder / folders.ONNX_FILE)
    return detected, signature


async def _store_version(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    prepared: _Prepared,
    *,
    source: str,
    run: Any,
    description: str | None,
    clock: Clock,
    info: RequestInfo,
) -> ModelVersion:
    """Take the next number, finish the folder with it, store its zip and the row: one unit
    of work, so a failure anywhere deletes the object already written."""
    plan = await orgs.plan_of(session, principal.org_id)
    async with transaction(session):
        model = await _model_for_update(session, principal, name, clock)
        number = await session.scalar(
            update(RegisteredModel)
            .where(RegisteredModel.id == model.id)
            .values(latest_version=RegisteredModel.latest_version + 1, updated_at=clock.now())
            .returning(RegisteredModel.latest_version)
            .execution_options(synchronize_session=False)
        )
        archive = await asyncio.to_thread(
            _finish_folder, prepared, name=name, number=number, description=description
        )
        blob = await storage.save_upload(
            session,
            store,
            org_id=principal.org_id,
            plan=plan,
            key=org_key(principal.org_id, "models", model.id, f"v{number}", new_id("zip")),
            chunks=file_chunks(archive),
            content_type="application/zip",
            filename=f"{name}-v{number}.zip",
            max_bytes=archive.stat().st_size,
            clock=clock,
            purpose=PURPOSE,
        )
        version = ModelVersion(
            model_id=model.id,
            org_id=principal.org_id,
            number=number,
            stage="none",
            source=source,
            format=prepared.format,
            description=description,
            run_id=run.id if run is not None else None,
            dataset_id=run.dataset_id if run is not None else None,
            dataset_version=run.dataset_version if run is not None else None,
            task=prepared.signature.get("task"),
            target=prepared.signature.get("target"),
            metrics=prepared.metrics,
            signature=prepared.signature,
            lineage=prepared.lineage,
            onnx_export=prepared.onnx_export,
            onnx_note=prepared.onnx_note,
            blob_id=blob.id,
            size_bytes=blob.size,
            sha256=prepared.sha256,
            created_by=principal.actor_id,
            created_at=clock.now(),
        )
        session.add(version)
        await session.flush()
        await audit.record(
            session,
            "model.version_created",
            info=info,
            principal=principal,
            target=("model", model.id),
            details={"name": name, "version": number, "source": source, "format": version.format}
            | ({"run_id": run.id} if run is not None else {}),
        )
    return version


def _finish_folder(prepared: _Prepared, *, name: str, number: int, description: str | None) -> Path:
    folder = prepared.folder
    folders.write_json(
        folder / folders.VERSION_FILE, {"format": prepared.format, "name": name, "version": number}
    )
    folders.write_json(folder / folders.SIGNATURE_FILE, prepared.signature)
    folders.write_json(folder / folders.LINEAGE_FILE, prepared.lineage)
    (folder / folders.CARD_FILE).write_text(
        cards.model_card(
            name=name,
            number=number,
            format=prepared.format,
            signature=prepared.signature,
            lineage=prepared.lineage,
            description=description,
            onnx_note=prepared.onnx_note,
        )
    )
    return folders.zip_folder(folder, folder.parent / f"v{number}.zip")


async def _model_for_update(
    session: AsyncSession, principal: Principal, name: str, clock: Clock
) -> RegisteredModel:
    """The model named `name`, created on its first version (a creation raced by another
    request finds the winner's row)."""
    found = await service.find_model(session, principal, name)
    if found is not None:
        return found
    now = clock.now()
    try:
        async with session.begin_nested():
            model = RegisteredModel(
                org_id=principal.org_id,
                name=name,
                latest_version=0,
                created_by=principal.actor_id,
                created_at=now,
                updated_at=now,
            )
            session.add(model)
    except IntegrityError:
        found = await service.find_model(session, principal, name)
        if found is None:
            raise
        return found
    return model


def _run_lineage(run: Any, principal: Principal, clock: Clock) -> dict[str, Any]:
    results = run.results or {}
    report = run.report or {}
    metrics = {
        "metric": run.metric,
        "cv_score": results.get("cv_score"),
        "holdout": results.get("holdout_metrics") or {},
    }
    return {
        "source": "automl",
        "run_id": run.id,
        "job_id": run.job_id,
        "dataset": {
            "id": run.dataset_id,
            "name": run.dataset_name,
            "version": run.dataset_version,
            "version_id": run.dataset_version_id,
            "rows": (report.get("data") or {}).get("rows"),
            "columns": (report.get("data") or {}).get("columns"),
        },
        "parameters": {
            "target": run.target,
            "task": run.task,
            "metric": run.metric,
            "budget_seconds": run.budget_seconds,
            "seed": run.seed,
            "exclude": run.exclude,
            "ensemble": report.get("ensemble") or [],
            "preprocessing": results.get("preprocessing") or {},
        },
        "metrics": metrics,
        "dropped_columns": results.get("dropped_columns") or [],
        "library_versions": results.get("library_versions") or {},
        **_stamp(principal, clock),
    }


def _stamp(principal: Principal, clock: Clock) -> dict[str, Any]:
    return {
        "atelier_version": __version__,
        "created_at": clock.now().isoformat(),
        "created_by": principal.actor_id,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(
            "A model name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            errors=[{"pointer": "/name", "detail": "not a valid model name"}],
        )
    return name
