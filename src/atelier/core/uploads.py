"""Upload bodies read as they arrive: a raw body, or the one file of a multipart/form-data form.

Both are async iterators of chunks of at most `CHUNK_BYTES`, meant to go straight to
`BlobStore.put`: nothing is held whole in memory or spooled to a temporary file (Starlette's
`request.form()` spools every file). Limits are checked before anything is parsed past them
(P10): a declared Content-Length over the limit is refused at once, and every byte is counted
while it streams, so a body without a Content-Length is refused as soon as it passes the limit.
A client that goes away mid-body gives `UploadAborted`, never a crash.

Routes that take uploads are marked with `upload_route(...)`; `upload_limit(routers, ...)` gives
`BodyLimitMiddleware` the larger ceiling for them and the global one for everything else.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import (
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_HEADER_SIZE,
    MAX_BOUNDARY_LENGTH,
    MultipartParser,
    parse_options_header,
)
from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from atelier.core.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMediaType

CHUNK_BYTES = 64 * 1024
MAX_FIELDS = 16
MAX_FIELD_BYTES = 8 * 1024
# What a multipart body may carry besides the file: each part's headers (the parser allows
# DEFAULT_MAX_HEADER_COUNT lines of DEFAULT_MAX_HEADER_SIZE) and boundary lines.
_PART_OVERHEAD = DEFAULT_MAX_HEADER_COUNT * (DEFAULT_MAX_HEADER_SIZE + 2) + 2 * (
    MAX_BOUNDARY_LENGTH + 8
)
# Added to the upload limit in `upload_limit`, so that framing and a few small fields around a
# file of exactly the upload limit still fit under the middleware's ceiling.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024
UPLOAD_MARK = "x-atelier-upload"
_DEFAULT_MEDIA_TYPE = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


class UploadAborted(BadRequest):
    """The client went away before the body was complete; nothing it sent is kept."""

    status, slug, title = 400, "upload-aborted", "Upload aborted"


# ---- raw bodies ----------------------------------------------------------------------------


def raw_body(request: Request, *, max_bytes: int) -> AsyncIterator[bytes]:
    """The request body as chunks; PayloadTooLarge now if the declared length is over
    `max_bytes`, else as soon as the bytes received pass it."""
    _refuse_declared_length(request, max_bytes)
    return _limited(request.stream(), max_bytes)


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            if len(chunk) <= CHUNK_BYTES:
                if chunk:
                    yield chunk
                continue
            # One large message (an in-process client sends the body whole): pass it on in
            # pieces, so what follows never handles more than a chunk at a time.
            for start in range(0, len(chunk), CHUNK_BYTES):
                yield chunk[start : start + CHUNK_BYTES]
    except ClientDisconnect:
        raise UploadAborted("The connection closed before the upload was complete") from None


def _refuse_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)


def _too_large(limit: int, what: str = "request body") -> PayloadTooLarge:
    # The rest of the body is never read: closing the connection stops the client sending it.
    return PayloadTooLarge(
        f"The {what} is larger than the limit of {limit} bytes",
        limit=limit,
        headers={"Connection": "close"},
    )


@dataclass(frozen=True)
class Upload:
    """A file arriving, as a service takes it: its chunks, the name the client gave it (display
    only), and the byte limit."""

    chunks: AsyncIterable[bytes]
    filename: str
    max_bytes: int


# ---- multipart/form-data --------------------------------------------------------------------


class _Part(Enum):
    NONE = "none"
    FIELD = "field"
    FILE = "file"


class _File(Enum):
    AHEAD = "ahead"
    OPEN = "open"
    DONE = "done"


async def multipart_file(
    request: Request,
    *,
    field: str = "file",
    max_bytes: int,
    max_fields: int = MAX_FIELDS,
    max_field_bytes: int = MAX_FIELD_BYTES,
) -> MultipartUpload:
    """Read a multipart/form-data body up to the start of its one file (in `field`).

    The returned upload has the file's display name, declared type and the text fields sent
    before it; `chunks()` then streams the file. The whole body may hold at most `max_bytes`
    of file plus `max_fields` fields of `max_field_bytes` and their framing.
    """
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType(f"Send the file as multipart/form-data in the field {field!r}")
    boundary = params.get(b"boundary", b"")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise InvalidInput("The multipart/form-data Content-Type needs a valid boundary")
    max_body = max_bytes + max_fields * max_field_bytes + (max_fields + 2) * _PART_OVERHEAD
    _refuse_declared_length(request, max_body)
    upload = MultipartUpload(
        _limited(request.stream(), max_body),
        boundary,
        field=field,
        max_bytes=max_bytes,
        max_fields=max_fields,
        max_field_bytes=max_field_bytes,
    )
    await upload._read_to_file()
    return upload


class MultipartUpload:
    """The one file of a multipart/form-data body, and the text fields around it.

    `fields` holds the text fields sent before the file when the upload is returned; fields
    sent after it are added once `chunks()` has run to its end (send them first if the route
    needs them before storing the file). A second file, a part without a name, or a broken
    body is InvalidInput (422), raised from `chunks()` before its end, so the store never
    completes an object from a bad request.
    """

    def __init__(
        self,
        source: AsyncIterator[bytes],
        boundary: bytes,
        *,
        field: str,
        max_bytes: int,
        max_fields: int,
        max_field_bytes: int,
    ) -> None:
        self.filename = ""
        self.content_type = _DEFAULT_MEDIA_TYPE
        self.fields: dict[str, str] = {}
        self.size = 0
        self._source = source
        self._field = field
        self._max_bytes = max_bytes
        self._max_fields = max_fields
        self._max_field_bytes = max_field_bytes
        self._file = _File.AHEAD
        self._ended = False
        self._consumed = False
        self._pending: deque[bytes] = deque()
        self._part = _Part.NONE
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._field_name = ""
        self._field_value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; ends only once the whole body proved well formed."""
        if self._consumed:
            raise RuntimeError("the file of an upload can be read once")
        self._consumed = True
        while True:
            while self._pending:
                yield self._pending.popleft()
            if self._file is _File.DONE:
                break
            if not await self._advance():
                raise InvalidInput("The multipart body ended in the middle of the file")
        while not self._ended:
            if not await self._advance():
                raise InvalidInput("The multipart body ended without its closing boundary")

    # ---- feeding the parser ------------------------------------------------------------------

    async def _read_to_file(self) -> None:
        while self._file is _File.AHEAD and not self._ended:
            if not await self._advance():
                raise InvalidInput("The multipart body ended without its closing boundary")
        if self._file is _File.AHEAD:
            raise InvalidInput(f"No file in the form field {self._field!r}")

    async def _advance(self) -> bool:
        """Feed the parser the next chunk of the body; False once the body is over."""
        chunk = await anext(self._source, None)
        if chunk is None:
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidInput(f"The multipart body is malformed: {exc}") from None
        return True

    # ---- parser callbacks (synchronous; they only record what they saw) ----------------------

    def _on_part_begin(self) -> None:
        self._part = _Part.NONE
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidInput(
                "Each part needs a `Content-Disposition: form-data; name=...` header"
            )
        name = _decode(options[b"name"])
        if name != self._field and b"filename" not in options:
            if name in self.fields:
                raise InvalidInput(f"The form field {name!r} is sent twice")
            if len(self.fields) >= self._max_fields:
                raise InvalidInput(f"Send at most {self._max_fields} form fields")
            self._part, self._field_name, self._field_value = _Part.FIELD, name, bytearray()
            return
        if name != self._field:
            raise InvalidInput(f"Unexpected file in the form field {name!r}; use {self._field!r}")
        if self._file is not _File.AHEAD:
            raise InvalidInput("Send one file per request")
        self._part, self._file = _Part.FILE, _File.OPEN
        self.filename = safe_filename(_decode(options.get(b"filename", b"")))
        self.content_type = _media_type(self._headers.get(b"content-type", b""))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is _Part.FILE:
            self.size += end - start
            if self.size > self._max_bytes:
                raise _too_large(self._max_bytes, "file")
            if end > start:
                self._pending.append(data[start:end])
        elif self._part is _Part.FIELD:
            if len(self._field_value) + end - start > self._max_field_bytes:
                raise InvalidInput(
                    f"The form field {self._field_name!r} is longer than "
                    f"{self._max_field_bytes} bytes"
                )
            self._field_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._part is _Part.FILE:
            self._file = _File.DONE
        elif self._part is _Part.FIELD:
            try:
                self.fields[self._field_name] = self._field_value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"The form field {self._field_name!r} is not UTF-8") from None
        self._part = _Part.NONE

    def _on_end(self) -> None:
        self._ended = True


