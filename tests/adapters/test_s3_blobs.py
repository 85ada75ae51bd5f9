"""The S3 blob store against a real S3 API (moto's server on loopback): atomic, streamed in parts,
isolated by prefix, with presigned download links fetched over HTTP."""

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from botocore.exceptions import ClientError

from atelier.adapters.blobs import create_blob_store
from atelier.adapters.blobs.local import LocalBlobStore
from atelier.adapters.blobs.s3 import S3BlobStore
from atelier.core.blobs import BlobTooLarge, PartialWrite, org_key
from atelier.core.clock import FixedClock
from atelier.core.errors import InvalidInput, NotFound
from atelier.ops.checks import check_storage
from atelier.settings import StorageSettings

pytestmark = pytest.mark.backend_independent

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
MIB = 1024 * 1024
PART = 5 * MIB  # the smallest threshold S3 allows, so the multipart tests stay small


@pytest.fixture
def clock():
    return FixedClock(NOW)


@pytest.fixture
def make_store(s3_endpoint, clock):
    """An S3 store on its own new bucket (or on `bucket`), with keyword overrides."""
    bucket = f"atelier-{uuid.uuid4().hex[:12]}"

    async def build(**overrides) -> S3BlobStore:
        values = {
            "bucket": bucket,
            "clock": clock,
            "endpoint_url": s3_endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "path_style": True,
            "multipart_threshold": PART,
        }
        store = S3BlobStore(**(values | overrides))
        await store.ensure_bucket()
        return store

    return build


@pytest.fixture
async def store(make_store):
    return await make_store()


async def stream(*parts: bytes):
    for part in parts:
        yield part


async def chunked(data: bytes, size: int = 256 * 1024):
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read(store, key, **kwargs) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, **kwargs)])


