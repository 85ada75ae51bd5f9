"""A real S3 API for the storage tests: moto's server on loopback, once per test session (each
test makes a bucket of its own), and a plain boto3 client to look at it behind the store's back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", name="s3_endpoint")
def fixture_s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # imported by the sessions that use it only

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(name="s3_client")
def fixture_s3_client(s3_endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
