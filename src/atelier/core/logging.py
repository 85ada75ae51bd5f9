"""Structured logs: JSON for machines, a readable console format for people.

Everything goes through structlog, including the standard library's loggers (uvicorn, alembic,
SQLAlchemy), so one line format carries the `request_id` bound by the request middleware.

Logging runs on the caller's thread, which for a request is the event loop: every event must be
cheap to render, whatever it carries. So an exception becomes a plain-text traceback of its
innermost frames, without local variables (Rich's tracebacks with locals took seconds and tens of
thousands of lines for one error, and showed pieces of bearer tokens), cut to a bounded size; every
other value is cut too. Then secrets are masked in every value, the traceback included: bearer
and basic credentials, JWTs, Atelier's own tokens (API keys, refresh tokens, web sessions,
invitations), session cookies, passwords in URLs and in `password=...` pairs, and whole values of
fields named like a secret.
"""

import logging
import re
import sys
import traceback
from typing import Any, Literal

import structlog

MAX_TRACEBACK_FRAMES = 30
"""Frames kept per exception of a chain: the innermost ones, where it was raised."""
MAX_CHAINED = 5
"""Exceptions shown per event: the one logged, its causes or contexts, a group's members."""
MAX_EXCEPTION_CHARS = 8_000
MAX_VALUE_CHARS = 2_000
MAX_LINE_CHARS = 1_000
REDACTED = "[redacted]"

# A token never contains one of these, so cutting a text at one never leaves part of a token.
_BREAKS = " \t\n'\"`,;()[]{}<>"
_TOKEN = r"[A-Za-z0-9._~+/=-]"  # noqa: S105 - a pattern
# (what a text must contain, lowercased, for the pattern to apply; the pattern; its replacement).
# The cheap substring test spares most values the regular expressions.
_SECRET_PATTERNS = [
    (
        ("bearer", "basic", "digest"),
        re.compile(rf"\b(Bearer|Basic|Digest)(\s+){_TOKEN}+", re.I),
        rf"\1\2{REDACTED}",
    ),
    # A JWT, or one of its segments alone: base64url of a JSON object starts with "eyJ".
    (("eyj",), re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*"), REDACTED),
    # Atelier's API keys, refresh tokens, web sessions and invitations.
    (
        ("atk_", "rt_", "ws_", "invite_"),
        re.compile(r"\b(atk|rt|ws|invite)_[A-Za-z0-9_-]{16,}"),
        rf"\1_{REDACTED}",
    ),
    (
        ("atelier_",),
        re.compile(r"\b(atelier_(?:session|csrf|oidc))=[^;\s'\"]+"),
        rf"\1={REDACTED}",
    ),
    (("@",), re.compile(r"(://[^\s/:@]*:)[^\s/@]+@"), rf"\1{REDACTED}@"),
    (
        ("pass", "secret", "token", "api", "authorization", "cookie"),
        re.compile(
            r"((?<![A-Za-z])(?:pass(?:word|wd|phrase)?|secret|token|api_?key|authorization|cookie)"
            r"['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s&,;)]+",
            re.I,
        ),
        rf"\1{REDACTED}",
    ),
    # Values a library quotes in its messages: SQLAlchemy's statement parameters, pydantic's
    # input values (user data, and they may be credentials), and what follows a cut a library
    # made in the middle of a value (no longer recognisable as a token).
    (("[parameters: ",), re.compile(r"(\[parameters: )[^\n]*"), rf"\1{REDACTED}]"),
    (
        ("input_value=",),
        re.compile(r"(input_value=)(?:'[^'\n]*'|\"[^\"\n]*\"|[^,\s]*)"),
        rf"\1{REDACTED}",
    ),
    (
        ("truncated",),
        re.compile(r"(characters truncated\) \.\.\. ?)[A-Za-z0-9._~+/=-]*"),
        rf"\1{REDACTED}",
    ),
    # Header pairs as the ASGI scope holds them: (b'authorization', b'...').
    (
        ("authorization", "cookie", "x-api-key"),
        re.compile(
            r"(b?['\"](?:authorization|cookie|set-cookie|x-api-key)['\"],\s*b?['\"])[^'\"]*", re.I
        ),
        rf"\1{REDACTED}",
    ),
]
_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|secret|authorization|cookie|credential|(^|_)(token|api_?key|pass)$",
    re.I,
)
# structlog's own keys, which hold objects it still needs (the stdlib record).
_INTERNAL_KEYS = frozenset({"_record", "_from_structlog"})
_MAX_DEPTH = 4
_NEAR = 200
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _cut(text: str, limit: int) -> str:
    """`text` within about `limit` characters: its start and (mostly) its end. The cuts fall
    between tokens when there is a break near them, so no piece of a credential is left for
    `redact` to miss; a run of token characters longer than `_NEAR` is no credential we issue."""
    if len(text) <= limit:
        return text
    head_to = limit // 4
    head = max(text.rfind(c, max(head_to - _NEAR, 0), head_to) for c in _BREAKS)
    head = head if head != -1 else head_to
    tail_from = len(text) - (limit - head_to)
    found = [i for c in _BREAKS if (i := text.find(c, tail_from, tail_from + _NEAR)) != -1]
    tail = min(found, default=tail_from)
    return f"{text[:head]} [... {tail - head} characters cut ...] {text[tail:]}"


