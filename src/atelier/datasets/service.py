"""Datasets: upload (a new dataset or a new version of one), read, download, delete.

An upload is checked whole before anything is kept: the body is spooled to a temporary file
(bounded by the upload limit), detected, parsed, limited and profiled off the event loop, and
only then are the file as sent and its canonical Parquet copy stored, with the rows, in one
unit of work. Bad input is a 4xx problem and leaves nothing behind (P5, P10).

pyarrow and polars are imported where a file is read, not with this module: processes that
never read a table (the CLI, most workers) do not load them (nor start their thread pools).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.audit import service as audit
from atelier.core.blobs import BlobStore, file_chunks, org_key
from atelier.core.clock import Clock
from atelier.core.context import RequestInfo
from atelier.core.db import transaction
from atelier.core.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from atelier.core.ids import new_id
from atelier.core.pagination import Page, PageRequest, paginate
from atelier.core.principal import Principal
from atelier.core.tenancy import get_owned, org_select
from atelier.core.uploads import Upload
from atelier.datasets.models import Dataset, DatasetVersion
from atelier.identity import orgs
from atelier.settings import Settings
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob

ORIGINAL, PARQUET = "dataset-file", "dataset-parquet"
PARQUET_TYPE = "application/vnd.apache.parquet"
CONTENT_TYPES = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/json",
    "jsonl": "application/jsonl",
    "parquet": PARQUET_TYPE,
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
DOWNLOAD_LINK_LIFETIME = timedelta(minutes=10)
MAX_NAME = 200


@dataclass(frozen=True)
class _Ingested:
    source: Path  # the file as sent, spooled
    parsed: Any  # formats.Parsed
    profile: dict[str, Any]
    schema: list[dict[str, str]]
    parquet: Path


# ---- uploading -------------------------------------------------------------------------------


async def create_dataset(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    upload: Upload,
    *,
    name: str | None,
    description: str | None,
    settings: Settings,
    clock: Clock,
    info: RequestInfo,
) -> DatasetVersion:
    """A new dataset from its first file (version 1). `name` defaults to the file's name."""
    principal.require_role("member")
    name = clean_name(name or Path(upload.filename).stem or "dataset")
    description = clean_description(description)
    await _refuse_taken_name(session, principal.org_id, name)
    async with _ingested(upload, settings) as ingested:
        try:
            async with transaction(session):
                now = clock.now()
                dataset = Dataset(
                    org_id=principal.org_id,
                    name=name,
                    description=description,
                    latest_version=1,
                    created_by=principal.actor_id,
                    created_at=now,
                    updated_at=now,
                )
                session.add(dataset)
                await session.flush()  # a name taken meanwhile fails here, before any upload
                version = await _store_version(
                    session, store, principal, dataset, 1, None, upload, ingested, clock
                )
                await audit.record(
                    session,
                    "dataset.created",
                    info=info,
                    principal=principal,
                    target=("dataset", dataset.id),
                    details={"name": name, "rows": version.rows, "columns": version.columns},
                )
        except IntegrityError:
            raise _name_taken(name) from None
    return version


async def add_version(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    dataset_id: str,
    upload: Upload,
    *,
    settings: Settings,
    clock: Clock,
    info: RequestInfo,
) -> DatasetVersion:
    """Version n + 1 of a dataset, with its schema's differences from version n."""
    principal.require_role("member")
    await get_dataset(session, principal, dataset_id)  # 404 before reading the body
    async with _ingested(upload, settings) as ingested, transaction(session):
        # Taking the next number is an atomic increment: concurrent uploads get n+1 and n+2.
        number = await session.scalar(
            update(Dataset)
            .where(Dataset.id == dataset_id, Dataset.org_id == principal.org_id)
            .values(latest_version=Dataset.latest_version + 1, updated_at=clock.now())
            .returning(Dataset.latest_version)
            .execution_options(synchronize_session=False)
        )
        if number is None:  # deleted while the file was arriving
            raise NotFound(f"No dataset {dataset_id}")
        dataset = await get_dataset(session, principal, dataset_id)
        previous = await session.scalar(
            select(DatasetVersion.schema)
            .where(DatasetVersion.dataset_id == dataset_id, DatasetVersion.number < number)
            .order_by(DatasetVersion.number.desc())
            .limit(1)
        )
        diff = _schema_diff(previous, ingested.schema) if previous is not None else None
        version = await _store_version(
            session, store, principal, dataset, number, diff, upload, ingested, clock
        )
        await audit.record(
            session,
            "dataset.version_added",
            info=info,
            principal=principal,
            target=("dataset", dataset_id),
            details={"version": number, "rows": version.rows, "columns": version.columns},
        )
    return version


