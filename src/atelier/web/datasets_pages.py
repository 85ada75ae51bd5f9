"""Pages of datasets: the list with an upload form, a version's profile with a chart per column,
new versions and downloads. Same services as the API (`datasets.service`).

An upload is a multipart form posted with the session cookie; its CSRF token is a form field
sent before the file and checked before the file is read. The file streams from the request to
the service's upload path (`core.uploads`), never held whole. `static/js/upload.js` posts the
form with XMLHttpRequest to show a progress bar and asks for JSON (the dataset's address, or
the problem document); without JavaScript the same form gets a redirect, or the page again with
the problem's detail.

The AutoML pages (`web.automl_pages`), which come after datasets, share this module's page
rendering (`render_page`), its formatters for numbers, sizes and times in the reader's language,
and its page size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from babel.dates import format_datetime
from babel.numbers import format_decimal, format_percent
from babel.units import format_unit
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from atelier.core.deps import AppClock, ClientInfo, DbSession
from atelier.core.errors import AtelierError
from atelier.core.pagination import PageRequest
from atelier.core.problems import prefers_html
from atelier.core.uploads import Upload, multipart_file, safe_filename, upload_route
from atelier.datasets import service as datasets
from atelier.identity.orgs import memberships_of
from atelier.identity.web_sessions import WebUser
from atelier.web import auth

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

PAGE_SIZE = 20
DatasetId = Annotated[str, Path(max_length=40)]
Number = Annotated[int, Path(ge=1, le=1_000_000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
HISTOGRAM_KINDS = ("numeric", "integer", "datetime")


# ---- formatting for people -------------------------------------------------------------------


def format_number(value: Any, lang: str) -> str:
    """A count or statistic in the reader's language: grouped digits, at most four decimals
    below 1, three below 1000, none above; scientific notation for tiny values."""
    if value is None or isinstance(value, str):
        return "—" if value is None else value
    if isinstance(value, bool | int):
        return format_decimal(int(value), locale=lang)
    if not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        pattern = "#,##0"
    elif magnitude >= 1 or magnitude == 0:
        pattern = "#,##0.###"
    elif magnitude >= 0.0001:
        pattern = "0.####"
    else:
        pattern = "0.###E0"
    return format_decimal(value, format=pattern, locale=lang)


def formatters(lang: str) -> dict[str, Any]:
    """Template helpers that write numbers, shares, sizes and times in the reader's language."""
    return {
        "number": partial(format_number, lang=lang),
        "percent": lambda value: format_percent(value or 0, format="#,##0.#%", locale=lang),
        "size": partial(_size, lang=lang),
        "when": lambda value: (
            format_datetime(value, "short", tzinfo=UTC, locale=lang)
            if isinstance(value, datetime)
            else "—"
        ),
    }


def _size(value: int, lang: str) -> str:
    for unit, scale in (("gigabyte", 1e9), ("megabyte", 1e6), ("kilobyte", 1e3)):
        if value >= scale:
            return format_unit(
                value / scale, f"digital-{unit}", length="short", format="#,##0.#", locale=lang
            )
    return format_unit(value, "digital-byte", length="short", locale=lang)


# ---- charts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # what the bar counts: the tooltip, and what a screen reader says
    label: str = ""  # top values: the value, written left of its bar
    count: str = ""  # top values: the count, written right of its bar


@dataclass(frozen=True)
class Chart:
    """An inline SVG drawn by `datasets/_chart.html`: bars only, no script, no external asset."""

    kind: Literal["histogram", "top"]
    width: int
    height: int
    bars: tuple[Bar, ...]


HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT = 240, 64
TOP_WIDTH, TOP_ROW, TOP_LABEL, TOP_BAR = 320, 16, 120, 150
LABEL_CHARS = 18


def chart_of(column: dict[str, Any], lang: str) -> Chart | None:
    """A histogram for numbers and dates, the most frequent values for the rest; None when a
    chart would say nothing (an identifier, no values)."""
    histogram = column.get("histogram")
    if column["kind"] in HISTOGRAM_KINDS and histogram:
        return _histogram(histogram, lang, dates=column["kind"] == "datetime")
    if column["kind"] == "identifier" or not column.get("top"):
        return None
    return _top_values(column["top"], lang)


