"""The models API: models by name, their versions (registered from AutoML runs or uploaded),
stages, model cards and downloads."""

import shutil
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import InvalidInput
from atelier.core.pagination import Page, PageParams, PageRequest
from atelier.core.routing import API_PREFIX, operation
from atelier.core.uploads import Upload, multipart_file, raw_body, safe_filename, upload_route
from atelier.identity.deps import CurrentPrincipal
from atelier.registry import service, versions
from atelier.registry.schemas import FromRun, ModelDetail, ModelRead, StageChange, VersionRead

router = APIRouter(prefix=f"{API_PREFIX}/models", tags=["models"])

Name = Annotated[str, Path(max_length=100, description="The model's name.")]
Number = Annotated[int, Path(ge=1, le=1_000_000)]
MAX_JSON_BYTES = 64 * 1024


@router.get("", response_model=Page[ModelRead], **operation("model", "read"))
async def list_models(principal: CurrentPrincipal, session: DbSession, page: PageParams):
    """The organization's models, most recently changed first."""
    found = await service.list_models(session, principal, page)
    production = await service.production_versions(session, principal, [m.id for m in found.items])
    return found.map(lambda m: _model(m, production.get(m.id)))


@router.get("/{name}", response_model=ModelDetail, **operation("model", "read"))
async def get_model(name: Name, principal: CurrentPrincipal, session: DbSession):
    """A model and its newest versions."""
    model = await service.get_model(session, principal, name)
    versions = await service.list_versions(session, principal, name, PageRequest())
    production = await service.production_versions(session, principal, [model.id])
    return ModelDetail(
        **_model(model, production.get(model.id)).model_dump(),
        versions=[VersionRead.model_validate(v) for v in versions.items],
    )


@router.get("/{name}/versions", response_model=Page[VersionRead], **operation("model", "read"))
async def list_versions(
    name: Name, principal: CurrentPrincipal, session: DbSession, page: PageParams
):
    """A model's versions, newest first."""
    found = await service.list_versions(session, principal, name, page)
    return found.map(VersionRead.model_validate)


_NEW_VERSION = upload_route(operation("model", "create"))
_NEW_VERSION["openapi_extra"]["requestBody"]["content"]["application/json"] = {
    "schema": FromRun.model_json_schema()
}


@router.post("/{name}/versions", status_code=201, response_model=VersionRead, **_NEW_VERSION)
async def create_version(
    name: Name,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
):
    """A new version of the model (the model is created with its first version).

    - `application/json` `{"run_id": ...}`: the model of a finished AutoML run, with its
      lineage, report and (where it converts) an ONNX export.
    - `multipart/form-data` (optional `description` field first, then `file`): an ONNX model
      or a skops file. Pickle, joblib and cloudpickle files are refused (415): loading one
      runs arbitrary code. A skops file holding types outside the allow-list is refused (422)
      without being loaded.
    """
    principal.require_role("member")
    state = request.app.state
    versions.check_name(name)
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        body = await _json_body(request)
        version = await versions.register_run(
            session,
            state.blobs,
            principal,
            name,
            body.run_id,
            description=body.description,
            settings=state.settings,
            clock=clock,
            info=info,
        )
    else:
        max_bytes = state.settings.http.max_upload_bytes
        upload = await multipart_file(request, max_bytes=max_bytes)
        version = await versions.upload_version(
            session,
            state.blobs,
            principal,
            name,
            Upload(upload.chunks(), safe_filename(upload.filename, default="model"), max_bytes),
            description=upload.fields.get("description"),
            settings=state.settings,
            clock=clock,
            info=info,
        )
    response.headers["Location"] = f"{API_PREFIX}/models/{name}/versions/{version.number}"
    return VersionRead.model_validate(version)


async def _json_body(request: Request) -> FromRun:
    data = b"".join([chunk async for chunk in raw_body(request, max_bytes=MAX_JSON_BYTES)])
    try:
        return FromRun.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidInput(
            "The body is not a valid registration",
            errors=[
                {"pointer": "/" + "/".join(str(p) for p in e["loc"]), "detail": e["msg"]}
                for e in exc.errors()
            ],
        ) from None


@router.get("/{name}/versions/{number}", response_model=VersionRead, **operation("model", "read"))
async def get_version(name: Name, number: Number, principal: CurrentPrincipal, session: DbSession):
    return VersionRead.model_validate(await service.get_version(session, principal, name, number))


async def _existing_version(
    name: Name, number: Number, principal: CurrentPrincipal, session: DbSession
) -> None:
    """404 for a version that does not exist (or is another organization's) before the body
    is even validated."""
    await service.get_version(session, principal, name, number)


@router.patch(
    "/{name}/versions/{number}",
    response_model=VersionRead,
    dependencies=[Depends(_existing_version)],
    **operation("model", "update"),
)
async def change_stage(
    name: Name,
    number: Number,
    body: StageChange,
    principal: CurrentPrincipal,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
):
    """Move a version to a stage; promoting to `production` archives the previous production
    version. Audited."""
    version = await service.set_stage(
        session, principal, name, number, body.stage, clock=clock, info=info
    )
    return VersionRead.model_validate(version)


@router.delete("/{name}/versions/{number}", status_code=204, **operation("model", "delete"))
async def delete_version(
    name: Name,
    number: Number,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    info: ClientInfo,
) -> Response:
    """Delete a version and its files (not the production version: 409)."""
    await service.delete_version(
        session, request.app.state.blobs, principal, name, number, info=info
    )
    return Response(status_code=204)


@router.get(
    "/{name}/versions/{number}/card",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
    **operation("model", "read"),
)
async def get_card(name: Name, number: Number, principal: CurrentPrincipal, session: DbSession):
    """The version's model card, as Markdown."""
    version = await service.get_version(session, principal, name, number)
    return PlainTextResponse(
        service.card_of(name, version), media_type="text/markdown; charset=utf-8"
    )


@router.get(
    "/{name}/versions/{number}/download",
    status_code=307,
    response_class=RedirectResponse,
    **operation("model", "read"),
)
async def download(
    name: Name, number: Number, request: Request, principal: CurrentPrincipal, session: DbSession
) -> RedirectResponse:
    """A redirect to a short-lived link to the version's zip: the model file, signature.json,
    lineage.json, MODEL_CARD.md (and model.onnx, the report, for an AutoML version)."""
    url = await service.download_link(session, request.app.state.blobs, principal, name, number)
    return RedirectResponse(url, status_code=307)


@router.get(
    "/{name}/versions/{number}/export",
    response_class=FileResponse,
    dependencies=[Depends(_existing_version)],
    responses={200: {"content": {"application/zip": {}}}},
    **operation("model", "read"),
)
async def export(
    name: Name,
    number: Number,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    format: Annotated[Literal["mlflow"], Query(description="`mlflow`: a pyfunc model.")] = "mlflow",
) -> FileResponse:
    """The version in another tool's format, as a zip. `mlflow`: an MLflow pyfunc model
    folder (`mlflow.pyfunc.load_model` on the unzipped folder; it needs `atelier[ml]`
    installed, and holds no pickle)."""
    state = request.app.state
    root = state.settings.data_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    work = FilePath(tempfile.mkdtemp(prefix="export-", dir=root))
    try:
        archive = await service.export_mlflow(
            session, state.blobs, principal, name, number, settings=state.settings, into=work
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=archive.name,
        background=BackgroundTask(shutil.rmtree, work, True),
    )


def _model(model, production: int | None) -> ModelRead:
    return ModelRead.model_validate(model).model_copy(update={"production_version": production})
