"""The model registry: models and versions to read, stages, downloads, exports, deletion.

New versions (from AutoML runs or uploaded files) are made in `registry.versions`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.blobs import BlobStore, download_to
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, InvalidInput, NotFound
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal
from atelier.core.tenancy import org_select
from atelier.registry import cards, folders
from atelier.registry.models import STAGES, ModelVersion, RegisteredModel
from atelier.settings import Settings
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

DOWNLOAD_LINK_LIFETIME = timedelta(minutes=10)


# ---- stages -----------------------------------------------------------------------------------


async def set_stage(
    session: AsyncSession,
    principal: Principal,
    name: str,
    number: int,
    stage: str,
    *,
    clock: Clock,
    info: RequestInfo,
) -> ModelVersion:
    """Move a version to `stage`. Promoting to production archives the current production
    version, in the same unit of work; the unique index settles a race between two promotions."""
    principal.require_role("member")
    if stage not in STAGES:
        raise InvalidInput(f"A stage is one of {', '.join(STAGES)}")
    try:
        async with transaction(session):
            version = await get_version(session, principal, name, number)
            previous_stage = version.stage
            archived: list[int] = []
            if stage == "production" and previous_stage != "production":
                current = await session.scalars(
                    select(ModelVersion).where(
                        ModelVersion.model_id == version.model_id,
                        ModelVersion.stage == "production",
                    )
                )
                for other in current:
                    other.stage, other.stage_changed_at = "archived", clock.now()
                    other.stage_changed_by = principal.actor_id
                    archived.append(other.number)
                await session.flush()  # the old production row leaves the unique index first
            version.stage = stage
            version.stage_changed_at = clock.now()
            version.stage_changed_by = principal.actor_id
            await session.flush()
            await audit.record(
                session,
                "model.stage_changed",
                info=info,
                principal=principal,
                target=("model", version.model_id),
                details={
                    "name": name,
                    "version": number,
                    "from": previous_stage,
                    "to": stage,
                    "archived": archived,
                },
            )
    except IntegrityError:
        raise Conflict(
            f"Another version of {name} was promoted to production at the same time; try again"
        ) from None
    return version


# ---- reading ----------------------------------------------------------------------------------


async def list_models(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> Page[RegisteredModel]:
    """The organization's models, most recently changed first."""
    statement = org_select(RegisteredModel, principal).order_by(
        RegisteredModel.updated_at.desc(), RegisteredModel.id.desc()
    )
    return await paginate(session, statement, page)


async def production_versions(
    session: AsyncSession, principal: Principal, model_ids: list[str]
) -> dict[str, int]:
    """{model id: its production version's number} for those that have one."""
    if not model_ids:
        return {}
    rows = await session.execute(
        select(ModelVersion.model_id, ModelVersion.number).where(
            ModelVersion.org_id == principal.org_id,
            ModelVersion.model_id.in_(model_ids),
            ModelVersion.stage == "production",
        )
    )
    return dict(rows.tuples().all())


async def find_model(
    session: AsyncSession, principal: Principal, name: str
) -> RegisteredModel | None:
    return await session.scalar(
        org_select(RegisteredModel, principal).where(RegisteredModel.name == name)
    )


async def get_model(session: AsyncSession, principal: Principal, name: str) -> RegisteredModel:
    model = await find_model(session, principal, name)
    if model is None:
        raise NotFound(f"No model named {name!r}")
    return model


async def list_versions(
    session: AsyncSession, principal: Principal, name: str, page: PageRequest
) -> Page[ModelVersion]:
    """A model's versions, newest first."""
    model = await get_model(session, principal, name)
    statement = (
        org_select(ModelVersion, principal)
        .where(ModelVersion.model_id == model.id)
        .order_by(ModelVersion.number.desc())
    )
    return await paginate(session, statement, page)


