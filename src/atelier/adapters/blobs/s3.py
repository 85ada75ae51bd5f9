"""A blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...), through boto3.

boto3's client is synchronous, so every request runs in a worker thread (`asyncio.to_thread`) and
the event loop stays free; bodies are read from and sent to S3 one chunk or one part at a time.

Writes are all or nothing, as in the local store. A blob of up to `multipart_threshold` bytes is
buffered and sent with one PutObject, which S3 makes visible only once complete. A larger one is
streamed as a multipart upload in parts of `multipart_threshold` bytes (one part in memory at a
time) to a staging key under `.uploads/`, because S3 fixes an object's metadata when the upload
starts, before its SHA-256 is known; once complete, a server-side copy puts it under its key with
its metadata, and the staging object is deleted. So a reader sees the whole new blob with its
SHA-256 or the old one, and an upload that fails (too large, a broken stream, a cancelled task)
is aborted and leaves nothing. `.uploads/` and `.probe/` can never clash with a key: a key's
segments never start with a dot. A crash between two steps can leave a staging object or an
unfinished upload behind: a bucket lifecycle rule expiring `.uploads/` and aborting incomplete
multipart uploads after a day clears them (see docs/operations.md); so does the garbage
collector, through `list_partials` and `discard_partial`.

Each blob keeps its SHA-256 in `x-amz-meta-sha256` and its content type in `Content-Type`; objects
written by other tools read back with an empty `sha256`. Listing costs one HeadObject per blob
(ListObjectsV2 returns neither), sent a few at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3
import structlog
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from atelier.core.blobs import BlobInfo, BlobTooLarge, PartialWrite, validate_key
from atelier.core.clock import Clock
from atelier.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # adapters import only core at run time; the settings type is for the reader
    from atelier.settings import StorageSettings

log = structlog.get_logger(__name__)

CHUNK = 64 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (but the last)
MAX_SIGNED_URL_LIFETIME = timedelta(days=7)  # the longest a SigV4 presigned URL may live
STAGING = ".uploads/"
PROBES = ".probe/"
_HEADS_AT_ONCE = 16
_MISSING = {"404", "NoSuchKey", "NotFound"}
_UPLOAD_ID = "?uploadId="


class S3BlobStore:
    def __init__(
        self,
        *,
        bucket: str,
        clock: Clock,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        path_style: bool = False,
        prefix: str = "",
        storage_class: str | None = None,
        multipart_threshold: int = 16 * 1024 * 1024,
        list_page_size: int = 1000,
    ) -> None:
        if multipart_threshold < MIN_PART_BYTES:
            raise ValueError(f"multipart_threshold must be at least {MIN_PART_BYTES} bytes")
        self.bucket = bucket
        self.clock = clock
        self.region = region
        # "atelier" and "atelier/" both mean the folder atelier/: keys never run into the prefix.
        folder = prefix.strip("/")
        self.prefix = f"{validate_key(folder)}/" if folder else ""
        self.storage_class = storage_class
        self.multipart_threshold = multipart_threshold
        self.list_page_size = list_page_size
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": 4},
            max_pool_connections=32,
            # boto3 1.36 started sending CRC checksum headers on every upload; several
            # S3-compatible stores refuse them. Send checksums only where the API requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: boto3's default session is shared and not thread-safe to build
        # clients from; the client itself is safe to call from several threads.
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._copy_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_threshold,
            max_concurrency=8,
        )

    @classmethod
    def from_settings(cls, storage: StorageSettings, *, clock: Clock) -> S3BlobStore:
        if not storage.s3_bucket:
            raise ValueError("The S3 blob store needs a bucket (ATELIER_STORAGE__S3_BUCKET)")
        secret = storage.s3_secret_access_key
        return cls(
            bucket=storage.s3_bucket,
            clock=clock,
            endpoint_url=storage.s3_endpoint_url,
            region=storage.s3_region,
            access_key_id=storage.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            path_style=storage.s3_path_style,
            prefix=storage.s3_prefix,
            storage_class=storage.s3_storage_class,
            multipart_threshold=storage.s3_multipart_threshold_bytes,
        )

    def _wire(self, key: str) -> str:
        """The object name of a (validated) key."""
        return self.prefix + validate_key(key)

    # ---- writing -------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int
    ) -> BlobInfo:
        wire = self._wire(key)
        digest, size = hashlib.sha256(), 0
        part = bytearray()
        upload: _StagedUpload | None = None
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(
                        f"The file is larger than the limit of {max_bytes} bytes",
                        limit=max_bytes,
                    )
                digest.update(chunk)
                rest = memoryview(chunk)
                while rest:
                    # A full part is sent only once more data comes, so a blob of exactly
                    # the threshold still goes in one PutObject.
                    if len(part) == self.multipart_threshold:
                        if upload is None:
                            upload = await self._start_upload()
                        await upload.send(part)
                        part = bytearray()
                    room = self.multipart_threshold - len(part)
                    part += rest[:room]
                    rest = rest[room:]
            info = BlobInfo(key, size, digest.hexdigest(), content_type)
            attributes = self._attributes(info)
            if upload is None:
                await asyncio.to_thread(
                    self.client.put_object, Bucket=self.bucket, Key=wire, Body=part, **attributes
                )
            else:
                await upload.send(part)
                await upload.publish(wire, attributes, self._copy_config)
        except BaseException:
            if upload is not None:
                await upload.discard()
            raise
        return info

    async def _start_upload(self) -> _StagedUpload:
        # Staging objects stay in the default storage class: infrequent-access classes bill a
        # minimum of 30 days for an object that lives a few seconds.
        staging_key = f"{self.prefix}{STAGING}{uuid.uuid4().hex}"
        response = await asyncio.to_thread(
            self.client.create_multipart_upload, Bucket=self.bucket, Key=staging_key
        )
        return _StagedUpload(self.client, self.bucket, staging_key, response["UploadId"])

    def _attributes(self, info: BlobInfo) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "ContentType": info.content_type,
            "Metadata": {"sha256": info.sha256},
        }
        if self.storage_class:
            attributes["StorageClass"] = self.storage_class
        return attributes

    async def delete(self, key: str) -> None:
        # S3 answers a delete of a missing object with success.
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._wire(key))

    # ---- reading -------------------------------------------------------------------------

    async def stat(self, key: str) -> BlobInfo | None:
        validate_key(key)
        return await self._head(key)

    async def _head(self, key: str) -> BlobInfo | None:
        try:
            head = await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self.prefix + key
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise
        return BlobInfo(
            key,
            head["ContentLength"],
            head.get("Metadata", {}).get("sha256", ""),
            head.get("ContentType", "application/octet-stream"),
        )

    async def get(
        self, key: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        wire = self._wire(key)
        if end is not None and end <= start:
            if await self._head(key) is None:
                raise NotFound(f"No blob {key}")
            return
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": wire}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await asyncio.to_thread(self.client.get_object, **request)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING:
                raise NotFound(f"No blob {key}") from None
            if code == "InvalidRange":  # starts past the end: no bytes, as in the local store
                return
            raise
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK):
                yield chunk
        finally:
            body.close()

    async def list_keys(self, prefix: str) -> AsyncIterator[BlobInfo]:
        folder = prefix.rstrip("/")
        if folder:
            validate_key(folder)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + (f"{folder}/" if folder else ""),
            "MaxKeys": self.list_page_size,
        }
        while True:
            page = await asyncio.to_thread(self.client.list_objects_v2, **request)
            keys = [
                key
                for item in page.get("Contents", [])
                if _is_key(key := item["Key"].removeprefix(self.prefix))
            ]
            for i in range(0, len(keys), _HEADS_AT_ONCE):
                batch = keys[i : i + _HEADS_AT_ONCE]
                for info in await asyncio.gather(*(self._head(key) for key in batch)):
                    if info is not None:  # deleted since the listing
                        yield info
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    # ---- unfinished writes -----------------------------------------------------------------

    async def list_partials(self) -> AsyncIterator[PartialWrite]:
        """Multipart uploads never completed nor aborted (named `<staging key>?uploadId=<id>`,
        size 0: S3 lists parts only one upload at a time; `last_write` is when it began), then
        staging objects never copied to their key."""
        staging = self.prefix + STAGING
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": staging}
        while True:
            page = await asyncio.to_thread(self.client.list_multipart_uploads, **request)
            for upload in page.get("Uploads", []):
                name = upload["Key"].removeprefix(self.prefix) + _UPLOAD_ID + upload["UploadId"]
                yield PartialWrite(name, 0, upload["Initiated"])
            if not page.get("IsTruncated"):
                break
            request["KeyMarker"] = page["NextKeyMarker"]
            request["UploadIdMarker"] = page["NextUploadIdMarker"]
        request = {"Bucket": self.bucket, "Prefix": staging, "MaxKeys": self.list_page_size}
        while True:
            page = await asyncio.to_thread(self.client.list_objects_v2, **request)
            for item in page.get("Contents", []):
                name = item["Key"].removeprefix(self.prefix)
                yield PartialWrite(name, item["Size"], item["LastModified"])
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    async def discard_partial(self, partial: PartialWrite) -> None:
        name, _, upload_id = partial.name.partition(_UPLOAD_ID)
        if not name.startswith(STAGING):
            raise NotFound(f"No unfinished write {partial.name}")
        key = self.prefix + name
        try:
            if upload_id:
                await asyncio.to_thread(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
            else:
                await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) not in {"NoSuchUpload", *_MISSING}:
                raise

    # ---- signed URLs ---------------------------------------------------------------------

    async def signed_url(
        self, key: str, *, expires_in: timedelta, filename: str | None = None
    ) -> str:
        """A presigned GET URL, always answered as an attachment (as the local store's links).

        The object's stored Content-Type is served as is. S3 checks expiry against its own
        clock: the link is signed with this machine's time, not `self.clock`.
        """
        wire = self._wire(key)
        if not timedelta(seconds=1) <= expires_in <= MAX_SIGNED_URL_LIFETIME:
            raise ValueError("A presigned URL lives between 1 second and 7 days")
        seconds = int(expires_in.total_seconds())
        params = {
            "Bucket": self.bucket,
            "Key": wire,
            "ResponseContentDisposition": _content_disposition(filename or key.rsplit("/", 1)[-1]),
            "ResponseCacheControl": f"private, max-age={seconds}",
        }
        # Signing is local, but resolving credentials (an instance role) may need the network.
        return await asyncio.to_thread(
            self.client.generate_presigned_url, "get_object", Params=params, ExpiresIn=seconds
        )

    # ---- operations ----------------------------------------------------------------------

    async def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists; True if it was created."""
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING:
                raise
        else:
            return False
        request: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # us-east-1 refuses to be named as a location
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await asyncio.to_thread(self.client.create_bucket, **request)
        except ClientError as exc:
            if _error_code(exc) == "BucketAlreadyOwnedByYou":  # created meanwhile
                return False
            raise
        return True

    async def probe(self) -> None:
        """Write, read back and delete a tiny object under `.probe/`; raise if any step fails."""
        key = f"{self.prefix}{PROBES}{uuid.uuid4().hex}"
        payload = f"atelier storage probe {self.clock.now().isoformat()}".encode()
        await asyncio.to_thread(self.client.put_object, Bucket=self.bucket, Key=key, Body=payload)
        try:
            response = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=key)
            echoed = await asyncio.to_thread(_read_all, response["Body"])
            if echoed != payload:
                raise OSError(f"s3://{self.bucket}/{key} read back different bytes")
        finally:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)