def _histogram(histogram: dict[str, list], lang: str, *, dates: bool) -> Chart:
    counts, edges = histogram["counts"], histogram["edges"]
    tallest = max(counts) or 1
    slot = HISTOGRAM_WIDTH / len(counts)
    show = _date if dates else partial(format_number, lang=lang)
    bars = []
    for index, count in enumerate(counts):
        height = round(count / tallest * (HISTOGRAM_HEIGHT - 2), 2)
        span = f"{show(edges[index])} – {show(edges[index + 1])}"
        bars.append(
            Bar(
                x=round(index * slot, 2),
                y=round(HISTOGRAM_HEIGHT - height, 2),
                width=round(slot - 1, 2),
                height=height,
                title=f"{span}: {format_number(count, lang)}",
            )
        )
    return Chart("histogram", HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT, tuple(bars))


def _top_values(top: list[dict[str, Any]], lang: str) -> Chart:
    most = max(item["count"] for item in top) or 1
    bars = []
    for row, item in enumerate(top):
        value = str(item["value"])
        label = value if len(value) <= LABEL_CHARS else value[: LABEL_CHARS - 1] + "…"
        count = format_number(item["count"], lang)
        bars.append(
            Bar(
                x=TOP_LABEL,
                y=row * TOP_ROW + 2,
                width=max(round(item["count"] / most * TOP_BAR, 2), 1),
                height=TOP_ROW - 4,
                title=f"{value}: {count}",
                label=label,
                count=count,
            )
        )
    return Chart("top", TOP_WIDTH, len(top) * TOP_ROW, tuple(bars))


def _date(edge: str) -> str:
    """An ISO edge of a date histogram without the time when it is midnight."""
    text = edge.replace("T", " ")[:19]
    return text.removesuffix(" 00:00:00")


# ---- pages -----------------------------------------------------------------------------------


