"""Stored blobs: blob first and row second, storage quotas, the orphan collector and the
integrity report, on a local blob store in tmp_path."""

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core.blobs import BlobTooLarge, org_key
from atelier.core.clock import FixedClock
from atelier.core.db import transaction
from atelier.core.errors import Conflict, NotFound, QuotaExceeded
from atelier.core.ids import is_id, new_id
from atelier.core.principal import Principal
from atelier.plans.models import Plan
from atelier.storage import integrity
from atelier.storage import service as storage
from atelier.storage.models import OrphanSighting, StoredBlob

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
UNLIMITED = Plan(id="unlimited", name="Unlimited", max_storage_bytes=None)
MiB = 1024 * 1024


@pytest.fixture
def clock():
    return FixedClock(NOW)


@pytest.fixture
def store(tmp_path, clock):
    return LocalBlobStore(tmp_path / "blobs", secret="s" * 8 + "0123456789abcdefghij", clock=clock)


def tiny(limit: int) -> Plan:
    return Plan(id="tiny", name="Tiny", max_storage_bytes=limit)


async def stream(*parts: bytes):
    for part in parts:
        yield part


def files_under(root) -> list[str]:
    """Every file the store holds, temporary and metadata files included."""
    return sorted(p.name for p in root.rglob("*") if p.is_file())


async def save(session, store, clock, org_id="org_a", *parts, plan=UNLIMITED, max_bytes=MiB, **kw):
    return await storage.save_upload(
        session,
        store,
        org_id=org_id,
        plan=plan,
        key=org_key(org_id, "uploads", new_id("up")),
        chunks=stream(*parts),
        content_type=kw.pop("content_type", "text/csv"),
        filename=kw.pop("filename", "data.csv"),
        max_bytes=max_bytes,
        clock=clock,
        **kw,
    )


async def count_rows(session) -> int:
    return await session.scalar(select(func.count()).select_from(StoredBlob))


# ---- saving ------------------------------------------------------------------------------------


async def test_an_upload_is_stored_then_recorded(db_session, store, clock):
    blob = await save(db_session, store, clock, "org_a", b"a,b\n", b"1,2\n", purpose="dataset")
    assert is_id(blob.id, "blob")
    assert (blob.org_id, blob.size, blob.purpose) == ("org_a", 8, "dataset")
    assert blob.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert (blob.filename, blob.content_type, blob.created_at) == ("data.csv", "text/csv", NOW)
    assert blob.key.startswith("orgs/org_a/uploads/")
    assert (await store.stat(blob.key)).size == 8
    assert await storage.storage_used(db_session, "org_a") == 8
    assert await storage.storage_used(db_session, "org_b") == 0


async def test_the_display_name_never_becomes_part_of_the_key(db_session, store, clock):
    blob = await save(db_session, store, clock, "org_a", b"x", filename="../../etc/passwd")
    assert blob.filename == "../../etc/passwd"  # sanitising is the reader's job; kept as given
    assert "passwd" not in blob.key
    assert ".." not in blob.key


async def test_a_key_outside_the_organization_is_a_programming_error(db_session, store, clock):
    with pytest.raises(ValueError):
        await storage.save_upload(
            db_session,
            store,
            org_id="org_a",
            plan=UNLIMITED,
            key=org_key("org_b", "stolen"),
            chunks=stream(b"x"),
            content_type="text/plain",
            filename="x",
            max_bytes=10,
            clock=clock,
        )
    assert files_under(store.root) == []


async def test_a_taken_key_is_a_conflict_and_the_stored_blob_survives(db_session, store, clock):
    key = (await save(db_session, store, clock, "org_a", b"original")).key
    with pytest.raises(Conflict):
        await storage.save_upload(
            db_session,
            store,
            org_id="org_a",
            plan=UNLIMITED,
            key=key,
            chunks=stream(b"replacement"),
            content_type="text/plain",
            filename="x",
            max_bytes=100,
            clock=clock,
        )
    assert b"".join([c async for c in store.get(key)]) == b"original"


async def test_an_upload_over_the_request_limit_is_413_and_leaves_nothing(db_session, store, clock):
    with pytest.raises(BlobTooLarge) as exc:
        await save(db_session, store, clock, "org_a", b"x" * 600, b"x" * 600, max_bytes=1000)
    assert exc.value.status == 413
    assert files_under(store.root) == []
    assert await count_rows(db_session) == 0