def _decode(value: bytes) -> str:
    """A header parameter as the browser sent it: UTF-8 in practice, Latin-1 by the RFCs."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _media_type(header: bytes) -> str:
    """The declared media type without parameters, or octet-stream if it is not one. It is
    the client's claim, never trusted to decide how a file is served."""
    media_type = _decode(header).split(";", 1)[0].strip().lower()
    return media_type if _MEDIA_TYPE.match(media_type) else _DEFAULT_MEDIA_TYPE


# ---- file names ----------------------------------------------------------------------------

_RESERVED = re.compile(r'[<>:"|?*]')
_SPACES = re.compile(r"\s+")
_DOTS = re.compile(r"\.{2,}")
MAX_FILENAME_LENGTH = 200
_MAX_EXTENSION_LENGTH = 16


def safe_filename(name: str, *, default: str = "file") -> str:
    """A display name from a client's file name: no directories, no control or invisible
    characters (bidi overrides included), no `..`, at most MAX_FILENAME_LENGTH characters with
    the extension kept. Only ever shown or offered as a download name: storage keys are
    generated by the server (P7)."""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = _SPACES.sub(" ", _RESERVED.sub("_", name))
    name = _DOTS.sub(".", name).strip(" .")
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= _MAX_EXTENSION_LENGTH:
            keep = MAX_FILENAME_LENGTH - len(extension) - 1
            name = f"{stem[:keep].rstrip(' .')}.{extension}"
        else:
            name = name[:MAX_FILENAME_LENGTH].rstrip(" .")
    return name or default


