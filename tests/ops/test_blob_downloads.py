"""Signed download links of the local store, over HTTP."""

from datetime import timedelta

import pytest


async def stream(data: bytes):
    yield data


@pytest.fixture
async def stored(app):
    store = app.state.blobs
    data = bytes(range(256)) * 40  # 10,240 bytes
    info = await store.put(
        "orgs/org_a/report.csv", stream(data), content_type="text/csv", max_bytes=1 << 20
    )
    url = await store.signed_url(info.key, expires_in=timedelta(minutes=10), filename="report.csv")
    return info, url, data


async def test_a_signed_link_downloads_the_file_safely(client, stored):
    info, url, data = stored
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["etag"] == f'"{info.sha256}"'
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"].startswith("private, max-age=")


async def test_range_requests_return_a_part(client, stored):
    _, url, data = stored
    response = await client.get(url, headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == data[100:200]
    assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"


async def test_forged_and_deleted_links_are_404(client, app, stored):
    info, url, _ = stored
    assert (await client.get(url[:-3] + "abc")).status_code == 404
    await app.state.blobs.delete(info.key)
    assert (await client.get(url)).status_code == 404