async def _store_version(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    dataset: Dataset,
    number: int,
    diff: dict[str, Any] | None,
    upload: Upload,
    ingested: _Ingested,
    clock: Clock,
) -> DatasetVersion:
    """Both files into the store, then the version row; inside the caller's unit of work, so
    a failure anywhere deletes the objects already written."""
    plan = await orgs.plan_of(session, principal.org_id)
    parsed = ingested.parsed
    folder = ("datasets", dataset.id, f"v{number}")
    original = await storage.save_upload(
        session,
        store,
        org_id=principal.org_id,
        plan=plan,
        key=org_key(principal.org_id, *folder, new_id("file")),
        chunks=file_chunks(ingested.source),
        content_type=CONTENT_TYPES[parsed.format],
        filename=upload.filename,
        max_bytes=upload.max_bytes,
        clock=clock,
        purpose=ORIGINAL,
    )
    parquet = await storage.save_upload(
        session,
        store,
        org_id=principal.org_id,
        plan=plan,
        key=org_key(principal.org_id, *folder, "table.parquet"),
        chunks=file_chunks(ingested.parquet),
        content_type=PARQUET_TYPE,
        filename=f"{Path(upload.filename).stem or dataset.name}.parquet",
        max_bytes=ingested.parquet.stat().st_size,
        clock=clock,
        purpose=PARQUET,
    )
    version = DatasetVersion(
        dataset_id=dataset.id,
        org_id=principal.org_id,
        number=number,
        filename=upload.filename,
        format=parsed.format,
        format_details=parsed.details,
        original_blob_id=original.id,
        parquet_blob_id=parquet.id,
        size_bytes=original.size,
        rows=parsed.table.num_rows,
        columns=parsed.table.num_columns,
        schema=ingested.schema,
        profile=ingested.profile,
        schema_diff=diff,
        created_by=principal.actor_id,
        created_at=clock.now(),
    )
    session.add(version)
    await session.flush()
    return version


