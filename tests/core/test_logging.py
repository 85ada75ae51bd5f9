import json
import logging
import time

import pytest
import structlog

from atelier.core import logging as core_logging
from tests.logging_fixtures import fixture_restore_logging  # noqa: F401 - a fixture


async def test_json_logs_carry_the_request_fields(app, client, capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="json")
    await client.get("/api/v1/version", headers={"X-Request-ID": "json-log-check"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    request = next(line for line in lines if line["event"] == "request")
    assert request["request_id"] == "json-log-check"
    assert request["method"] == "GET"
    assert request["route"] == "/api/v1/version"
    assert request["status"] == 200
    assert request["duration_ms"] >= 0
    assert request["level"] == "info"
    assert request["timestamp"].endswith("Z")


def test_standard_library_loggers_are_rendered_as_json(capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="json")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "Started server process [42]"
    assert line["logger"] == "uvicorn.error"


def test_console_format_is_readable(capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="console")
    structlog.get_logger("atelier.test").info("hello", answer=42)
    err = capsys.readouterr().err
    assert "hello" in err
    assert "answer=42" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[-1])


async def test_successful_probes_are_logged_at_debug_only(app, client, capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="json")
    await client.get("/health")
    await client.get("/metrics")
    assert _request_lines(capsys) == []
    core_logging.configure(level="DEBUG", fmt="json")
    await client.get("/health")
    [line] = _request_lines(capsys)
    assert (line["route"], line["level"]) == ("/health", "debug")


def _request_lines(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    return [line for line in lines if line["event"] == "request"]


# ---- exceptions: no locals, bounded, no secrets ----------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMTIzNDU2Nzg5MCIsImV4cCI6MTl9"
    ".c2lnbmF0dXJlLW9mLXRoZS10b2tlbi1oZXJlLTAxMjM0NTY3"
)
API_KEY = "atk_0a1b2c3d_Zm9vYmFyYmF6cXV4LXNlY3JldC1wYXJ0LW9mLXRoZS1rZXk"


def _fail_with_locals() -> None:
    credential = "local-value-" + "q" * 40  # noqa: F841 - a local the traceback must not show
    raise ValueError("no good")


def _recurse(depth: int) -> None:
    if depth:
        _recurse(depth - 1)
    raise ValueError("z" * 2_000_000)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_traceback_shows_no_local_variables(capsys, restore_logging, fmt):
    core_logging.configure(level="INFO", fmt=fmt)
    try:
        _fail_with_locals()
    except ValueError:
        structlog.get_logger("atelier.test").exception("failed")
    err = capsys.readouterr().err
    assert "ValueError: no good" in err
    assert "_fail_with_locals" in err  # the frames are there
    assert "local-value-" not in err
    assert "credential" not in err


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_rendered_traceback_is_bounded_in_size_and_time(capsys, restore_logging, fmt):
    core_logging.configure(level="INFO", fmt=fmt)
    try:
        _recurse(300)
    except ValueError:
        begin = time.perf_counter()
        structlog.get_logger("atelier.test").exception("failed", detail="d" * 100_000)
        elapsed = time.perf_counter() - begin
    err = capsys.readouterr().err
    assert len(err) < 2 * (core_logging.MAX_EXCEPTION_CHARS + core_logging.MAX_VALUE_CHARS)
    assert "characters cut" in err
    assert "ValueError: zzz" in err  # the innermost frames and the message are kept
    assert "in _recurse" in err
    assert elapsed < 0.25, elapsed


def test_an_exception_logged_by_a_standard_library_logger_is_bounded_too(capsys, restore_logging):
    core_logging.configure(level="INFO", fmt="json")
    try:
        _recurse(300)
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "Exception in ASGI application"
    assert isinstance(line["exception"], str)
    assert len(line["exception"]) <= core_logging.MAX_EXCEPTION_CHARS + 100
    assert line["exception"].rstrip().endswith("z")


SECRETS = [
    JWT,
    API_KEY,
    "rt_" + "R" * 43,
    "ws_" + "W" * 43,
    "invite_" + "I" * 43,
    "hunter2-secret-pw",
    "cookie-csrf-value-0123456789",
    "dbpassword-98765",
]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_log(capsys, restore_logging, fmt):
    core_logging.configure(level="INFO", fmt=fmt)
    log = structlog.get_logger("atelier.test")
    log.info(
        "fields",
        authorization=f"Bearer {JWT}",
        headers={"Cookie": "atelier_csrf=cookie-csrf-value-0123456789"},
        password="hunter2-secret-pw",
        note=f"a key {API_KEY} and a token {JWT.split('.')[1]}",
        refresh="rt_" + "R" * 43,
        url="postgresql://atelier:dbpassword-98765@db:5432/atelier",
    )
    try:
        raise RuntimeError(
            f"upstream said no to [('authorization', 'Bearer {JWT}')] with "
            f"[(b'cookie', b'atelier_session={'ws_' + 'W' * 43}; atelier_lang=fr')] "
            f"for /invitations/{'invite_' + 'I' * 43} password=hunter2-secret-pw\n"
            # Values quoted by libraries, cut in the middle (SQLAlchemy, pydantic).
            f"[parameters: ('Bearer {JWT[:20]} ... (94 characters truncated) ... {JWT[-40:]}',)]\n"
            f"[type=string_too_long, input_value='{API_KEY[:24]}...{API_KEY[-24:]}']"
        )
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("sqlalchemy").warning("parameters: %r", (API_KEY, "x"))
    err = capsys.readouterr().err
    assert "RuntimeError: upstream said no" in err
    for secret in SECRETS:
        assert not _fragments(secret, 12) & _fragments(err, 12), secret


def _fragments(text: str, size: int) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}