async def render_page(
    request: Request,
    session: AsyncSession,
    web_user: WebUser,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """A page of the ML pages: the signed-in user, what they may do, and the formatters in the
    reader's language, beside the page's own context."""
    renderer = request.app.state.renderer
    return renderer.render(
        request,
        name,
        {
            "web_user": web_user,
            "memberships": await memberships_of(session, web_user.user.id),
            "can_write": web_user.principal.role != "viewer",
            **formatters(renderer.language(request)),
            **context,
        },
        status_code=status_code,
    )


async def reload_user(session: AsyncSession, web_user: WebUser) -> None:
    """Read the signed-in user again after a failed unit of work, before showing a page: the
    rollback expired every object the session held, and pages show the user's name."""
    await session.refresh(web_user.user)


@router.get("/datasets")
async def datasets_page(
    request: Request, session: DbSession, web_user: auth.SignedIn, offset: Offset = 0
) -> Response:
    return await _list_page(request, session, web_user, offset=offset)


async def _list_page(
    request: Request,
    session: AsyncSession,
    web_user: WebUser,
    *,
    offset: int = 0,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    page = await datasets.list_datasets(
        session, web_user.principal, PageRequest(limit=PAGE_SIZE, offset=offset)
    )
    context = {"page": page, **extra}
    return await render_page(
        request, session, web_user, "datasets/list.html", context, status_code=status_code
    )


@router.post("/datasets", **upload_route())
async def upload_dataset(
    request: Request,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    web_user: auth.SignedIn,
) -> Response:
    """A new dataset from the upload form (fields `csrf_token`, then `name`, then `file`)."""
    state = request.app.state
    fields: dict[str, str] = {}
    try:
        upload, fields = await _upload(request)
        version = await datasets.create_dataset(
            session,
            state.blobs,
            web_user.principal,
            upload,
            name=fields.get("name") or None,
            description=None,
            settings=state.settings,
            clock=clock,
            info=info,
        )
    except AtelierError as exc:
        if not prefers_html(request):
            raise
        await reload_user(session, web_user)
        page = await _list_page(
            request,
            session,
            web_user,
            status_code=exc.status,
            error=exc.detail,
            name=fields.get("name", ""),
        )
        page.headers.update(exc.headers)
        return page
    return _uploaded(request, f"/datasets/{version.dataset_id}")


@router.post("/datasets/{dataset_id}/versions", **upload_route())
async def upload_version(
    dataset_id: DatasetId,
    request: Request,
    session: DbSession,
    clock: AppClock,
    info: ClientInfo,
    web_user: auth.SignedIn,
) -> Response:
    """The next version of a dataset from the form on its page."""
    state = request.app.state
    await datasets.get_dataset(session, web_user.principal, dataset_id)  # 404 before the body
    try:
        upload, _ = await _upload(request)
        version = await datasets.add_version(
            session,
            state.blobs,
            web_user.principal,
            dataset_id,
            upload,
            settings=state.settings,
            clock=clock,
            info=info,
        )
    except AtelierError as exc:
        if not prefers_html(request):
            raise
        await reload_user(session, web_user)
        page = await _profile_page(
            request, session, web_user, dataset_id, None, status_code=exc.status, error=exc.detail
        )
        page.headers.update(exc.headers)
        return page
    return _uploaded(request, f"/datasets/{dataset_id}/versions/{version.number}")


async def _upload(request: Request) -> tuple[Upload, dict[str, str]]:
    """The form's fields up to its file, CSRF checked, and the file as a stream."""
    max_bytes = request.app.state.settings.http.max_upload_bytes
    upload = await multipart_file(request, max_bytes=max_bytes)
    auth.verify_csrf(request, upload.fields.get(auth.CSRF_FIELD))
    filename = safe_filename(upload.filename, default="data")
    return Upload(upload.chunks(), filename, max_bytes), upload.fields


def _uploaded(request: Request, location: str) -> Response:
    """Where the new version is: a redirect for a plain form, JSON for the script."""
    if prefers_html(request):
        return RedirectResponse(location, status_code=303)
    return JSONResponse({"location": location}, status_code=201)


@router.get("/datasets/{dataset_id}")
async def dataset_page(
    dataset_id: DatasetId, request: Request, session: DbSession, web_user: auth.SignedIn
) -> Response:
    """The latest version's profile."""
    return await _profile_page(request, session, web_user, dataset_id, None)


@router.get("/datasets/{dataset_id}/versions/{number}")
async def version_page(
    dataset_id: DatasetId,
    number: Number,
    request: Request,
    session: DbSession,
    web_user: auth.SignedIn,
) -> Response:
    return await _profile_page(request, session, web_user, dataset_id, number)


async def _profile_page(
    request: Request,
    session: AsyncSession,
    web_user: WebUser,
    dataset_id: str,
    number: int | None,
    *,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    principal = web_user.principal
    dataset = await datasets.get_dataset(session, principal, dataset_id)
    versions = await datasets.list_versions(session, principal, dataset_id)
    version = await datasets.get_version(
        session, principal, dataset_id, number or dataset.latest_version
    )
    lang = request.app.state.renderer.language(request)
    columns = [
        {**column, "chart": chart_of(column, lang)} for column in version.profile["columns_profile"]
    ]
    context = {
        "dataset": dataset,
        "versions": versions,
        "dataset_version": version,  # not "version": the pages show Atelier's as that
        "profile": version.profile,
        "columns": columns,
        **extra,
    }
    return await render_page(
        request, session, web_user, "datasets/profile.html", context, status_code=status_code
    )


@router.post("/datasets/{dataset_id}/delete")
async def delete_dataset(
    dataset_id: DatasetId,
    request: Request,
    session: DbSession,
    info: ClientInfo,
    web_user: auth.SignedInForm,
) -> Response:
    """The dataset, its versions and their files (audited); back to the list."""
    await datasets.delete_dataset(
        session, request.app.state.blobs, web_user.principal, dataset_id, info=info
    )
    return RedirectResponse("/datasets", status_code=303)


@router.get("/datasets/{dataset_id}/versions/{number}/download")
async def download(
    dataset_id: DatasetId,
    number: Number,
    request: Request,
    session: DbSession,
    web_user: auth.SignedIn,
    file: Literal["original", "parquet"] = "original",
) -> RedirectResponse:
    """To a short-lived link of the file as sent, or of its Parquet copy."""
    url = await datasets.download_link(
        session, request.app.state.blobs, web_user.principal, dataset_id, number, file
    )
    return RedirectResponse(url, status_code=303)