@asynccontextmanager
async def _ingested(upload: Upload, settings: Settings) -> AsyncIterator[_Ingested]:
    """Spool the upload, then detect, parse, check and profile it, and write its Parquet copy
    (in a thread: this is CPU work); the temporary files go when the block ends."""
    spool_root = settings.data_dir / "tmp"
    spool_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=spool_root))
    try:
        source = folder / "original"
        size = 0
        with source.open("wb") as out:
            async for chunk in upload.chunks:
                size += len(chunk)
                if size > upload.max_bytes:  # the upload helpers stop earlier; a safety net
                    raise PayloadTooLarge(f"The file is larger than {upload.max_bytes} bytes")
                await asyncio.to_thread(out.write, chunk)
        yield await asyncio.to_thread(
            _ingest, source, folder / "table.parquet", settings, upload.filename
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _ingest(source: Path, parquet: Path, settings: Settings, filename: str) -> _Ingested:
    import pyarrow.parquet as pq

    from atelier.datasets import formats, profiling

    limits = formats.Limits(
        max_rows=settings.datasets.max_rows,
        max_columns=settings.datasets.max_columns,
        max_xlsx_uncompressed_bytes=settings.datasets.max_xlsx_uncompressed_bytes,
    )
    parsed = formats.read_table(source, limits, name=filename)
    profile = profiling.profile_table(
        parsed.table, sample_rows=settings.datasets.profile_sample_rows
    )
    pq.write_table(parsed.table, parquet, compression="zstd")
    return _Ingested(source, parsed, profile, profiling.schema_of(profile), parquet)


def _schema_diff(old: list[dict[str, str]], new: list[dict[str, str]]) -> dict[str, Any]:
    from atelier.datasets.profiling import schema_diff

    return schema_diff(old, new)


# ---- names ------------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def clean_name(name: str) -> str:
    """A dataset name as shown: printable, single-spaced, at most MAX_NAME characters."""
    printable = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    cleaned = _SPACES.sub(" ", printable).strip()
    if not cleaned:
        raise InvalidInput(
            "A dataset needs a name with at least one visible character",
            errors=[{"pointer": "/name", "detail": "empty after removing control characters"}],
        )
    if len(cleaned) > MAX_NAME:
        raise InvalidInput(
            f"A dataset name has at most {MAX_NAME} characters",
            errors=[{"pointer": "/name", "detail": f"{len(cleaned)} characters"}],
        )
    return cleaned


def clean_description(description: str | None) -> str | None:
    if description is None:
        return None
    text = "".join(c for c in description if c in "\n\t" or unicodedata.category(c)[0] != "C")
    text = text.strip()
    if len(text) > 2000:
        raise InvalidInput(
            "A description has at most 2000 characters",
            errors=[{"pointer": "/description", "detail": f"{len(text)} characters"}],
        )
    return text or None


async def _refuse_taken_name(session: AsyncSession, org_id: str, name: str) -> None:
    taken = await session.scalar(
        select(Dataset.id).where(Dataset.org_id == org_id, Dataset.name == name)
    )
    if taken is not None:
        raise _name_taken(name, dataset_id=taken)


def _name_taken(name: str, dataset_id: str | None = None) -> Conflict:
    hint = (
        f"; upload a new version with POST /api/v1/datasets/{dataset_id}/versions"
        if dataset_id
        else ""
    )
    extra = {"dataset_id": dataset_id} if dataset_id else {}
    return Conflict(f"A dataset named {name!r} already exists{hint}", **extra)


# ---- reading ----------------------------------------------------------------------------------


async def list_datasets(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> Page[Dataset]:
    """The organization's datasets, most recently changed first."""
    statement = org_select(Dataset, principal).order_by(
        Dataset.updated_at.desc(), Dataset.id.desc()
    )
    return await paginate(session, statement, page)


async def get_dataset(session: AsyncSession, principal: Principal, dataset_id: str) -> Dataset:
    return await get_owned(session, Dataset, principal, dataset_id, what="dataset")


async def list_versions(
    session: AsyncSession, principal: Principal, dataset_id: str
) -> list[DatasetVersion]:
    await get_dataset(session, principal, dataset_id)
    found = await session.scalars(
        org_select(DatasetVersion, principal)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.number.desc())
    )
    return list(found)


async def get_version(
    session: AsyncSession, principal: Principal, dataset_id: str, number: int
) -> DatasetVersion:
    version = await session.scalar(
        org_select(DatasetVersion, principal).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == number
        )
    )
    if version is None:
        raise NotFound(f"No version {number} of dataset {dataset_id}")
    return version


async def download_link(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    dataset_id: str,
    number: int,
    which: Literal["original", "parquet"],
) -> str:
    """A short-lived link to the file as sent, or to its Parquet copy."""
    version = await get_version(session, principal, dataset_id, number)
    blob_id = version.original_blob_id if which == "original" else version.parquet_blob_id
    blob = await session.get(StoredBlob, blob_id)
    if blob is None:  # a version's blobs go only with it
        raise NotFound(f"The {which} file of version {number} is gone")
    return await store.signed_url(
        blob.key, expires_in=DOWNLOAD_LINK_LIFETIME, filename=blob.filename
    )


# ---- deleting ---------------------------------------------------------------------------------


async def delete_dataset(
    session: AsyncSession,
    store: BlobStore,
    principal: Principal,
    dataset_id: str,
    *,
    info: RequestInfo,
) -> None:
    """The dataset, every version's rows, then their files once that is committed (storage
    released at once; a crash in between leaves orphans for the garbage collector)."""
    principal.require_role("member")
    async with transaction(session):
        dataset = await get_dataset(session, principal, dataset_id)
        versions = await list_versions(session, principal, dataset_id)
        blob_ids = [b for v in versions for b in (v.original_blob_id, v.parquet_blob_id)]
        await session.delete(dataset)
        await session.flush()  # versions go with it (cascade) before their blobs' rows
        for blob in await session.scalars(select(StoredBlob).where(StoredBlob.id.in_(blob_ids))):
            await storage.delete_blob(session, store, blob)
        await audit.record(
            session,
            "dataset.deleted",
            info=info,
            principal=principal,
            target=("dataset", dataset_id),
            details={"name": dataset.name, "versions": len(versions)},
        )
