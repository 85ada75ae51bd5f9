"""Saving, finding and deleting stored blobs, and how much storage each organization uses."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.blobs import BlobStore, BlobTooLarge, validate_key
from atelier.core.clock import Clock
from atelier.core.db import on_commit, on_rollback, transaction
from atelier.core.errors import Conflict, QuotaExceeded
from atelier.core.principal import Principal
from atelier.core.tenancy import get_owned
from atelier.plans import service as plans_service
from atelier.storage.models import StoredBlob

if TYPE_CHECKING:
    from atelier.plans.models import Plan

STORAGE_GAUGE = "storage_bytes"


async def save_upload(
    session: AsyncSession,
    store: BlobStore,
    *,
    org_id: str,
    plan: Plan,
    key: str,
    chunks: AsyncIterable[bytes],
    content_type: str,
    filename: str,
    max_bytes: int,
    clock: Clock,
    purpose: str = "upload",
) -> StoredBlob:
    """Stream `chunks` into the store under `key`, then record the blob; returns the row.

    Refused with QuotaExceeded (402) when the organization is already at its plan's storage
    limit, or as soon as the stream passes what is left of it; with PayloadTooLarge (413) as
    soon as it passes `max_bytes`. Either way nothing is kept.

    Blob first, row second (P5). Called outside a transaction, the stream is received with no
    transaction open, so a slow client holds neither SQLite's write lock nor a pooled
    connection, and the row is written in a short unit of work of its own. Called inside the
    caller's `transaction(session)`, it joins it, and the object is deleted if that
    transaction rolls back for any reason, later ones included.
    """
    if not key.startswith(f"orgs/{org_id}/"):
        raise ValueError(f"{key!r} is outside the namespace of {org_id}")
    validate_key(key)
    # A unit of work just to read: outside a caller's transaction it also ends the snapshot
    # and returns the connection to the pool before the (long) stream.
    async with transaction(session):
        used = await storage_used(session, org_id)
        if await session.scalar(select(StoredBlob.id).where(StoredBlob.key == key)):
            raise Conflict(f"A blob is already stored under {key}")
    plans_service.check_gauge(plan, STORAGE_GAUGE, current=used, adding=1)
    limit = plan.max_storage_bytes
    bound = max_bytes if limit is None else min(max_bytes, limit - used)
    try:
        info = await store.put(key, chunks, content_type=content_type, max_bytes=bound)
    except BlobTooLarge:
        if bound < max_bytes:
            raise _over_quota(plan, used) from None
        raise

    cleanup_registered = False
    try:
        async with transaction(session):
            on_rollback(session, store.delete, key)
            cleanup_registered = True
            # Uploads that finished meanwhile count too (exactly so on SQLite, whose writers
            # queue; on PostgreSQL concurrent uploads may pass the limit by one file each).
            used = await storage_used(session, org_id)
            if limit is not None and used + info.size > limit:
                raise _over_quota(plan, used)
            blob = StoredBlob(
                org_id=org_id,
                key=key,
                purpose=purpose,
                size=info.size,
                sha256=info.sha256,
                content_type=info.content_type,
                filename=filename,
                created_at=clock.now(),
            )
            session.add(blob)
            await session.flush()
    except BaseException:
        if not cleanup_registered:  # the unit of work never began: nobody else will delete it
            await store.delete(key)
        raise
    return blob


def _over_quota(plan: Plan, used: int, *, what: str = "this file") -> QuotaExceeded:
    return QuotaExceeded(
        f"The {plan.name} plan allows {plan.max_storage_bytes} storage bytes; {used} in use, "
        f"and {what} does not fit in the rest",
        meter=STORAGE_GAUGE,
        limit=plan.max_storage_bytes,
        used=used,
    )


async def check_room(
    session: AsyncSession, org_id: str, plan: Plan, *, needed: int, what: str
) -> None:
    """Refuse (402, meter `storage_bytes`) unless `needed` more bytes fit under the plan's
    storage limit: for work that stores a file at its end (`what`), refused before it starts
    rather than after it spent its time. A floor, not a reservation: the save checks again."""
    if plan.max_storage_bytes is None:
        return
    used = await storage_used(session, org_id)
    if used + needed > plan.max_storage_bytes:
        raise _over_quota(plan, used, what=f"{what} (at least {needed} bytes)")


async def get_blob(session: AsyncSession, principal: Principal, blob_id: str) -> StoredBlob:
    """The blob in the principal's organization, or NotFound (another organization's too)."""
    return await get_owned(session, StoredBlob, principal, blob_id, what="file")


async def delete_blob(session: AsyncSession, store: BlobStore, blob: StoredBlob) -> None:
    """Forget the blob, then delete its object once that is committed: a crash in between
    leaves an orphan object for the garbage collector, never a row without its object."""
    async with transaction(session):
        await session.delete(blob)
        await session.flush()
        on_commit(session, store.delete, blob.key)


async def storage_used(session: AsyncSession, org_id: str) -> int:
    """Bytes the organization's stored blobs take."""
    total = await session.scalar(
        select(func.coalesce(func.sum(StoredBlob.size), 0)).where(StoredBlob.org_id == org_id)
    )
    return int(total or 0)


async def usage_by_org(session: AsyncSession, *, limit: int = 100) -> list[tuple[str, int]]:
    """`(org_id, bytes)` of the organizations using the most storage, largest first."""
    total = func.sum(StoredBlob.size)
    rows = await session.execute(
        select(StoredBlob.org_id, total)
        .group_by(StoredBlob.org_id)
        .order_by(total.desc(), StoredBlob.org_id)
        .limit(limit)
    )
    return [(org_id, int(size)) for org_id, size in rows.all()]
