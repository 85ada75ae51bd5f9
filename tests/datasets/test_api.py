"""The datasets API on the test database and a real local blob store: upload, versions,
profile, download, delete, and bad input that leaves nothing behind."""

import io

import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from atelier.audit.models import AuditEvent
from atelier.datasets.models import Dataset, DatasetVersion
from atelier.storage.models import StoredBlob
from tests.identity.factories import join, make_user, sign_in

CSV = (
    "id;city;price;rooms;listed\n"
    "1;Lyon;250000.5;3;2024-01-05\n"
    "2;Paris;410000;2;2024-02-11\n"
    "3;Lyon;199000;4;2024-03-20\n"
    "4;Nîmes;;3;2024-04-02\n"
    "5;Paris;520000;5;2024-05-30\n"
).encode("cp1252")


async def upload(
    client, who, content: bytes, *, filename="homes.csv", url="/api/v1/datasets", **fields
):
    return await client.post(
        url,
        data=fields,
        files={"file": (filename, content, "application/octet-stream")},
        headers=who.headers,
    )


async def count(db_session, model) -> int:
    return await db_session.scalar(select(func.count()).select_from(model))


def stored_files(settings) -> list:
    """The local store's objects (each has a `.meta.json` beside it)."""
    root = settings.storage.root
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".meta.json")]


@pytest.fixture
async def homes(client, alice):
    response = await upload(client, alice, CSV, name="Homes", description="Sales in 2024")
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_csv_becomes_version_1_with_its_format_schema_and_profile(client, alice, homes):
    dataset, version = homes["dataset"], homes["version"]
    assert dataset["name"] == "Homes"
    assert dataset["description"] == "Sales in 2024"
    assert dataset["latest_version"] == 1
    assert version["number"] == 1
    assert version["format"] == "csv"
    assert version["format_details"]["delimiter"] == ";"
    assert version["format_details"]["encoding"] in {"cp1252", "windows-1252"}
    assert (version["rows"], version["columns"]) == (5, 5)
    assert version["filename"] == "homes.csv"
    kinds = {column["name"]: column["kind"] for column in version["schema"]}
    assert kinds["price"] == "numeric"
    assert kinds["listed"] == "datetime"
    assert kinds["city"] == "categorical"
    assert version["schema_diff"] is None

    profile = await client.get(
        f"/api/v1/datasets/{dataset['id']}/versions/1/profile", headers=alice.headers
    )
    assert profile.status_code == 200
    columns = {c["name"]: c for c in profile.json()["columns_profile"]}
    assert columns["price"]["missing"] == 1
    assert columns["city"]["distinct"] == 3
    assert columns["city"]["top"][0] == {"value": "Lyon", "count": 2}

    listed = await client.get("/api/v1/datasets", headers=alice.headers)
    assert [d["id"] for d in listed.json()["items"]] == [dataset["id"]]
    detail = await client.get(f"/api/v1/datasets/{dataset['id']}", headers=alice.headers)
    assert [v["number"] for v in detail.json()["versions"]] == [1]


async def test_the_name_defaults_to_the_files_name(client, alice):
    response = await upload(client, alice, b"a,b\n1,2\n3,4\n", filename="Q3 sales.csv")
    assert response.status_code == 201, response.text
    assert response.json()["dataset"]["name"] == "Q3 sales"


async def test_a_new_version_reports_its_schema_changes(client, alice, homes):
    dataset_id = homes["dataset"]["id"]
    second = b"id,city,price,garden\n1,Lyon,250000,yes\n2,Paris,410000,no\n3,Lyon,199000,yes\n"
    response = await upload(
        client,
        alice,
        second,
        filename="homes-v2.csv",
        url=f"/api/v1/datasets/{dataset_id}/versions",
    )
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    assert version["number"] == 2
    assert response.json()["dataset"]["latest_version"] == 2
    diff = version["schema_diff"]
    assert diff["added"] == ["garden"]
    assert sorted(diff["removed"]) == ["listed", "rooms"]
    detail = await client.get(f"/api/v1/datasets/{dataset_id}", headers=alice.headers)
    assert [v["number"] for v in detail.json()["versions"]] == [2, 1]


async def test_downloads_give_the_file_as_sent_and_its_parquet_copy(client, alice, homes):
    base = f"/api/v1/datasets/{homes['dataset']['id']}/versions/1/download"
    original = await client.get(base, headers=alice.headers)
    assert original.status_code == 307
    fetched = await client.get(original.headers["location"])
    assert fetched.status_code == 200
    assert fetched.content == CSV
    assert "homes.csv" in fetched.headers["content-disposition"]
    parquet = await client.get(f"{base}?file=parquet", headers=alice.headers)
    table = pq.read_table(io.BytesIO((await client.get(parquet.headers["location"])).content))
    assert table.num_rows == 5
    assert table.column_names == ["id", "city", "price", "rooms", "listed"]


