"""What domains need from file storage: the `BlobStore` Protocol, and safe keys.

Keys are `/`-separated segments of letters, digits, `.`, `_` and `-` (no empty, `.` or `..`
segment), namespaced per organization with `org_key`. Implementations live in `adapters/blobs`.
"""

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from atelier.core.errors import InvalidInput, PayloadTooLarge

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class PartialWrite:
    """A write that never finished (its process died mid-`put`): invisible to `list_keys`.

    `name` is the store's own handle for it (shown to operators, given back to
    `discard_partial`); `last_write` is when bytes last reached it.
    """

    name: str
    size: int
    last_write: datetime


class BlobTooLarge(PayloadTooLarge):
    pass


class BlobStore(Protocol):
    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int
    ) -> BlobInfo:
        """Store the stream under `key`, all or nothing; BlobTooLarge past `max_bytes`."""
        ...

    def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes `start` to `end` (exclusive) of the blob, streamed."""
        ...

    async def stat(self, key: str) -> BlobInfo | None: ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error."""
        ...

    def list_keys(self, prefix: str) -> AsyncIterator[BlobInfo]: ...

    async def signed_url(
        self, key: str, *, expires_in: timedelta, filename: str | None = None
    ) -> str: ...

    async def probe(self) -> None:
        """Write, read back and delete a tiny object outside the keys; raise if a step fails."""
        ...

    def list_partials(self) -> AsyncIterator[PartialWrite]:
        """Unfinished writes, including those in flight (tell them apart by `last_write`)."""
        ...

    async def discard_partial(self, partial: PartialWrite) -> None:
        """Remove an unfinished write; one already gone is not an error."""
        ...


FILE_CHUNK_BYTES = 1024 * 1024


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A local file as chunks for `BlobStore.put`, read in a thread (not on the event loop)."""
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, FILE_CHUNK_BYTES):
            yield chunk


async def download_to(store: "BlobStore", key: str, path: Path) -> Path:
    """A stored object written to a local file (the writes in a thread); returns the path."""
    with path.open("wb") as out:
        async for chunk in store.get(key):
            await asyncio.to_thread(out.write, chunk)
    return path


def validate_key(key: str) -> str:
    """The key if it is safe on any store (no traversal, no absolute path), else InvalidInput."""
    segments = key.split("/")
    if (
        not key
        or len(key) > MAX_KEY_LENGTH
        or not all(_SEGMENT.match(segment) for segment in segments)
        or any(segment in (".", "..") for segment in segments)
    ):
        raise InvalidInput(f"{key[:80]!r} is not a valid storage key")
    return key


def org_key(org_id: str, *parts: str) -> str:
    """A key inside an organization's namespace: `orgs/<org_id>/<parts…>`."""
    return validate_key("/".join(("orgs", org_id, *parts)))
