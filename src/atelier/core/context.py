"""Facts about the current request that services record (audit) without knowing HTTP."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestInfo:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_REQUEST = RequestInfo()  # CLI commands and jobs