def _cut_lines(text: str) -> str:
    """A traceback within `MAX_EXCEPTION_CHARS`, each line within `MAX_LINE_CHARS` (a huge
    message keeps its first words)."""
    lines = (_cut(line, MAX_LINE_CHARS) for line in text.split("\n"))
    return _cut("\n".join(lines), MAX_EXCEPTION_CHARS)


def redact(text: str) -> str:
    """`text` with every credential it shows masked."""
    lowered = text.lower()
    for triggers, pattern, replacement in _SECRET_PATTERNS:
        if any(trigger in lowered for trigger in triggers):
            text = pattern.sub(replacement, text)
    return text


def _exception_of(exc_info: Any) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1]
    return sys.exc_info()[1]


def _traceback_lines(exc: BaseException, seen: set[int]) -> list[str]:
    """Python's traceback format for `exc` and the exceptions it chains to (at most
    `MAX_CHAINED` in all), each with only its innermost frames and without column carets:
    computing those parses every line's source and costs more than all the rest."""
    seen.add(id(exc))
    lines: list[str] = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen and len(seen) < MAX_CHAINED:
        lines += [*_traceback_lines(cause, seen), _CAUSE]
    elif (
        context is not None
        and not exc.__suppress_context__
        and id(context) not in seen
        and len(seen) < MAX_CHAINED
    ):
        lines += [*_traceback_lines(context, seen), _CONTEXT]
    frames = list(traceback.walk_tb(exc.__traceback__))
    if frames:
        lines.append("Traceback (most recent call last):\n")
        if len(frames) > MAX_TRACEBACK_FRAMES:
            lines.append(f"  [... {len(frames) - MAX_TRACEBACK_FRAMES} outer frames left out]\n")
        kept = frames[-MAX_TRACEBACK_FRAMES:]
        lines += traceback.StackSummary.extract(iter(kept), capture_locals=False).format()
    lines += traceback.format_exception_only(type(exc), exc)
    if isinstance(exc, BaseExceptionGroup):
        for number, member in enumerate(exc.exceptions, 1):
            if id(member) in seen or len(seen) >= MAX_CHAINED:
                break
            lines += [f"\n[member {number} of the group]\n", *_traceback_lines(member, seen)]
    return lines


def render_exception(_logger: object, _name: str, event: dict) -> dict:
    """Replace `exc_info` with `exception`: a bounded plain-text traceback without locals."""
    exc_info = event.pop("exc_info", None)
    exc = _exception_of(exc_info) if exc_info else None
    if exc is not None:
        text = "".join(_traceback_lines(exc, set())).rstrip("\n")
        event["exception"] = _cut_lines(text)  # redacted by redact_secrets
    return event


def _clean(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(_cut(value, MAX_VALUE_CHARS))
    if depth < _MAX_DEPTH and isinstance(value, dict):
        return {k: _clean_field(str(k), v, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return redact(_cut(repr(value), MAX_VALUE_CHARS))


def _clean_field(key: str, value: Any, depth: int) -> Any:
    if isinstance(value, str | bytes) and _SECRET_NAME.search(key):
        return REDACTED
    return _clean(value, depth)


def redact_secrets(_logger: object, _name: str, event: dict) -> dict:
    """Mask secrets in every value and bound every value's size (the exception has its own)."""
    for key, value in event.items():
        if key in _INTERNAL_KEYS:
            continue
        if key == "exception" and isinstance(value, str):
            event[key] = redact(_cut(value, MAX_EXCEPTION_CHARS))
        else:
            event[key] = _clean_field(key, value, 0)
    return event


def _drop_color_message(_logger: object, _name: str, event: dict) -> dict:
    """uvicorn passes a copy of each message with terminal colour codes as an extra."""
    event.pop("color_message", None)
    return event


def configure(*, level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    """Configure structlog and the standard library's root logger. Safe to call again."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        render_exception,
        redact_secrets,
    ]
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # `exception` arrives as text; the plain formatter is only a fallback, never Rich's.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our middleware writes one line per request; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
