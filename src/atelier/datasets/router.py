"""The datasets API: upload a table (a new dataset or a new version), list, read its profile,
download it, delete it."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.pagination import Page, PageParams
from atelier.core.routing import API_PREFIX, operation
from atelier.core.uploads import Upload, multipart_file, safe_filename, upload_route
from atelier.datasets import service
from atelier.datasets.schemas import DatasetDetail, DatasetRead, UploadResult, VersionRead
from atelier.identity.deps import CurrentPrincipal

router = APIRouter(prefix=f"{API_PREFIX}/datasets", tags=["datasets"])

DatasetId = Annotated[str, Path(max_length=40)]
Number = Annotated[int, Path(ge=1, le=1_000_000)]


async def _upload(request: Request) -> tuple[service.Upload, dict[str, str]]:
    max_bytes = request.app.state.settings.http.max_upload_bytes
    upload = await multipart_file(request, max_bytes=max_bytes)
    filename = safe_filename(upload.filename, default="data")
    return Upload(upload.chunks(), filename, max_bytes), upload.fields


@router.post(
    "",
    status_code=201,
    response_model=UploadResult,
    **upload_route(operation("dataset", "create")),
)
async def create_dataset(
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
):
    """Upload a table as a new dataset (multipart: the optional text fields `name`, default
    the file's name, and `description` first, then `file`).

    CSV/TSV, JSON (an array of records), JSON Lines, Parquet or .xlsx, detected from the
    content. The answer carries version 1 with its detected format and schema.
    """
    principal.require_role("member")
    upload, fields = await _upload(request)
    state = request.app.state
    version = await service.create_dataset(
        session,
        state.blobs,
        principal,
        upload,
        name=fields.get("name"),
        description=fields.get("description"),
        settings=state.settings,
        clock=clock,
        info=info,
    )
    return _result(await service.get_dataset(session, principal, version.dataset_id), version)


@router.get("", response_model=Page[DatasetRead], **operation("dataset", "read"))
async def list_datasets(principal: CurrentPrincipal, session: DbSession, page: PageParams):
    """The organization's datasets, most recently changed first."""
    found = await service.list_datasets(session, principal, page)
    return found.map(DatasetRead.model_validate)


@router.get("/{dataset_id}", response_model=DatasetDetail, **operation("dataset", "read"))
async def get_dataset(dataset_id: DatasetId, principal: CurrentPrincipal, session: DbSession):
    """A dataset and its versions, newest first."""
    dataset = await service.get_dataset(session, principal, dataset_id)
    versions = await service.list_versions(session, principal, dataset_id)
    return DatasetDetail(
        **DatasetRead.model_validate(dataset).model_dump(),
        versions=[VersionRead.of(v) for v in versions],
    )


@router.delete("/{dataset_id}", status_code=204, **operation("dataset", "delete"))
async def delete_dataset(
    dataset_id: DatasetId,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    info: ClientInfo,
) -> Response:
    """Delete the dataset, its versions and their files (the storage is released at once)."""
    await service.delete_dataset(session, request.app.state.blobs, principal, dataset_id, info=info)
    return Response(status_code=204)


@router.post(
    "/{dataset_id}/versions",
    status_code=201,
    response_model=UploadResult,
    **upload_route(operation("dataset", "update")),
)
async def add_version(
    dataset_id: DatasetId,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
):
    """Upload the next version of a dataset; its `schema_diff` compares it with the previous."""
    principal.require_role("member")
    await service.get_dataset(session, principal, dataset_id)  # 404 before the body is read
    upload, _ = await _upload(request)
    state = request.app.state
    version = await service.add_version(
        session,
        state.blobs,
        principal,
        dataset_id,
        upload,
        settings=state.settings,
        clock=clock,
        info=info,
    )
    return _result(await service.get_dataset(session, principal, dataset_id), version)


@router.get(
    "/{dataset_id}/versions/{number}",
    response_model=VersionRead,
    **operation("dataset", "read"),
)
async def get_version(
    dataset_id: DatasetId, number: Number, principal: CurrentPrincipal, session: DbSession
):
    return VersionRead.of(await service.get_version(session, principal, dataset_id, number))


@router.get("/{dataset_id}/versions/{number}/profile", **operation("dataset", "read"))
async def get_profile(
    dataset_id: DatasetId, number: Number, principal: CurrentPrincipal, session: DbSession
) -> dict[str, Any]:
    """Per column: kind, role, missing and distinct counts, statistics, histogram, top values."""
    version = await service.get_version(session, principal, dataset_id, number)
    return version.profile


@router.get(
    "/{dataset_id}/versions/{number}/download",
    status_code=307,
    response_class=RedirectResponse,
    **operation("dataset", "read"),
)
async def download(
    dataset_id: DatasetId,
    number: Number,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    file: Annotated[
        Literal["original", "parquet"],
        Query(description="`original`: the file as uploaded; `parquet`: the canonical copy."),
    ] = "original",
) -> RedirectResponse:
    """A redirect to a short-lived download link of the file."""
    url = await service.download_link(
        session, request.app.state.blobs, principal, dataset_id, number, file
    )
    return RedirectResponse(url, status_code=307)


def _result(dataset: Any, version: Any) -> UploadResult:
    return UploadResult(
        dataset=DatasetRead.model_validate(dataset), version=VersionRead.of(version)
    )
