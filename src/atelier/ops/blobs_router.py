"""Downloads of the local blob store through expiring, HMAC-signed links (`/blobs/{token}`)."""

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from atelier.core.errors import NotFound
from atelier.core.routing import operation

router = APIRouter(tags=["ops"])


@router.get(
    "/blobs/{token}",
    response_class=FileResponse,
    summary="Download a file through a signed link",
    **operation("blob", "public"),
)
async def download(token: str, request: Request) -> FileResponse:
    """Range requests, an ETag (the SHA-256), and always as an attachment in a sandbox: user
    files are never rendered as active content on Atelier's origin."""
    store = request.app.state.blobs
    if not hasattr(store, "read_signed"):  # S3 links are presigned by the store itself
        raise NotFound("No such file")
    key, expires, filename = store.read_signed(token)
    info = await store.stat(key)
    if info is None:
        raise NotFound("This file no longer exists")
    remaining = max(0, int(expires - request.app.state.clock.now().timestamp()))
    return FileResponse(
        store.path_of(key),
        media_type=info.content_type,
        filename=filename or key.rsplit("/", 1)[-1],
        content_disposition_type="attachment",
        headers={
            "ETag": f'"{info.sha256}"',
            "Cache-Control": f"private, max-age={remaining}",
            "Content-Security-Policy": "sandbox",
        },
    )
