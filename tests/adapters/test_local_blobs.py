"""The local blob store: atomic, traversal-proof, streamed, with signed download links."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core.blobs import BlobTooLarge, PartialWrite, org_key, validate_key
from atelier.core.clock import FixedClock
from atelier.core.errors import InvalidInput, NotFound

pytestmark = pytest.mark.backend_independent

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


@pytest.fixture
def clock():
    return FixedClock(NOW)


@pytest.fixture
def store(tmp_path, clock):
    return LocalBlobStore(tmp_path / "blobs", secret="s" * 8 + "0123456789abcdefghij", clock=clock)


async def stream(*parts: bytes):
    for part in parts:
        yield part


async def read(store, key, **kwargs) -> bytes:
    return b"".join([chunk async for chunk in store.get(key, **kwargs)])


async def test_put_streams_hashes_and_reads_back(store):
    data = [b"a" * 100_000, b"b" * 50_000]
    info = await store.put(
        "orgs/org_a/file.bin",
        stream(*data),
        content_type="application/octet-stream",
        max_bytes=1_000_000,
    )
    assert info.size == 150_000
    assert info.sha256 == hashlib.sha256(b"".join(data)).hexdigest()
    assert await read(store, info.key) == b"".join(data)
    assert await read(store, info.key, start=99_998, end=100_002) == b"aabb"
    assert await store.stat(info.key) == info


async def test_a_blob_over_the_limit_leaves_nothing_behind(store, tmp_path):
    with pytest.raises(BlobTooLarge):
        await store.put(
            "orgs/org_a/big",
            stream(b"x" * 600, b"x" * 600),
            content_type="text/plain",
            max_bytes=1000,
        )
    assert await store.stat("orgs/org_a/big") is None
    leftovers = [p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert leftovers == []


async def test_a_stream_that_breaks_midway_leaves_nothing_and_keeps_the_old_blob(store):
    await store.put("orgs/org_a/doc", stream(b"old"), content_type="text/plain", max_bytes=100)

    async def broken():
        yield b"new"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.put("orgs/org_a/doc", broken(), content_type="text/plain", max_bytes=100)
    assert await read(store, "orgs/org_a/doc") == b"old"


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
        "orgs/a/\u00e9t\u00e9",
        "orgs/a/.hidden",
    ],
)
def test_unsafe_keys_are_refused(key):
    with pytest.raises(InvalidInput):
        validate_key(key)


async def test_a_symlink_cannot_lead_outside_the_root(store, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    (store.root / "orgs").mkdir()
    (store.root / "orgs" / "link").symlink_to(outside)
    with pytest.raises(NotFound):
        await read(store, "orgs/link")


async def test_list_and_delete(store):
    for name in ("a", "b", "sub/c"):
        await store.put(
            org_key("org_a", name), stream(b"1"), content_type="text/plain", max_bytes=10
        )
    await store.put(org_key("org_b", "z"), stream(b"1"), content_type="text/plain", max_bytes=10)
    keys = [info.key async for info in store.list_keys("orgs/org_a")]
    assert keys == ["orgs/org_a/a", "orgs/org_a/b", "orgs/org_a/sub/c"]
    await store.delete("orgs/org_a/a")
    await store.delete("orgs/org_a/never-existed")
    assert [i.key async for i in store.list_keys("orgs/org_a")] == [
        "orgs/org_a/b",
        "orgs/org_a/sub/c",
    ]


async def test_signed_links_expire_and_cannot_be_forged(store, clock):
    url = await store.signed_url("orgs/org_a/x", expires_in=timedelta(minutes=5))
    token = url.rsplit("/", 1)[1]
    assert store.read_signed(token)[0] == "orgs/org_a/x"
    with pytest.raises(NotFound):
        store.read_signed(token[:-2] + "xx")
    clock.advance(timedelta(minutes=6))
    with pytest.raises(NotFound):
        store.read_signed(token)


# ---- unfinished writes ------------------------------------------------------------------------


async def test_a_put_killed_midway_is_listed_as_unfinished_and_can_be_discarded(store, tmp_path):
    await store.put("orgs/o/a.bin", stream(b"whole"), content_type="x/y", max_bytes=100)
    # What a `put` killed mid-stream leaves: its temporary file beside the finished blobs.
    left = tmp_path / "blobs" / "orgs" / "o" / ".tmp-0123456789abcdef"
    left.write_bytes(b"half a blob")
    assert [info.key async for info in store.list_keys("orgs/")] == ["orgs/o/a.bin"]
    partials = [p async for p in store.list_partials()]
    assert [(p.name, p.size) for p in partials] == [("orgs/o/.tmp-0123456789abcdef", 11)]
    assert abs(partials[0].last_write.timestamp() - left.stat().st_mtime) < 1
    await store.discard_partial(partials[0])
    assert not left.exists()
    assert [p async for p in store.list_partials()] == []
    assert await read(store, "orgs/o/a.bin") == b"whole"


async def test_discard_partial_removes_only_unfinished_writes(store, tmp_path):
    await store.put("orgs/o/a.bin", stream(b"whole"), content_type="x/y", max_bytes=100)
    outside = tmp_path / ".tmp-outside"
    outside.write_bytes(b"not the store's")
    for name in ("orgs/o/a.bin", "../.tmp-outside"):
        with pytest.raises(NotFound):
            await store.discard_partial(PartialWrite(name, 0, NOW))
    assert await read(store, "orgs/o/a.bin") == b"whole"
    assert outside.exists()
