import json
import logging

import pytest
import structlog

from atelier.core import logging as core_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


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