@dataclass
class _StagedUpload:
    """A multipart upload to a staging key, published under the real key once complete."""

    client: Any
    bucket: str
    key: str
    upload_id: str
    parts: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, data: bytearray) -> None:
        number = len(self.parts) + 1
        response = await asyncio.to_thread(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})

    async def publish(
        self, key: str, attributes: dict[str, Any], copy_config: TransferConfig
    ) -> None:
        await asyncio.to_thread(
            self.client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        # boto3's managed copy: one UploadPartCopy per part, several at once, any size.
        await asyncio.to_thread(
            self.client.copy,
            CopySource={"Bucket": self.bucket, "Key": self.key},
            Bucket=self.bucket,
            Key=key,
            ExtraArgs={**attributes, "MetadataDirective": "REPLACE"},
            Config=copy_config,
        )
        try:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self.key)
        except ClientError as exc:  # the blob is in place; a lifecycle rule removes the rest
            log.warning("s3_staging_delete_failed", key=self.key, error=str(exc))

    async def discard(self) -> None:
        """Abort the upload and delete the staging object, whichever exists; never raises."""
        for operation, request in (
            (self.client.abort_multipart_upload, {"UploadId": self.upload_id}),
            (self.client.delete_object, {}),
        ):
            try:
                await asyncio.to_thread(operation, Bucket=self.bucket, Key=self.key, **request)
            except ClientError as exc:
                if _error_code(exc) not in {"NoSuchUpload", *_MISSING}:
                    log.warning("s3_upload_cleanup_failed", key=self.key, error=str(exc))


def _content_disposition(filename: str) -> str:
    """`attachment` with a filename any browser reads safely (RFC 6266 and RFC 8187)."""
    name = "".join(c for c in filename if c.isprintable()).replace("/", "_").replace("\\", "_")
    name = name or "download"
    fallback = "".join(c if c.isascii() and c != '"' else "_" for c in name)
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def _is_key(key: str) -> bool:
    """Whether a listed object name is one of ours (not staging, probe or foreign)."""
    try:
        validate_key(key)
    except InvalidInput:
        return False
    return True


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read_all(body: Any) -> bytes:
    with body:
        return body.read()