async def test_a_stream_that_breaks_leaves_nothing(db_session, store, clock):
    async def broken():
        yield b"x" * 1000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await storage.save_upload(
            db_session,
            store,
            org_id="org_a",
            plan=UNLIMITED,
            key=org_key("org_a", "broken"),
            chunks=broken(),
            content_type="text/plain",
            filename="x",
            max_bytes=MiB,
            clock=clock,
        )
    assert files_under(store.root) == []
    assert await count_rows(db_session) == 0


async def test_a_failure_later_in_the_callers_transaction_removes_the_object(
    db_session, store, clock
):
    with pytest.raises(RuntimeError):
        async with transaction(db_session):
            blob = await save(db_session, store, clock, "org_a", b"data")
            assert await store.stat(blob.key) is not None
            raise RuntimeError("the step after the upload fails")
    assert files_under(store.root) == []
    assert await count_rows(db_session) == 0


async def test_within_the_callers_transaction_the_blob_is_kept_on_commit(db_session, store, clock):
    async with transaction(db_session):
        blob = await save(db_session, store, clock, "org_a", b"data")
    assert await store.stat(blob.key) is not None
    assert await count_rows(db_session) == 1


# ---- quota -------------------------------------------------------------------------------------


async def test_an_organization_at_its_limit_is_refused_before_anything_is_read(
    db_session, store, clock
):
    await save(db_session, store, clock, "org_a", b"x" * 1000, plan=tiny(1000))
    started = []

    async def never_read():
        started.append(True)
        yield b"x"

    with pytest.raises(QuotaExceeded) as exc:
        await storage.save_upload(
            db_session,
            store,
            org_id="org_a",
            plan=tiny(1000),
            key=org_key("org_a", "more"),
            chunks=never_read(),
            content_type="text/plain",
            filename="x",
            max_bytes=MiB,
            clock=clock,
        )
    assert exc.value.status == 402
    assert exc.value.extra == {"meter": "storage_bytes", "limit": 1000, "used": 1000}
    assert started == []
    # Another organization is not affected.
    await save(db_session, store, clock, "org_b", b"x" * 1000, plan=tiny(1000))


async def test_a_file_passing_the_quota_midway_is_402_and_leaves_nothing(db_session, store, clock):
    first = (await save(db_session, store, clock, "org_a", b"x" * 700, plan=tiny(1000))).key
    with pytest.raises(QuotaExceeded) as exc:
        await save(db_session, store, clock, "org_a", b"y" * 200, b"y" * 200, plan=tiny(1000))
    assert exc.value.extra == {"meter": "storage_bytes", "limit": 1000, "used": 700}
    assert "does not fit" in exc.value.detail
    name = first.rsplit("/", 1)[1]
    assert files_under(store.root) == [name, name + ".meta.json"]
    assert await count_rows(db_session) == 1


async def test_a_file_that_exactly_fills_the_quota_is_accepted(db_session, store, clock):
    await save(db_session, store, clock, "org_a", b"x" * 700, plan=tiny(1000))
    await save(db_session, store, clock, "org_a", b"y" * 300, plan=tiny(1000))
    assert await storage.storage_used(db_session, "org_a") == 1000


async def test_the_smaller_of_request_limit_and_quota_decides_the_error(db_session, store, clock):
    # The request limit binds first: 413, even though the quota would also be passed later.
    with pytest.raises(BlobTooLarge):
        await save(db_session, store, clock, "org_a", b"x" * 600, plan=tiny(1000), max_bytes=500)
    # The quota binds first: 402.
    with pytest.raises(QuotaExceeded):
        await save(db_session, store, clock, "org_a", b"x" * 1200, plan=tiny(1000), max_bytes=5000)


async def test_deleting_a_blob_frees_its_storage(db_session, store, clock):
    blob = await save(db_session, store, clock, "org_a", b"x" * 1000, plan=tiny(1000))
    with pytest.raises(QuotaExceeded):
        await save(db_session, store, clock, "org_a", b"y", plan=tiny(1000))
    await db_session.refresh(blob)  # a failed unit of work expires what the session holds
    await storage.delete_blob(db_session, store, blob)
    assert await store.stat(blob.key) is None
    assert await storage.storage_used(db_session, "org_a") == 0
    await save(db_session, store, clock, "org_a", b"y" * 1000, plan=tiny(1000))


