"""Hostile and ambiguous data files through the HTTP API: each is a 422 problem document that
says what is wrong and leaves no row, no stored file and no spool behind, whether it starts a
dataset or is a new version of one; and text files are decoded in the encoding they are in,
which the upload result reports."""

import codecs
import re

import pytest
from sqlalchemy import select

from atelier.datasets.models import Dataset, DatasetVersion
from atelier.storage.models import StoredBlob
from tests.datasets.test_api import count, stored_files, upload
from tests.web.test_ml_pages import HTML, ada, token_of
from tests.web.test_ml_pages import upload as web_upload

__all__ = ["ada"]  # a fixture

HOSTILE = {
    # Python's json module met these while locating the bad line: RecursionError.
    "jsonl-nested-10000-deep": (
        b'{"a": 1}\n{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n",
        "data.jsonl",
        "malformed-json",
        ("Line 2", "10000 levels deep", "at most 32"),
    ),
    "json-nested-10000-deep": (
        b'[{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]",
        "data.json",
        "malformed-json",
        ("too deeply", "at most 32"),
    ),
    # Deep enough for Arrow to fail, not polars.
    "json-nested-100-deep": (
        b'[{"a": ' + b"[" * 100 + b"1" + b"]" * 100 + b"}]",
        "data.json",
        "malformed-json",
        ("Column 'a'", "100 levels deep"),
    ),
    # json.loads raised a ValueError without `.msg` (int max str digits), then AttributeError.
    "jsonl-integer-of-5000-digits": (
        b'{"n": 1}\n{"n": ' + b"9" * 5000 + b"}\n",
        "data.jsonl",
        "malformed-json",
        ("Line 2", "5000 digits", "at most 38"),
    ),
    "json-integer-of-5000-digits": (
        b'[{"n": ' + b"9" * 5000 + b"}]",
        "data.json",
        "malformed-json",
        ("Line 1", "5000 digits", "at most 38"),
    ),
    # A NUL in a name made polars panic (a BaseException) when the table went to Arrow.
    "json-nul-in-a-name": (
        b'[{"a\\u0000b": 1}, {"a\\u0000b": 2}]',
        "data.json",
        "malformed-json",
        ("Line 1", "NUL"),
    ),
    "jsonl-nul-in-a-value": (
        b'{"s": "x"}\n{"s": "a\\u0000b"}\n',
        "data.jsonl",
        "malformed-json",
        ("Line 2", "NUL"),
    ),
    # Read as one-column CSV files.
    "json-with-comments": (
        b'// exported\n[{"a": 1}, {"a": 2}]\n',
        "data.json",
        "malformed-json",
        ("comments",),
    ),
    "json-name-on-csv-text": (b"a,b\n1,2\n", "data.json", "malformed-json", ("not JSON",)),
    # Silently decoded as cp1252: MontrÃ©al.
    "utf8-mixed-with-latin1": (
        "city,n\nMontréal,1\nLyon,2\n".encode() + "Québec,3\n".encode("latin-1"),
        "cities.csv",
        "undecodable-text",
        ("line 4", "0xE9", "UTF-8"),
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("route", ["new dataset", "new version"])
async def test_hostile_file_is_a_422_problem_and_leaves_nothing(
    client, alice, db_session, settings, case, route
):
    content, filename, slug, phrases = HOSTILE[case]
    url = "/api/v1/datasets"
    if route == "new version":
        first = await upload(client, alice, b"a,b\n1,2\n", filename="first.csv")
        assert first.status_code == 201, first.text
        url = f"/api/v1/datasets/{first.json()['dataset']['id']}/versions"
    before = stored_files(settings)

    response = await upload(client, alice, content, filename=filename, url=url)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith(slug), problem
    for phrase in phrases:
        assert phrase in problem["detail"], problem["detail"]
    assert await count(db_session, DatasetVersion) == (0 if route == "new dataset" else 1)
    assert await count(db_session, StoredBlob) == (0 if route == "new dataset" else 2)
    assert stored_files(settings) == before
    assert not list((settings.data_dir / "tmp").glob("*"))
    if route == "new version":
        assert await db_session.scalar(select(Dataset.latest_version)) == 1


async def test_the_web_form_shows_the_problem_of_a_hostile_file(client, ada, db_session):
    content = HOSTILE["jsonl-integer-of-5000-digits"][0]

    response = await web_upload(client, await token_of(client), content, headers=HTML)

    assert response.status_code == 422
    message = re.search(r"data-upload-error>(.*?)</p>", response.text, re.S).group(1)
    assert "Line 2" in message
    assert "5000 digits" in message
    assert await count(db_session, Dataset) == 0
    assert await count(db_session, StoredBlob) == 0


async def test_integers_past_64_bits_in_nested_values_are_kept_as_text(client, alice):
    content = b'[{"id": 1, "ref": {"n": 123456789012345678901234}, "l": [18446744073709551616]}]'

    response = await upload(client, alice, content, filename="refs.json")

    assert response.status_code == 201, response.text
    version = response.json()["version"]
    assert version["format_details"]["json_encoded"] == ["ref", "l"]


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        ("ville,n\nMontréal,1\nQuébec,2\n".encode(), "utf-8"),
        (codecs.BOM_UTF8 + "ville,n\nMontréal,1\nQuébec,2\n".encode(), "utf-8"),
        ("ville,n\nMontréal,1\nQuébec,2\n".encode("latin-1"), "cp1252"),
        (codecs.BOM_UTF16_LE + "ville,n\nMontréal,1\nQuébec,2\n".encode("utf-16-le"), "utf-16-le"),
    ],
)
async def test_an_upload_reports_the_encoding_it_was_read_in(client, alice, content, encoding):
    response = await upload(client, alice, content, filename="villes.csv")

    assert response.status_code == 201, response.text
    assert response.json()["version"]["format_details"]["encoding"] == encoding
    dataset_id = response.json()["dataset"]["id"]
    profile = await client.get(
        f"/api/v1/datasets/{dataset_id}/versions/1/profile", headers=alice.headers
    )
    columns = {c["name"]: c for c in profile.json()["columns_profile"]}
    assert {top["value"] for top in columns["ville"]["top"]} == {"Montréal", "Québec"}


async def test_a_csv_with_bare_carriage_returns_is_read(client, alice):
    response = await upload(client, alice, b"a,b\r1,2\r3,4\r", filename="classic-mac.csv")

    assert response.status_code == 201, response.text
    version = response.json()["version"]
    assert (version["rows"], version["columns"]) == (2, 2)