async def get_version(
    session: AsyncSession, principal: Principal, name: str, number: int
) -> ModelVersion:
    model = await get_model(session, principal, name)
    version = await session.scalar(
        org_select(ModelVersion, principal).where(
            ModelVersion.model_id == model.id, ModelVersion.number == number
        )
    )
    if version is None:
        raise NotFound(f"No version {number} of model {name!r}")
    return version


async def versions_of_run(
    session: AsyncSession, principal: Principal, run_id: str
) -> list[tuple[str, ModelVersion]]:
    """(model name, version) registered from an AutoML run."""
    rows = await session.execute(
        select(RegisteredModel.name, ModelVersion)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.org_id == principal.org_id, ModelVersion.run_id == run_id)
        .order_by(ModelVersion.created_at)
    )
    return list(rows.tuples().all())


def card_of(name: str, version: ModelVersion) -> str:
    """The version's model card (the same text as MODEL_CARD.md in its zip)."""
    return cards.model_card(
        name=name,
        number=version.number,
        format=version.format,
        signature=version.signature,
        lineage=version.lineage,
        description=version.description,
        onnx_note=version.onnx_note,
    )


async def download_link(
    session: AsyncSession, store: BlobStore, principal: Principal, name: str, number: int
) -> str:
    """A short-lived link to the version's zip."""
    blob = await _blob_of(session, principal, name, number)
    return await store.signed_url(
        blob.key, expires_in=DOWNLOAD_LINK_LIFETIME, filename=blob.filename
    )


async def _blob_of(
    session: AsyncSession, principal: Principal, name: str, number: int
) -> StoredBlob:
    version = await get_version(session, principal, name, number)
    blob = await session.get(StoredBlob, version.blob_id)
    if blob is None:  # a version's blob goes only with it
        raise NotFound(f"The files of version {number} of {name!r} are gone")
    return blob


@asynccontextmanager
async def opened(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    number: int,
    *,
    settings: Settings,
) -> AsyncIterator[Path]:
    """The version's folder, unpacked into a temporary directory for the block's length."""
    blob = await _blob_of(session, principal, name, number)
    async with workspace(settings) as work:
        archive = await download_to(store, blob.key, work / "version.zip")
        folder = await asyncio.to_thread(
            folders.unzip_folder, archive, work / "version", max_bytes=blob.size * 200
        )
        yield folder


async def export_mlflow(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    number: int,
    *,
    settings: Settings,
    into: Path,
) -> Path:
    """The version as an MLflow pyfunc model (no pickle: it loads through
    `atelier.registry.pyfunc`), zipped into `into`; returns the zip's path."""
    from atelier.registry import mlflow_export

    async with opened(session, store, principal, name, number, settings=settings) as folder:
        exported = await asyncio.to_thread(mlflow_export.export_pyfunc, folder, into / "model")
    archive = await asyncio.to_thread(
        shutil.make_archive, str(into / f"{name}-v{number}-mlflow"), "zip", exported
    )
    return Path(archive)


# ---- deleting ---------------------------------------------------------------------------------


async def delete_version(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    name: str,
    number: int,
    *,
    info: RequestInfo,
) -> None:
    """A version and its files (storage released at once). The production version cannot be
    deleted: promote another one, or archive it, first."""
    principal.require_role("member")
    async with transaction(session):
        version = await get_version(session, principal, name, number)
        if version.stage == "production":
            raise Conflict(
                f"Version {number} of {name!r} is in production: archive it or promote another "
                "version first"
            )
        blob = await session.get(StoredBlob, version.blob_id)
        await session.delete(version)
        await session.flush()
        if blob is not None:
            await storage.delete_blob(session, store, blob)
        await audit.record(
            session,
            "model.version_deleted",
            info=info,
            principal=principal,
            target=("model", version.model_id),
            details={"name": name, "version": number},
        )


@asynccontextmanager
async def workspace(settings: Settings) -> AsyncIterator[Path]:
    """A temporary folder under the data folder, removed when the block ends."""
    root = settings.data_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="model-", dir=root))
    try:
        yield folder
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