async def test_a_blob_deletion_that_rolls_back_keeps_the_object(db_session, store, clock):
    blob = await save(db_session, store, clock, "org_a", b"keep me")
    key = blob.key
    with pytest.raises(RuntimeError):
        async with transaction(db_session):
            await storage.delete_blob(db_session, store, blob)
            raise RuntimeError("the rest of the operation fails")
    assert await store.stat(key) is not None
    assert await count_rows(db_session) == 1


async def test_usage_by_organization_largest_first(db_session, store, clock):
    await save(db_session, store, clock, "org_a", b"x" * 10)
    await save(db_session, store, clock, "org_b", b"x" * 30)
    await save(db_session, store, clock, "org_a", b"x" * 5)
    assert await storage.usage_by_org(db_session) == [("org_b", 30), ("org_a", 15)]
    assert await storage.usage_by_org(db_session, limit=1) == [("org_b", 30)]


async def test_another_organizations_blob_is_not_found(db_session, store, clock):
    blob = await save(db_session, store, clock, "org_a", b"secret")
    owner = Principal(org_id="org_a", role="member")
    assert (await storage.get_blob(db_session, owner, blob.id)).key == blob.key
    with pytest.raises(NotFound):
        await storage.get_blob(db_session, Principal(org_id="org_b", role="owner"), blob.id)


# ---- orphans and integrity ---------------------------------------------------------------------


async def put_orphan(store, key: str, data: bytes = b"orphan") -> str:
    await store.put(key, stream(data), content_type="text/plain", max_bytes=MiB)
    return key


async def test_the_collector_deletes_orphans_only_after_the_grace_period(db_session, store, clock):
    kept = await save(db_session, store, clock, "org_a", b"has a row")
    stray = await put_orphan(store, "orgs/org_a/uploads/stray")
    system = await put_orphan(store, "system/not-ours")
    grace = timedelta(hours=24)

    report = await integrity.collect_garbage(db_session, store, clock=clock, grace=grace)
    assert report == integrity.GarbageReport(orphans=1, deleted=0)
    clock.advance(grace - timedelta(seconds=1))
    report = await integrity.collect_garbage(db_session, store, clock=clock, grace=grace)
    assert report == integrity.GarbageReport(orphans=1, deleted=0)
    assert await store.stat(stray) is not None

    clock.advance(timedelta(seconds=1))
    report = await integrity.collect_garbage(db_session, store, clock=clock, grace=grace)
    assert report == integrity.GarbageReport(orphans=1, deleted=1)
    assert await store.stat(stray) is None
    assert await store.stat(kept.key) is not None
    assert await store.stat(system) is not None
    assert await db_session.scalar(select(func.count()).select_from(OrphanSighting)) == 0


async def test_an_object_whose_row_arrives_late_is_kept(db_session, store, clock):
    """An upload whose row commits after a collector pass saw its object is not an orphan."""
    key = await put_orphan(store, "orgs/org_a/uploads/slow", b"slow")
    await integrity.collect_garbage(db_session, store, clock=clock)
    async with transaction(db_session):
        db_session.add(
            StoredBlob(
                org_id="org_a",
                key=key,
                purpose="upload",
                size=4,
                sha256=hashlib.sha256(b"slow").hexdigest(),
                content_type="text/plain",
                filename="slow.txt",
                created_at=clock.now(),
            )
        )
    clock.advance(timedelta(days=2))
    report = await integrity.collect_garbage(db_session, store, clock=clock)
    assert report == integrity.GarbageReport(orphans=0, deleted=0)
    assert await store.stat(key) is not None
    assert await db_session.scalar(select(func.count()).select_from(OrphanSighting)) == 0


async def test_the_collector_works_in_pages(db_session, store, clock):
    for n in range(5):
        await put_orphan(store, f"orgs/org_{n}/uploads/stray")
    await save(db_session, store, clock, "org_2", b"has a row")
    found = [i.key async for i in integrity.find_orphans(db_session, store, page_size=2)]
    assert len(found) == 5
    await integrity.collect_garbage(db_session, store, clock=clock, page_size=2)
    clock.advance(timedelta(days=1))
    report = await integrity.collect_garbage(db_session, store, clock=clock, page_size=2)
    assert report == integrity.GarbageReport(orphans=5, deleted=5)
    assert [i.key async for i in integrity.find_orphans(db_session, store)] == []


