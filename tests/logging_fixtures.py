"""A fixture for tests that configure logging: the suite's configuration comes back after."""

import logging

import pytest
import structlog


@pytest.fixture(name="restore_logging")
def fixture_restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)
