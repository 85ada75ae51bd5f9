"""Rows and objects kept in step (P5): the orphan garbage collector and the integrity report.

Both walk the store's organization namespaces (`orgs/`) and the `stored_blobs` table in pages,
so neither holds a whole listing in memory. Objects outside `orgs/` are not Atelier's to judge.

A process killed mid-upload also leaves what no row or listing shows: the store's unfinished
writes (`BlobStore.list_partials`) and spool folders (`<data dir>/tmp/upload-*`). Both are
written to as the bytes come, so one untouched for the grace period is dead: the collector
removes it, and the report counts them all (only the dead ones make it fail).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from atelier.core.blobs import BlobInfo, BlobStore
from atelier.core.clock import Clock
from atelier.core.db import on_commit, transaction
from atelier.storage.models import OrphanSighting, StoredBlob

ORG_PREFIX = "orgs/"
PAGE_SIZE = 500
DEFAULT_GRACE = timedelta(hours=24)
SPOOL_PREFIX = "upload-"  # the spool folders uploads are parsed in, under `<data dir>/tmp`

T = TypeVar("T")


async def find_orphans(
    session: AsyncSession,
    store: BlobStore,
    *,
    prefix: str = ORG_PREFIX,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[BlobInfo]:
    """Objects under `prefix` that no row points at, as the listing goes."""
    async for page in _pages(store.list_keys(prefix), page_size):
        known = await _keys_with_rows(session, [info.key for info in page])
        for info in page:
            if info.key not in known:
                yield info


@dataclass(frozen=True)
class GarbageReport:
    orphans: int  # objects without a row seen in this pass
    deleted: int  # of those, the ones that had been orphans for the whole grace period
    partials_removed: int = 0  # unfinished writes untouched for the grace period
    spool_folders_removed: int = 0  # upload spool folders untouched for the grace period


async def collect_garbage(
    session: AsyncSession,
    store: BlobStore,
    *,
    clock: Clock,
    grace: timedelta = DEFAULT_GRACE,
    page_size: int = PAGE_SIZE,
    spool_root: Path | None = None,
) -> GarbageReport:
    """Delete objects that have had no row for at least `grace`, and the unfinished writes
    and spool folders under `spool_root` nothing has written to for as long.

    A pass records when it first sees each orphan and deletes those a pass saw at least
    `grace` earlier; run it periodically (the scheduler). An object that gained its row
    meanwhile is kept, and its sighting forgotten.
    """
    now = clock.now()
    cutoff = now - grace
    orphans = deleted = 0
    orphans_found = find_orphans(session, store, page_size=page_size)
    async for page in _pages(orphans_found, page_size):
        keys = [info.key for info in page]
        orphans += len(keys)
        async with transaction(session):
            seen = dict(
                (
                    await session.execute(
                        select(OrphanSighting.key, OrphanSighting.first_seen_at).where(
                            OrphanSighting.key.in_(keys)
                        )
                    )
                ).all()
            )
            session.add_all(OrphanSighting(key=k, first_seen_at=now) for k in keys if k not in seen)
            # Checked again inside the unit of work: an upload may have committed its row
            # since the listing.
            due = [k for k, first in seen.items() if first <= cutoff]
            due = [k for k in due if k not in await _keys_with_rows(session, due)]
            if due:
                await session.execute(delete(OrphanSighting).where(OrphanSighting.key.in_(due)))
            for key in due:
                on_commit(session, store.delete, key)
        deleted += len(due)
    # Any older sighting left was not an orphan in this pass: its object got a row or is gone.
    async with transaction(session):
        await session.execute(delete(OrphanSighting).where(OrphanSighting.first_seen_at <= cutoff))
    partials_removed = 0
    async for partial in store.list_partials():
        if _as_utc(partial.last_write) <= cutoff:
            await store.discard_partial(partial)
            partials_removed += 1
    spool_removed = 0
    for folder in await asyncio.to_thread(spool_folders, spool_root):
        if folder.last_write <= cutoff:
            await asyncio.to_thread(shutil.rmtree, folder.path, True)
            spool_removed += 1
    return GarbageReport(
        orphans=orphans,
        deleted=deleted,
        partials_removed=partials_removed,
        spool_folders_removed=spool_removed,
    )


# ---- what a crash mid-upload leaves ----------------------------------------------------------


@dataclass(frozen=True)
class SpoolFolder:
    path: Path
    size: int
    last_write: datetime  # the newest mtime of the folder and its files


def spool_root(data_dir: Path) -> Path:
    """Where uploads are spooled while they are parsed (the datasets service's `tmp`)."""
    return data_dir / "tmp"


def spool_folders(spool_root: Path | None) -> list[SpoolFolder]:
    """The upload spool folders under `spool_root` (blocking: call it in a thread)."""
    if spool_root is None or not spool_root.is_dir():
        return []
    return [
        folder
        for path in sorted(spool_root.glob(f"{SPOOL_PREFIX}*"))
        if path.is_dir() and (folder := _spool_folder(path)) is not None
    ]


def _spool_folder(path: Path) -> SpoolFolder | None:
    try:
        newest, size = path.stat().st_mtime, 0
        for parent, _dirs, files in os.walk(path):
            for name in files:
                stat = os.stat(os.path.join(parent, name))
                newest, size = max(newest, stat.st_mtime), size + stat.st_size
    except FileNotFoundError:  # its upload finished meanwhile
        return None
    return SpoolFolder(path, size, datetime.fromtimestamp(newest, UTC))


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Finding:
    """How many of one kind of mismatch, and a few keys to look at."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, key: str, *, keep: int) -> None:
        self.count += 1
        if len(self.examples) < keep:
            self.examples.append(key)


@dataclass
class Leftovers(Finding):
    """What a crash mid-upload left: how many, their bytes, and how many are older than the
    grace period (dead: the collector removes them)."""

    bytes: int = 0
    stale: int = 0

    def add_leftover(self, name: str, size: int, *, stale: bool, keep: int) -> None:
        self.add(name, keep=keep)
        self.bytes += size
        self.stale += stale


@dataclass
class IntegrityReport:
    rows_checked: int = 0
    objects_checked: int = 0
    rows_without_objects: Finding = field(default_factory=Finding)
    objects_without_rows: Finding = field(default_factory=Finding)
    size_mismatches: Finding = field(default_factory=Finding)
    partial_writes: Leftovers = field(default_factory=Leftovers)
    spool_folders: Leftovers = field(default_factory=Leftovers)

    @property
    def ok(self) -> bool:
        """No mismatch, and no leftover the collector should already have removed (younger
        ones may be uploads in flight)."""
        return not (
            self.rows_without_objects.count
            or self.objects_without_rows.count
            or self.size_mismatches.count
            or self.partial_writes.stale
            or self.spool_folders.stale
        )


async def integrity_report(
    session: AsyncSession,
    store: BlobStore,
    *,
    examples: int = 5,
    page_size: int = PAGE_SIZE,
    spool_root: Path | None = None,
    clock: Clock | None = None,
    grace: timedelta = DEFAULT_GRACE,
) -> IntegrityReport:
    """Rows whose object is missing (or has another size), objects without rows, and what
    crashed uploads left (the store's unfinished writes, spool folders under `spool_root`).

    Reads only; one `stat` per row, so on a remote store run it off-peak. Orphans and
    leftovers younger than the GC's grace period may be uploads in flight.
    """
    report = IntegrityReport()
    async for rows in _row_pages(session, page_size):
        for key, size in rows:
            report.rows_checked += 1
            info = await store.stat(key)
            if info is None:
                report.rows_without_objects.add(key, keep=examples)
            elif info.size != size:
                report.size_mismatches.add(key, keep=examples)
    async for page in _pages(store.list_keys(ORG_PREFIX), page_size):
        report.objects_checked += len(page)
        known = await _keys_with_rows(session, [info.key for info in page])
        for info in page:
            if info.key not in known:
                report.objects_without_rows.add(info.key, keep=examples)
    cutoff = (clock.now() if clock else datetime.now(UTC)) - grace
    async for partial in store.list_partials():
        stale = _as_utc(partial.last_write) <= cutoff
        report.partial_writes.add_leftover(partial.name, partial.size, stale=stale, keep=examples)
    for folder in await asyncio.to_thread(spool_folders, spool_root):
        report.spool_folders.add_leftover(
            str(folder.path), folder.size, stale=folder.last_write <= cutoff, keep=examples
        )
    return report


# ---- paging ----------------------------------------------------------------------------------


async def _pages(items: AsyncIterable[T], size: int) -> AsyncIterator[list[T]]:
    page: list[T] = []
    async for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


async def _row_pages(session: AsyncSession, page_size: int) -> AsyncIterator[list[tuple[str, int]]]:
    """Every row's `(key, size)`, a page at a time in key order (keyset, not OFFSET)."""
    after = ""
    while True:
        rows = (
            await session.execute(
                select(StoredBlob.key, StoredBlob.size)
                .where(StoredBlob.key > after)
                .order_by(StoredBlob.key)
                .limit(page_size)
            )
        ).all()
        if not rows:
            return
        yield [(key, size) for key, size in rows]
        after = rows[-1][0]


async def _keys_with_rows(session: AsyncSession, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    return set(await session.scalars(select(StoredBlob.key).where(StoredBlob.key.in_(keys))))