async def test_the_integrity_report_finds_mismatches_both_ways(db_session, store, clock):
    healthy = await save(db_session, store, clock, "org_a", b"fine")
    lost = [await save(db_session, store, clock, "org_a", b"lost") for _ in range(3)]
    for blob in lost:
        await store.delete(blob.key)  # the object vanished behind Atelier's back
    resized = await save(db_session, store, clock, "org_b", b"resized")
    async with transaction(db_session):
        await db_session.execute(
            update(StoredBlob).where(StoredBlob.id == resized.id).values(size=999)
        )
    strays = [await put_orphan(store, f"orgs/org_c/stray-{n}") for n in range(2)]

    report = await integrity.integrity_report(db_session, store, examples=2, page_size=2)
    assert not report.ok
    assert (report.rows_checked, report.objects_checked) == (5, 4)
    assert report.rows_without_objects.count == 3
    assert len(report.rows_without_objects.examples) == 2
    assert set(report.rows_without_objects.examples) <= {b.key for b in lost}
    assert report.objects_without_rows == integrity.Finding(2, sorted(strays))
    assert report.size_mismatches == integrity.Finding(1, [resized.key])
    assert healthy.key not in report.rows_without_objects.examples


async def test_a_consistent_store_reports_ok(db_session, store, clock):
    await save(db_session, store, clock, "org_a", b"one")
    report = await integrity.integrity_report(db_session, store)
    assert report.ok
    assert (report.rows_checked, report.objects_checked) == (1, 1)


def touched(path, when: datetime) -> None:
    """Set the last write of `path` (and what is inside it) to `when`."""
    for item in [path, *path.rglob("*")]:
        os.utime(item, (when.timestamp(), when.timestamp()))


async def test_leftovers_of_crashed_uploads_are_reported_then_removed_past_the_grace(
    db_session, store, clock, tmp_path
):
    grace = timedelta(hours=24)
    spool = tmp_path / "var" / "tmp"
    folders = {}
    for name, last_write in (("dead", NOW - grace), ("in-flight", NOW - grace / 2)):
        folders[name] = spool / f"upload-{name}"
        (folders[name] / "original").parent.mkdir(parents=True)
        (folders[name] / "original").write_bytes(b"a,b\n1,2\n")
        touched(folders[name], last_write)
    partials = {}
    for name, last_write in (("dead", NOW - grace), ("in-flight", NOW - timedelta(minutes=1))):
        partials[name] = tmp_path / "blobs" / "orgs" / "org_a" / f".tmp-{name}"
        partials[name].parent.mkdir(parents=True, exist_ok=True)
        partials[name].write_bytes(b"12345")
        touched(partials[name], last_write)
    (spool / "not-an-upload").mkdir()  # other spool users' folders are not judged
    touched(spool / "not-an-upload", NOW - 2 * grace)

    report = await integrity.integrity_report(
        db_session, store, spool_root=spool, clock=clock, grace=grace
    )
    assert (report.spool_folders.count, report.spool_folders.stale) == (2, 1)
    assert report.spool_folders.bytes == 16
    assert (report.partial_writes.count, report.partial_writes.stale) == (2, 1)
    assert report.partial_writes.examples == ["orgs/org_a/.tmp-dead", "orgs/org_a/.tmp-in-flight"]
    assert not report.ok

    collected = await integrity.collect_garbage(
        db_session, store, clock=clock, grace=grace, spool_root=spool
    )
    assert (collected.partials_removed, collected.spool_folders_removed) == (1, 1)
    assert not folders["dead"].exists()
    assert not partials["dead"].exists()
    assert folders["in-flight"].exists()
    assert partials["in-flight"].exists()
    assert (spool / "not-an-upload").exists()
    report = await integrity.integrity_report(
        db_session, store, spool_root=spool, clock=clock, grace=grace
    )
    assert (report.spool_folders.count, report.partial_writes.count) == (1, 1)
    assert report.ok
