"""Files go to an S3 server by configuration alone: `atelier up`, given the S3 settings and
nothing else, stores an upload in the bucket (moto's S3 server on loopback, speaking the real
protocol), hands out a presigned download link, and deletes the objects with the dataset."""

import uuid

import httpx
import pytest

from tests.identity.factories import PASSWORD, unique_email

pytestmark = [pytest.mark.backend_independent, pytest.mark.live]

CSV = b"city,price\nLyon,310000\nNantes,245000\nLille,198000\n"


def test_atelier_up_keeps_files_in_the_configured_bucket(start_server, s3_endpoint, s3_client):
    bucket = f"atelier-{uuid.uuid4().hex[:12]}"
    raw = s3_client
    raw.create_bucket(Bucket=bucket)
    server = start_server(
        "up",
        ATELIER_STORAGE__BACKEND="s3",
        ATELIER_STORAGE__S3_BUCKET=bucket,
        ATELIER_STORAGE__S3_ENDPOINT_URL=s3_endpoint,
        ATELIER_STORAGE__S3_PATH_STYLE="true",
        ATELIER_STORAGE__S3_ACCESS_KEY_ID="testing",
        ATELIER_STORAGE__S3_SECRET_ACCESS_KEY="testing",
        ATELIER_STORAGE__S3_PREFIX="atelier/",
    )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        readiness = http.get("/readiness").json()
        assert readiness["checks"]["storage"]["status"] == "ok", readiness
        assert bucket in readiness["checks"]["storage"]["detail"]

        email = unique_email("s3")
        registered = http.post(
            "/api/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Ada", "locale": "en"},
        )
        assert registered.status_code == 201, registered.text
        token = http.post(
            "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        uploaded = http.post(
            "/api/v1/datasets", headers=auth, files={"file": ("homes.csv", CSV, "text/csv")}
        )
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["dataset"]["id"]

        keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys, "nothing reached the bucket"
        assert all(key.startswith("atelier/orgs/") for key in keys)
        originals = [k for k in keys if raw.get_object(Bucket=bucket, Key=k)["Body"].read() == CSV]
        assert len(originals) == 1  # the file as uploaded, byte for byte (and its Parquet copy)

        link = http.get(f"/api/v1/datasets/{dataset_id}/versions/1/download", headers=auth)
        assert link.status_code == 307
        presigned = link.headers["location"]
        assert presigned.startswith(f"{s3_endpoint}/{bucket}/atelier/orgs/")
        assert "X-Amz-Signature=" in presigned
        fetched = httpx.get(presigned, timeout=30)  # straight from the S3 server, no token
        assert fetched.status_code == 200
        assert fetched.content == CSV

        assert http.delete(f"/api/v1/datasets/{dataset_id}", headers=auth).status_code == 204
        assert raw.list_objects_v2(Bucket=bucket).get("Contents", []) == []
