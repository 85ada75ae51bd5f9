"""A blob store in a local folder.

Writes are atomic: the stream goes to a temporary file in the same folder (hashed on the way,
fsynced), metadata is written beside it, then both are renamed into place, the blob last, so a
reader sees a whole blob or none. Every path is built from a validated key and checked to stay
inside the root (realpath + commonpath). Signed URLs are HMAC-signed, expiring paths served by
the API (`/blobs/{token}`).
"""

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeSerializer

from atelier.core.blobs import BlobInfo, BlobTooLarge, PartialWrite, validate_key
from atelier.core.clock import Clock
from atelier.core.errors import NotFound

META_SUFFIX = ".meta.json"
PARTIAL_PREFIX = ".tmp-"
CHUNK = 64 * 1024


class LocalBlobStore:
    def __init__(
        self, root: Path, *, secret: str, clock: Clock, url_prefix: str = "/blobs"
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self._signer = URLSafeSerializer(secret, salt="atelier.blob-url")
        self.clock = clock
        self.url_prefix = url_prefix

    # ---- paths ---------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        validate_key(key)
        if key.endswith(META_SUFFIX):
            raise NotFound(f"No blob {key}")
        path = Path(os.path.realpath(self.root / key))
        if os.path.commonpath([self.root, path]) != str(self.root):
            raise NotFound(f"No blob {key}")
        return path

    # ---- writing -------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int
    ) -> BlobInfo:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        try:
            with tmp.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise BlobTooLarge(
                            f"The file is larger than the limit of {max_bytes} bytes",
                            limit=max_bytes,
                        )
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
                await asyncio.to_thread(_flush, fh)
            info = BlobInfo(key, size, digest.hexdigest(), content_type)
            meta_tmp = tmp.with_name(tmp.name + META_SUFFIX)
            meta_tmp.write_text(
                json.dumps({"size": size, "sha256": info.sha256, "content_type": content_type})
            )
            os.replace(meta_tmp, self._meta_path(path))
            os.replace(tmp, path)  # the blob becomes visible last
        except BaseException:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + META_SUFFIX).unlink(missing_ok=True)
            raise
        return info

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        path.unlink(missing_ok=True)
        self._meta_path(path).unlink(missing_ok=True)

    # ---- reading -------------------------------------------------------------------------

    async def stat(self, key: str) -> BlobInfo | None:
        path = self.path_of(key)
        try:
            meta = json.loads(self._meta_path(path).read_text())
        except FileNotFoundError:
            return None
        if not path.exists():
            return None
        return BlobInfo(key, meta["size"], meta["sha256"], meta["content_type"])

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        if not path.exists():
            raise NotFound(f"No blob {key}")
        with path.open("rb") as fh:
            fh.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(fh.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def list_keys(self, prefix: str) -> AsyncIterator[BlobInfo]:
        base = self.path_of(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            name = path.name
            if path.is_file() and not name.startswith(".") and not name.endswith(META_SUFFIX):
                info = await self.stat(path.relative_to(self.root).as_posix())
                if info is not None:
                    yield info

    # ---- unfinished writes -----------------------------------------------------------------

    async def list_partials(self) -> AsyncIterator[PartialWrite]:
        """The `.tmp-*` files a `put` killed mid-stream left (with their metadata beside them);
        `last_write` is the file's mtime, which every write moves forward."""
        for path in sorted(await asyncio.to_thread(_partial_files, self.root)):
            try:
                stat = path.stat()
            except FileNotFoundError:  # finished or discarded since the listing
                continue
            yield PartialWrite(
                path.relative_to(self.root).as_posix(),
                stat.st_size,
                datetime.fromtimestamp(stat.st_mtime, UTC),
            )

    async def discard_partial(self, partial: PartialWrite) -> None:
        await asyncio.to_thread(self._discard_partial, partial.name)

    def _discard_partial(self, name: str) -> None:
        path = Path(os.path.realpath(self.root / name))
        inside = os.path.commonpath([self.root, path]) == str(self.root)
        if not inside or not path.name.startswith(PARTIAL_PREFIX):
            raise NotFound(f"No unfinished write {name}")
        path.unlink(missing_ok=True)

    # ---- signed URLs ---------------------------------------------------------------------

    async def signed_url(
        self, key: str, *, expires_in: timedelta, filename: str | None = None
    ) -> str:
        self.path_of(key)
        expires = int((self.clock.now() + expires_in).timestamp())
        token = self._signer.dumps({"k": key, "e": expires, "f": filename})
        return f"{self.url_prefix}/{token}"

    def read_signed(self, token: str) -> tuple[str, int, str | None]:
        """(key, expiry, download name) of a signed token; NotFound if forged or expired."""
        try:
            data = self._signer.loads(token)
            key, expires, filename = data["k"], int(data["e"]), data.get("f")
        except (BadSignature, KeyError, TypeError, ValueError):
            raise NotFound("This link is not valid") from None
        if expires <= self.clock.now().timestamp():
            raise NotFound("This link has expired")
        return key, expires, filename

    # ---- operations ----------------------------------------------------------------------

    async def probe(self) -> None:
        """Write, read back and delete a small file; raise if a step fails. Its name starts
        with a dot, so no key can take it and listing skips it."""
        await asyncio.to_thread(self._probe, self.root / f".probe-{uuid.uuid4().hex}")

    def _probe(self, path: Path) -> None:
        payload = f"atelier storage probe {self.clock.now().isoformat()}".encode()
        try:
            with path.open("wb") as fh:
                fh.write(payload)
                _flush(fh)
            if path.read_bytes() != payload:
                raise OSError(f"{path} read back different bytes")
        finally:
            path.unlink(missing_ok=True)

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(path.name + META_SUFFIX)


def _partial_files(root: Path) -> list[Path]:
    return [path for path in root.rglob(f"{PARTIAL_PREFIX}*") if path.is_file()]


def _flush(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())
