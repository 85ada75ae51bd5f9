"""Domain errors. Each carries the HTTP status it maps to; `core.problems` renders them all as
RFC 9457 problem documents. Services raise these and never import anything from HTTP."""

from typing import Any, ClassVar


class AtelierError(Exception):
    """Base of every expected error. Extra keyword arguments become members of the problem."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class BadRequest(AtelierError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(AtelierError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class QuotaExceeded(AtelierError):
    status, slug, title = 402, "quota-exceeded", "Plan limit reached"


class Forbidden(AtelierError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(AtelierError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(AtelierError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(AtelierError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AtelierError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(AtelierError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidInput(AtelierError):
    """Input that is well-formed but breaks a rule; `errors` lists `{pointer, detail}` items."""

    status, slug, title = 422, "validation-error", "Invalid input"


class TooManyRequests(AtelierError):
    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extra)


class ServiceUnavailable(AtelierError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached (refused, reset, no pooled connection in time, a
    SQLite lock held past the busy timeout): nothing was done, the same request may succeed."""

    status, slug, title = 503, "database-unavailable", "Database unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extra)
