"""Blob stores: a local folder (the embedded default) or an S3-compatible bucket.

`create_blob_store` picks one from the settings; the composition root calls it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier.adapters.blobs.local import LocalBlobStore
from atelier.core.blobs import BlobStore
from atelier.core.clock import Clock

if TYPE_CHECKING:  # adapters import only core at run time
    from atelier.settings import StorageSettings


def create_blob_store(storage: StorageSettings, *, secret: str, clock: Clock) -> BlobStore:
    """The store `storage.backend` names; `secret` signs the local store's download links."""
    if storage.backend == "s3":
        # boto3 is the optional `s3` extra: imported only when an S3 store is asked for.
        try:
            from atelier.adapters.blobs.s3 import S3BlobStore
        except ImportError as exc:
            raise RuntimeError(
                "ATELIER_STORAGE__BACKEND=s3 needs boto3: install atelier[s3]"
            ) from exc
        return S3BlobStore.from_settings(storage, clock=clock)
    return LocalBlobStore(storage.root, secret=secret, clock=clock)