# ---- marking upload routes -------------------------------------------------------------------


def upload_route(operation: dict[str, Any] | None = None, *, field: str | None = "file") -> dict:
    """Route keyword arguments for an upload, on top of `core.routing.operation(...)`:
    `@router.post("", **upload_route(operation("dataset", "create")))`.

    The mark gives the route the upload ceiling in `upload_limit`. The request body is
    documented in OpenAPI (a multipart form with one binary `field`, or with `field=None` a raw
    binary body), since the route reads it itself instead of declaring FastAPI parameters.
    """
    kwargs = dict(operation or {})
    extra = dict(kwargs.get("openapi_extra") or {})
    extra[UPLOAD_MARK] = True
    if field is None:
        content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    else:
        schema = {
            "type": "object",
            "properties": {field: {"type": "string", "format": "binary"}},
            "required": [field],
        }
        content = {"multipart/form-data": {"schema": schema}}
    extra["requestBody"] = {"required": True, "content": content}
    kwargs["openapi_extra"] = extra
    return kwargs


def is_upload_route(route: BaseRoute) -> bool:
    return isinstance(route, APIRoute) and bool((route.openapi_extra or {}).get(UPLOAD_MARK))


def upload_limit(
    routers: Iterable[APIRouter], *, default: int, upload: int
) -> Callable[[Scope], int]:
    """A `limit_for(scope)` for `BodyLimitMiddleware`: `upload` (plus framing room) for a
    request to a route marked with `upload_route`, `default` for any other.

    `routers` are those the app includes, each carrying its full prefix (see `core.routing`);
    add `app.router` for routes declared on the app itself. The middleware runs before
    routing, so the marked routes are matched here on path and method. Each route still
    bounds its own file with the `max_bytes` it gives the readers above.
    """
    marked = [route for router in routers for route in router.routes if is_upload_route(route)]
    ceiling = upload + UPLOAD_OVERHEAD_BYTES

    def limit_for(scope: Scope) -> int:
        # Only what matching reads, so the request's own scope is left untouched.
        probe = {k: scope.get(k, "") for k in ("type", "path", "root_path", "method")}
        if any(route.matches(probe)[0] is Match.FULL for route in marked):
            return ceiling
        return default

    return limit_for