async def test_deleting_a_dataset_removes_its_versions_files_and_storage(
    client, alice, homes, db_session, settings
):
    dataset_id = homes["dataset"]["id"]
    assert len(stored_files(settings)) == 2  # the file as sent and its Parquet copy
    usage_before = await db_session.scalar(select(func.sum(StoredBlob.size)))
    assert usage_before > 0
    response = await client.delete(f"/api/v1/datasets/{dataset_id}", headers=alice.headers)
    assert response.status_code == 204
    assert await count(db_session, Dataset) == 0
    assert await count(db_session, DatasetVersion) == 0
    assert await count(db_session, StoredBlob) == 0
    assert stored_files(settings) == []
    gone = await client.get(f"/api/v1/datasets/{dataset_id}", headers=alice.headers)
    assert gone.status_code == 404
    actions = list(await db_session.scalars(select(AuditEvent.action)))
    assert {"dataset.created", "dataset.deleted"} <= set(actions)


async def test_a_taken_name_is_a_conflict_that_names_the_dataset(client, alice, homes, db_session):
    response = await upload(client, alice, b"a,b\n1,2\n", name="Homes")
    assert response.status_code == 409
    assert response.json()["dataset_id"] == homes["dataset"]["id"]
    assert await count(db_session, StoredBlob) == 2


@pytest.mark.parametrize(
    ("content", "slug"),
    [
        (b"", "empty-file"),
        (b"a,b,c\n", "no-rows"),
        (b"a,b,c\n1,2,3\n4,5\n6,7,8\n", "ragged-rows"),
        (bytes(range(256)) * 64, "unrecognized-format"),
        (b'{"a": 1, "b": [', "malformed-json"),
        (b"PAR1 this is not parquet PAR1", "malformed-parquet"),
    ],
)
async def test_bad_files_are_clear_problems_and_leave_nothing(
    client, alice, db_session, settings, content, slug
):
    response = await upload(client, alice, content, filename="bad.csv")
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["type"].endswith(slug), response.json()
    assert await count(db_session, Dataset) == 0
    assert await count(db_session, StoredBlob) == 0
    assert stored_files(settings) == []
    assert not list((settings.data_dir / "tmp").glob("*"))  # the spool is gone too


@pytest.fixture
def settings(make_settings):
    return make_settings(
        http={"max_upload_bytes": 64 * 1024},
        datasets={"max_columns": 50, "max_rows": 1000},
    )


async def test_limits_on_size_rows_and_columns(client, alice, db_session, settings):
    too_big = await upload(client, alice, b"a,b\n" + b"1,2\n" * 20_000)
    assert too_big.status_code == 413
    too_wide = ",".join(f"c{i}" for i in range(51)) + "\n" + ",".join("1" * 51) + "\n"
    response = await upload(client, alice, too_wide.encode())
    assert response.status_code == 422
    assert response.json()["type"].endswith("too-many-columns")
    too_long = await upload(client, alice, b"a\n" + b"1\n" * 1001)
    assert too_long.json()["type"].endswith("too-many-rows")
    assert await count(db_session, StoredBlob) == 0
    assert stored_files(settings) == []


async def test_hostile_file_names_are_only_shown_and_made_safe(client, alice, settings):
    response = await upload(client, alice, b"a,b\n1,2\n", filename="../../etc/passwd\r\n.csv")
    assert response.status_code == 201, response.text
    filename = response.json()["version"]["filename"]
    assert "/" not in filename
    assert "\n" not in filename
    assert ".." not in filename
    assert all(settings.storage.root in p.parents for p in stored_files(settings))


async def test_the_storage_quota_binds_and_leaves_nothing(client, alice, db_session):
    from atelier.plans.models import Plan

    await db_session.execute(
        Plan.__table__.update().where(Plan.id == "trial").values(max_storage_bytes=100)
    )
    await db_session.commit()
    response = await upload(client, alice, CSV)
    assert response.status_code == 402
    assert await count(db_session, Dataset) == 0
    assert await count(db_session, StoredBlob) == 0


async def test_viewers_read_but_do_not_upload_or_delete(client, alice, homes, db_session):
    viewer = await make_user(db_session, display_name="Viola")
    await join(db_session, viewer, alice.org_id, "viewer")
    signed_in = await sign_in(client, viewer, alice.org_id)
    refused = await upload(client, signed_in, b"a\n1\n", name="mine")
    assert refused.status_code == 403
    dataset_id = homes["dataset"]["id"]
    assert (
        await client.get(f"/api/v1/datasets/{dataset_id}", headers=signed_in.headers)
    ).is_success
    deleted = await client.delete(f"/api/v1/datasets/{dataset_id}", headers=signed_in.headers)
    assert deleted.status_code == 403


async def test_another_organization_sees_nothing(client, homes, mallory):
    listed = await client.get("/api/v1/datasets", headers=mallory.headers)
    assert listed.json()["items"] == []
    dataset_id = homes["dataset"]["id"]
    response = await upload(
        client, mallory, b"a\n1\n", url=f"/api/v1/datasets/{dataset_id}/versions"
    )
    assert response.status_code == 404
