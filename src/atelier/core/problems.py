"""RFC 9457 problem documents: the one shape every HTTP error takes.

`install(app)` registers the handlers: domain errors (`AtelierError`), Starlette's HTTP errors
(unknown route, wrong method), and request validation (422 with a field-level `errors` list).
A database that cannot be reached (`core.db.is_transient`) is a 503
`database-unavailable` with `Retry-After`, logged as one warning line. Other unexpected
exceptions are turned into a bare 500 by `core.middleware.RequestContextMiddleware`, which logs
them with the request id. A browser asking for a page outside `/api/` gets the same
error as an HTML page in its language, when the app provides one.

`document_problems(schema, statuses)` declares these responses in the OpenAPI document, with
the `Problem` schema in place of FastAPI's validation error (which is never sent).
"""

import json
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from atelier.core.db import is_transient
from atelier.core.errors import AtelierError, DatabaseUnavailable
from atelier.core.routing import API_PREFIX

log = structlog.get_logger("atelier.http")

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"

# Slugs for HTTP statuses raised by the framework itself rather than by Atelier code.
_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    500: "internal-error",
    503: "service-unavailable",
}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    status: int,
    *,
    slug: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """Build a problem response; `extra` members must not shadow the standard ones."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + (slug or _SLUGS.get(status, str(status))),
        "title": title or phrase,
        "status": status,
        "detail": detail or title or phrase,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if k not in body})
    return ProblemResponse(body, status_code=status, headers=headers)


async def _atelier_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, AtelierError)
    return problem(
        exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


# What a failure to reach the database is raised as: SQLAlchemy's errors, and the driver's own
# socket errors when a new connection is refused, times out or its host name does not resolve
# (asyncpg's are not wrapped). `is_transient` tells an outage from a statement the database
# refused, which stays a 500.
_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    SQLAlchemyError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)
DATABASE_RETRY_AFTER = 5  # seconds


async def _database_error(request: Request, exc: Exception) -> ProblemResponse:
    if not is_transient(exc):
        raise exc  # a bug: the bare 500, with its traceback logged
    cause = exc.orig if isinstance(exc, DBAPIError) else None
    # One line without the message, which may hold the statement or the server's address.
    log.warning(
        "database_unavailable",
        error=type(exc).__name__,
        cause=type(cause).__name__ if cause is not None else None,
    )
    unavailable = DatabaseUnavailable(
        "The database cannot be reached right now. Try again in a few seconds.",
        retry_after=DATABASE_RETRY_AFTER,
    )
    return await _atelier_error(request, unavailable)


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(exc.status_code, detail=detail, instance=request.url.path, headers=exc.headers)


def _pointer(loc: tuple[Any, ...]) -> str:
    """A JSON pointer for a validation location: ("body", "items", 0) -> "/body/items/0"."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts)


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"pointer": _pointer(tuple(e["loc"])), "detail": e["msg"]} for e in exc.errors()]
    count = len(errors)
    return problem(
        422,
        slug="validation-error",
        title="Invalid input",
        detail=f"{count} field{'s' if count != 1 else ''} failed validation",
        instance=request.url.path,
        errors=errors,
    )


def prefers_html(request: Request) -> bool:
    """A browser navigating to a page (not the API) is shown an HTML error page instead."""
    if request.url.path.startswith(API_PREFIX + "/"):
        return False
    return "text/html" in request.headers.get("accept", "")


HtmlPage = Callable[[Request, int], Response]
Handler = Callable[[Request, Exception], Awaitable[Response]]
_KEPT_HEADERS = ("allow", "retry-after")


def install(app: FastAPI, *, html_page: HtmlPage | None = None) -> None:
    """Register the handlers; `html_page(request, status)` renders errors for browsers."""

    def negotiated(handler: Handler) -> Handler:
        async def handle(request: Request, exc: Exception) -> Response:
            response = await handler(request, exc)
            if html_page is None or not prefers_html(request):
                return response
            page = html_page(request, response.status_code)
            for name in _KEPT_HEADERS:
                if name in response.headers:
                    page.headers[name] = response.headers[name]
            return page

        return handle

    app.add_exception_handler(AtelierError, negotiated(_atelier_error))
    app.add_exception_handler(StarletteHTTPException, negotiated(_http_error))
    app.add_exception_handler(RequestValidationError, negotiated(_validation_error))
    for error in _DATABASE_ERRORS:
        app.add_exception_handler(error, negotiated(_database_error))


# ---- OpenAPI ---------------------------------------------------------------------------------

_REF = "#/components/schemas/"
# FastAPI's own 422 body, which our handler never sends.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "title": "Problem",
        "description": "An RFC 9457 problem document. Some problems add members of their own "
        "(`limit`, `retry_after`, `request_id`...).",
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "description": "`/problems/<slug>`: what went wrong."},
            "title": {"type": "string", "description": "A short summary of the type."},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "This occurrence, for a person."},
            "instance": {"type": "string", "description": "The path that was requested."},
            "errors": {
                "type": "array",
                "description": "Validation errors, one per field.",
                "items": {"$ref": _REF + "ProblemError"},
            },
        },
        "additionalProperties": True,
    },
    "ProblemError": {
        "title": "ProblemError",
        "type": "object",
        "required": ["pointer", "detail"],
        "properties": {
            "pointer": {"type": "string", "description": "JSON pointer: `/body/name`."},
            "detail": {"type": "string"},
        },
    },
}


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """An OpenAPI response object for a problem with `status`."""
    content = {MEDIA_TYPE: {"schema": {"$ref": _REF + "Problem"}}}
    return {"description": description or HTTPStatus(status).phrase, "content": content}


Statuses = Callable[[str, str, dict[str, Any]], set[int]]


def document_problems(schema: dict[str, Any], statuses: Statuses) -> None:
    """Declare in an OpenAPI `schema` the problem responses of each operation: those
    `statuses(path, METHOD, operation)` names and any error status it declares already (its
    description is kept), all as `application/problem+json` documents of `Problem`."""
    schema.setdefault("components", {}).setdefault("schemas", {}).update(OPENAPI_SCHEMAS)
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
            for status in sorted(declared | statuses(path, method.upper(), operation)):
                description = responses.get(str(status), {}).get("description")
                if description == "Validation Error":  # FastAPI's
                    description = None
                responses[str(status)] = problem_response(status, description)
    components = schema["components"]["schemas"]
    for name in _FASTAPI_VALIDATION_SCHEMAS:  # in this order: the first refers to the second
        if name in components and f'"{_REF}{name}"' not in json.dumps(schema):
            del components[name]
