"""A model upload over the upload limit is refused (413) while it streams, leaving nothing."""

import pytest
from sqlalchemy import func, select

from atelier.registry.models import ModelVersion, RegisteredModel


@pytest.fixture
def settings(make_settings):
    return make_settings(http={"max_upload_bytes": 4096})


async def test_a_model_over_the_upload_limit_is_413(client, alice, db_session):
    response = await client.post(
        "/api/v1/models/big/versions",
        files={"file": ("big.onnx", b"\x08" + b"\0" * 10_000, "application/octet-stream")},
        headers=alice.headers,
    )
    assert response.status_code == 413, response.text
    assert await db_session.scalar(select(func.count()).select_from(RegisteredModel)) == 0
    assert await db_session.scalar(select(func.count()).select_from(ModelVersion)) == 0