def objects(s3_client, bucket: str) -> list[str]:
    return [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def pending_uploads(s3_client, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


async def test_put_streams_hashes_and_reads_back(store, s3_client):
    data = [b"a" * 100_000, b"b" * 50_000]
    info = await store.put(
        "orgs/org_a/file.bin", stream(*data), content_type="image/png", max_bytes=1_000_000
    )
    assert info.size == 150_000
    assert info.sha256 == hashlib.sha256(b"".join(data)).hexdigest()
    assert await read(store, info.key) == b"".join(data)
    assert await read(store, info.key, start=99_998, end=100_002) == b"aabb"
    assert await read(store, info.key, start=149_999) == b"b"
    assert await read(store, info.key, start=149_990, end=10**9) == b"b" * 10
    assert await read(store, info.key, start=200_000) == b""
    assert await read(store, info.key, start=10, end=10) == b""
    assert await store.stat(info.key) == info
    head = s3_client.head_object(Bucket=store.bucket, Key="orgs/org_a/file.bin")
    assert head["Metadata"] == {"sha256": info.sha256}
    assert head["ContentType"] == "image/png"


async def test_an_empty_blob_round_trips(store):
    info = await store.put("orgs/org_a/empty", stream(), content_type="text/plain", max_bytes=10)
    assert (info.size, info.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await read(store, "orgs/org_a/empty") == b""
    assert await store.stat("orgs/org_a/empty") == info


async def test_a_missing_blob_is_not_found(store):
    assert await store.stat("orgs/org_a/nothing") is None
    with pytest.raises(NotFound):
        await read(store, "orgs/org_a/nothing")
    with pytest.raises(NotFound):
        await read(store, "orgs/org_a/nothing", start=5, end=5)


async def test_a_large_blob_is_sent_in_parts_while_it_streams(store, s3_client):
    data = bytes(range(256)) * (11 * MIB // 256)  # 11 MiB: parts of 5, 5 and 1 MiB
    seen_mid_stream = {}

    async def watched():
        async for chunk in chunked(data, 64 * 1024):
            yield chunk
        # Everything is read; two full parts went out while the stream was arriving.
        uploads = s3_client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        seen_mid_stream["uploads"] = [u["Key"] for u in uploads]
        seen_mid_stream["parts"] = [
            part["Size"]
            for upload in uploads
            for part in s3_client.list_parts(
                Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            ).get("Parts", [])
        ]
        seen_mid_stream["visible"] = await store.stat("orgs/org_a/big.bin")

    info = await store.put(
        "orgs/org_a/big.bin", watched(), content_type="video/mp4", max_bytes=20 * MIB
    )

    assert [key.split("/")[0] for key in seen_mid_stream["uploads"]] == [".uploads"]
    assert seen_mid_stream["parts"] == [PART, PART]
    assert seen_mid_stream["visible"] is None  # nothing under the key before it is complete
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.stat("orgs/org_a/big.bin") == info
    assert hashlib.sha256(await read(store, info.key)).hexdigest() == info.sha256
    assert await read(store, info.key, start=PART - 2, end=PART + 2) == data[PART - 2 : PART + 2]
    assert s3_client.head_object(Bucket=store.bucket, Key=info.key, PartNumber=1)["PartsCount"] == 3
    assert (
        s3_client.head_object(Bucket=store.bucket, Key=info.key)["ETag"].strip('"').endswith("-3")
    )
    assert objects(s3_client, store.bucket) == ["orgs/org_a/big.bin"]  # no staging object left
    assert pending_uploads(s3_client, store.bucket) == []


@pytest.mark.parametrize(("size", "parts"), [(PART, 0), (PART + 1, 2)])
async def test_a_blob_goes_in_parts_only_past_the_threshold(store, s3_client, size, parts):
    data = b"z" * size
    info = await store.put("orgs/org_a/edge", chunked(data), content_type="x/y", max_bytes=size)
    assert await read(store, info.key) == data
    etag = s3_client.head_object(Bucket=store.bucket, Key=info.key)["ETag"].strip('"')
    assert etag.endswith(f"-{parts}") if parts else "-" not in etag


@pytest.mark.parametrize(
    ("sizes", "max_bytes"),
    [((600, 600), 1000), ((3 * MIB, 3 * MIB, 3 * MIB), 7 * MIB)],
    ids=["single-put", "multipart"],
)
async def test_a_blob_over_the_limit_leaves_nothing_behind(store, s3_client, sizes, max_bytes):
    with pytest.raises(BlobTooLarge):
        await store.put(
            "orgs/org_a/big",
            stream(*(b"x" * size for size in sizes)),
            content_type="text/plain",
            max_bytes=max_bytes,
        )
    assert await store.stat("orgs/org_a/big") is None
    assert objects(s3_client, store.bucket) == []
    assert pending_uploads(s3_client, store.bucket) == []


@pytest.mark.parametrize("before_failing", [3, 7 * MIB], ids=["single-put", "multipart"])
async def test_a_stream_that_breaks_midway_leaves_nothing_and_keeps_the_old_blob(
    store, s3_client, before_failing
):
    await store.put("orgs/org_a/doc", stream(b"old"), content_type="text/plain", max_bytes=100)

    async def broken():
        yield b"n" * before_failing
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.put("orgs/org_a/doc", broken(), content_type="text/plain", max_bytes=10 * MIB)
    assert await read(store, "orgs/org_a/doc") == b"old"
    assert objects(s3_client, store.bucket) == ["orgs/org_a/doc"]
    assert pending_uploads(s3_client, store.bucket) == []


async def test_a_cancelled_upload_is_aborted(store, s3_client):
    started = asyncio.Event()

    async def endless():
        yield b"x" * (6 * MIB)  # one full part, sent once the next chunk arrives
        yield b"x"
        started.set()
        await asyncio.sleep(3600)
        yield b"never"

    task = asyncio.create_task(
        store.put("orgs/org_a/slow", endless(), content_type="x/y", max_bytes=100 * MIB)
    )
    await started.wait()
    assert len(pending_uploads(s3_client, store.bucket)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pending_uploads(s3_client, store.bucket) == []
    assert objects(s3_client, store.bucket) == []


async def test_list_pages_through_a_folder_and_delete_is_idempotent(make_store, s3_client):
    store = await make_store(list_page_size=2)
    for name in ("a", "b", "c", "sub/d", "sub/e"):
        await store.put(
            org_key("org_a", name), stream(name.encode()), content_type="text/plain", max_bytes=10
        )
    for key in (org_key("org_b", "z"), "orgs/org_ab/not-in-org_a"):
        await store.put(key, stream(b"1"), content_type="text/plain", max_bytes=10)
    s3_client.put_object(Bucket=store.bucket, Key=".uploads/leftover", Body=b"staging")

    listed = [info async for info in store.list_keys("orgs/org_a")]
    assert [info.key for info in listed] == [
        "orgs/org_a/a",
        "orgs/org_a/b",
        "orgs/org_a/c",
        "orgs/org_a/sub/d",
        "orgs/org_a/sub/e",
    ]
    assert listed[0].sha256 == hashlib.sha256(b"a").hexdigest()
    assert listed[0].content_type == "text/plain"
    everything = [info.key async for info in store.list_keys("")]
    assert len(everything) == 7  # hidden names (staging, probes) are not keys

    await store.delete("orgs/org_a/a")
    await store.delete("orgs/org_a/a")
    await store.delete("orgs/org_a/never-existed")
    assert [i.key async for i in store.list_keys("orgs/org_a/")][:2] == [
        "orgs/org_a/b",
        "orgs/org_a/c",
    ]
    assert [i.key async for i in store.list_keys("orgs/org_c")] == []


async def test_a_prefix_isolates_stores_sharing_a_bucket(make_store, s3_client):
    one = await make_store(prefix="tenant-one")
    two = await make_store(prefix="/tenant-two/")
    await one.put("orgs/o/k", stream(b"one"), content_type="text/plain", max_bytes=10)
    await two.put("orgs/o/k", stream(b"two"), content_type="text/plain", max_bytes=10)
    big = await one.put(
        "orgs/o/big", chunked(b"b" * (PART + 1)), content_type="x/y", max_bytes=PART + 1
    )

    assert await read(one, "orgs/o/k") == b"one"
    assert await read(two, "orgs/o/k") == b"two"
    assert [i.key async for i in one.list_keys("")] == ["orgs/o/big", "orgs/o/k"]
    assert [i.key async for i in two.list_keys("orgs")] == ["orgs/o/k"]
    assert await one.stat("orgs/o/big") == big
    assert sorted(objects(s3_client, one.bucket)) == [
        "tenant-one/orgs/o/big",
        "tenant-one/orgs/o/k",
        "tenant-two/orgs/o/k",
    ]
    await two.delete("orgs/o/k")
    assert await read(one, "orgs/o/k") == b"one"
    assert "tenant-one/orgs/o/k" in (
        await one.signed_url("orgs/o/k", expires_in=timedelta(minutes=1))
    )


async def test_a_signed_url_downloads_the_blob_as_an_attachment(store):
    await store.put(
        "orgs/org_a/report", stream(b"%PDF-1.7"), content_type="application/pdf", max_bytes=100
    )
    async with httpx.AsyncClient() as http:
        url = await store.signed_url(
            "orgs/org_a/report", expires_in=timedelta(minutes=5), filename='Résumé "2026".pdf'
        )
        response = await http.get(url)
        assert response.status_code == 200
        assert response.content == b"%PDF-1.7"
        assert response.headers["content-type"] == "application/pdf"
        assert response.headers["content-disposition"] == (
            'attachment; filename="R_sum_ _2026_.pdf"; '
            "filename*=UTF-8''R%C3%A9sum%C3%A9%20%222026%22.pdf"
        )
        assert response.headers["cache-control"] == "private, max-age=300"

        url = await store.signed_url("orgs/org_a/report", expires_in=timedelta(minutes=5))
        response = await http.get(url)
        assert response.headers["content-disposition"] == 'attachment; filename="report"'

        url = await store.signed_url(
            "orgs/org_a/report", expires_in=timedelta(minutes=5), filename="a\r\nX-Evil: 1"
        )
        response = await http.get(url)
        assert response.headers["content-disposition"] == 'attachment; filename="aX-Evil: 1"'
        assert "x-evil" not in response.headers


async def test_a_signed_url_lives_at_most_a_week(store):
    with pytest.raises(ValueError, match="7 days"):
        await store.signed_url("orgs/org_a/x", expires_in=timedelta(days=8))


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "orgs/../../etc/passwd",
        "/abs/path",
        "a//b",
        "orgs/a/.",
        "",
        "x" * 600,
        "orgs/a/name with space",
        ".uploads/staged",
        ".probe/x",
    ],
)
async def test_unsafe_keys_are_refused_by_every_operation(store, key):
    with pytest.raises(InvalidInput):
        await store.put(key, stream(b"1"), content_type="text/plain", max_bytes=10)
    with pytest.raises(InvalidInput):
        await read(store, key)
    with pytest.raises(InvalidInput):
        await store.stat(key)
    with pytest.raises(InvalidInput):
        await store.delete(key)
    with pytest.raises(InvalidInput):
        await store.signed_url(key, expires_in=timedelta(minutes=1))


async def test_probe_writes_reads_and_cleans_up_on_both_stores(store, s3_client, tmp_path, clock):
    await store.probe()
    assert objects(s3_client, store.bucket) == []

    local = LocalBlobStore(tmp_path / "blobs", secret="s" * 32, clock=clock)
    await local.probe()
    assert list(local.root.iterdir()) == []


async def test_probe_fails_when_the_bucket_is_missing(s3_endpoint, clock):
    store = S3BlobStore(
        bucket="atelier-never-created",
        clock=clock,
        endpoint_url=s3_endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        path_style=True,
    )
    with pytest.raises(ClientError, match="NoSuchBucket"):
        await store.probe()
    check = await check_storage(store)  # what readiness and `atelier doctor` say
    assert (check.status, check.detail) == ("fail", "bucket atelier-never-created: NoSuchBucket")
    assert await store.ensure_bucket() is True
    assert await store.ensure_bucket() is False
    await store.probe()


def test_the_factory_picks_the_configured_backend(tmp_path, clock, s3_endpoint):
    local = create_blob_store(
        StorageSettings(root=tmp_path / "blobs"), secret="s" * 32, clock=clock
    )
    assert isinstance(local, LocalBlobStore)

    settings = StorageSettings(
        backend="s3",
        s3_bucket="media",
        s3_endpoint_url=s3_endpoint,
        s3_region="eu-west-3",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        s3_path_style=True,
        s3_prefix="atelier",
        s3_storage_class="STANDARD_IA",
        s3_multipart_threshold_bytes=8 * MIB,
    )
    s3 = create_blob_store(settings, secret="unused", clock=clock)
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.region, s3.prefix) == ("media", "eu-west-3", "atelier/")
    assert (s3.storage_class, s3.multipart_threshold) == ("STANDARD_IA", 8 * MIB)
    assert s3.client.meta.endpoint_url == s3_endpoint
    assert s3.client.meta.config.s3["addressing_style"] == "path"


async def test_the_storage_class_is_applied_to_blobs(make_store, s3_client):
    store = await make_store(storage_class="STANDARD_IA")
    await store.put("orgs/o/small", stream(b"s"), content_type="x/y", max_bytes=PART + 1)
    await store.put(
        "orgs/o/large", chunked(b"l" * (PART + 1)), content_type="x/y", max_bytes=PART + 1
    )
    for key in ("orgs/o/small", "orgs/o/large"):
        assert (
            s3_client.head_object(Bucket=store.bucket, Key=key).get("StorageClass") == "STANDARD_IA"
        )


# ---- unfinished writes ------------------------------------------------------------------------


async def test_an_upload_killed_midway_is_listed_as_unfinished_and_aborted(store, s3_client):
    # What a `put` killed between parts leaves: a multipart upload to a staging key, never
    # completed nor aborted, and a staging object a crash before the copy left.
    started = s3_client.create_multipart_upload(Bucket=store.bucket, Key=".uploads/killed")
    s3_client.put_object(Bucket=store.bucket, Key=".uploads/copied-never", Body=b"whole")
    await store.put("orgs/o/a.bin", stream(b"kept"), content_type="x/y", max_bytes=100)
    partials = [p async for p in store.list_partials()]
    assert sorted(p.name for p in partials) == [
        ".uploads/copied-never",
        f".uploads/killed?uploadId={started['UploadId']}",
    ]
    assert all(p.last_write.tzinfo is not None for p in partials)
    for partial in partials:
        await store.discard_partial(partial)
        await store.discard_partial(partial)  # gone already: not an error
    assert pending_uploads(s3_client, store.bucket) == []
    assert objects(s3_client, store.bucket) == ["orgs/o/a.bin"]
    with pytest.raises(NotFound):
        await store.discard_partial(PartialWrite("orgs/o/a.bin", 0, NOW))
    assert await read(store, "orgs/o/a.bin") == b"kept"
