"""AutoML runs through the API, with the inline executor: the `automl.train` job runs inside
the request, on the test database and a real local blob store, with a real (short) search."""

import io
import random
import zipfile

import polars as pl
import pytest
from sqlalchemy import func, select

from atelier.automl import artifacts
from atelier.automl.models import AutomlRun
from atelier.automl.service import MODEL_ROOM_BYTES
from atelier.identity.models import Organization
from atelier.jobs.models import Job
from atelier.plans.models import Plan
from atelier.storage.service import storage_used
from tests.automl.factories import make_run
from tests.identity.factories import join, make_user, sign_in


@pytest.fixture
def settings(make_settings):
    return make_settings(jobs={"executor": "inline"}, automl={"max_budget_seconds": 120})


def homes_csv(rows: int = 400, seed: int = 7) -> bytes:
    """Houses: will a listing sell within a month? Mostly the cheap ones (for their city and
    size) do; the id tells nothing."""
    rng = random.Random(seed)
    lines = ["listing_id,city,surface,rooms,price,listed,sold_fast"]
    for i in range(rows):
        city = rng.choice(["Lyon", "Paris", "Nice", "Lille"])
        surface = rng.uniform(20, 200)
        rooms = max(1, int(surface // 25) + rng.choice([-1, 0, 1]))
        price = surface * {"Lyon": 4500, "Paris": 10500, "Nice": 5200, "Lille": 3300}[city]
        price *= rng.uniform(0.8, 1.3)
        cheap = price / surface < {"Lyon": 4700, "Paris": 10800, "Nice": 5400, "Lille": 3500}[city]
        sold = cheap if rng.random() < 0.95 else not cheap
        month = rng.randint(1, 12)
        lines.append(
            f"L{1000 + i},{city},{surface:.1f},{rooms},{price:.0f},2024-{month:02d}-15,"
            f"{'yes' if sold else 'no'}"
        )
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def homes(client, alice):
    response = await client.post(
        "/api/v1/datasets",
        data={"name": "Homes"},
        files={"file": ("homes.csv", homes_csv(), "text/csv")},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["dataset"]["id"]


async def start(client, who, **body):
    return await client.post("/api/v1/automl/runs", json=body, headers=who.headers)


async def test_a_run_trains_within_its_budget_and_keeps_its_results(client, alice, homes):
    response = await start(client, alice, dataset_id=homes, target="sold_fast", budget_seconds=10)
    assert response.status_code == 202, response.text
    run, job = response.json()["run"], response.json()["job"]
    assert response.headers["Location"] == f"/api/v1/automl/runs/{run['id']}"
    assert job["kind"] == "automl.train"
    assert job["queue"] == "ml"
    assert job["status"] == "succeeded", job["error"]
    assert run["task"] == "binary"
    assert run["metric"] == "roc_auc"
    assert run["dataset_version"] == 1
    assert run["leaderboard"], "the leaderboard is filled in"
    results = run["results"]
    assert results["elapsed_seconds"] <= 10 * 1.1
    assert results["holdout_metrics"]["roc_auc"] > 0.75
    dropped = {column["name"]: column["reason"] for column in results["dropped_columns"]}
    assert "listing_id" in dropped
    assert job["result"]["run_id"] == run["id"]

    read = await client.get(f"/api/v1/automl/runs/{run['id']}", headers=alice.headers)
    assert read.json()["run"]["results"] == results
    assert run["has_model"] is True
    listed = await client.get(f"/api/v1/automl/runs?dataset_id={homes}", headers=alice.headers)
    assert [r["id"] for r in listed.json()["items"]] == [run["id"]]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"target": "nope"}, "/target"),
        ({"target": "listing_id"}, "/target"),  # an identifier
        ({"target": "sold_fast", "exclude": ["sold_fast"]}, "/exclude"),
        ({"target": "sold_fast", "exclude": ["ghost"]}, "/exclude"),
        ({"target": "sold_fast", "task": "binary", "metric": "rmse"}, "/metric"),
        ({"target": "sold_fast", "budget_seconds": 121}, "/budget_seconds"),
    ],
)
async def test_requests_that_cannot_run_are_refused_and_leave_nothing(
    client, alice, homes, db_session, body, pointer
):
    response = await start(client, alice, dataset_id=homes, **body)
    assert response.status_code == 422, response.text
    assert pointer in [error["pointer"] for error in response.json()["errors"]]
    assert await db_session.scalar(select(func.count()).select_from(AutomlRun)) == 0
    assert await db_session.scalar(select(func.count()).select_from(Job)) == 0


async def test_an_idempotency_key_gives_the_same_run_back(client, alice, homes, db_session):
    body = {"dataset_id": homes, "target": "sold_fast", "budget_seconds": 10}
    key = {"Idempotency-Key": "run-once"}
    first = await client.post("/api/v1/automl/runs", json=body, headers={**alice.headers, **key})
    again = await client.post("/api/v1/automl/runs", json=body, headers={**alice.headers, **key})
    assert again.status_code == 202
    assert again.json()["run"]["id"] == first.json()["run"]["id"]
    assert await db_session.scalar(select(func.count()).select_from(AutomlRun)) == 1
    other = await client.post(
        "/api/v1/automl/runs", json={**body, "seed": 1}, headers={**alice.headers, **key}
    )
    assert other.status_code == 409


async def test_viewers_and_other_organizations_cannot_start_runs(
    client, alice, homes, mallory, db_session
):
    viewer = await make_user(db_session, display_name="Viola")
    await join(db_session, viewer, alice.org_id, "viewer")
    signed_in = await sign_in(client, viewer, alice.org_id)
    refused = await start(client, signed_in, dataset_id=homes, target="sold_fast")
    assert refused.status_code == 403
    hidden = await start(client, mallory, dataset_id=homes, target="sold_fast")
    assert hidden.status_code == 404


async def test_a_finished_run_gives_its_model_folder_as_a_zip(client, alice, homes, tmp_path):
    started = await start(client, alice, dataset_id=homes, target="sold_fast", budget_seconds=10)
    run_id = started.json()["run"]["id"]
    link = await client.get(f"/api/v1/automl/runs/{run_id}/model", headers=alice.headers)
    assert link.status_code == 307
    archive = await client.get(link.headers["location"])
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert sorted(zipped.namelist()) == [
            "model.skops",
            "report.html",
            "report.json",
            "signature.json",
        ]
        zipped.extractall(tmp_path / "model")
    model, signature = artifacts.load(tmp_path / "model")
    assert signature["target"] == "sold_fast"
    assert signature["classes"] == ["no", "yes"]
    rows = pl.read_csv(io.BytesIO(homes_csv(rows=25, seed=8))).drop("sold_fast")
    assert rows["listed"].dtype == pl.String  # dates as text, as a client may send them
    predicted = list(model.predict(rows))
    assert len(predicted) == 25
    typed = rows.with_columns(pl.col("listed").str.to_date(), pl.col("rooms").cast(pl.String))
    assert list(model.predict(typed)) == predicted
    report = await client.get(f"/api/v1/automl/runs/{run_id}/report", headers=alice.headers)
    assert report.status_code == 200
    assert "<svg" in report.text


async def test_a_run_without_a_model_says_so(client, alice, homes, db_session):
    run = await make_run(db_session, alice.org_id, homes)
    for path in ("model", "report"):
        response = await client.get(f"/api/v1/automl/runs/{run.id}/{path}", headers=alice.headers)
        assert response.status_code == 409


async def limit_storage(db_session, org_id: str, max_storage_bytes: int) -> None:
    plan_id = select(Organization.plan_id).where(Organization.id == org_id).scalar_subquery()
    await db_session.execute(
        Plan.__table__.update()
        .where(Plan.id == plan_id)
        .values(max_storage_bytes=max_storage_bytes)
    )
    await db_session.commit()


@pytest.mark.parametrize("room", [0, 1000, MODEL_ROOM_BYTES - 1])
async def test_a_run_is_refused_at_once_when_its_model_cannot_be_stored(
    client, alice, homes, db_session, room
):
    """Not accepted, then failed with QuotaExceeded once its whole budget is spent."""
    used = await storage_used(db_session, alice.org_id)
    await limit_storage(db_session, alice.org_id, used + room)
    response = await start(client, alice, dataset_id=homes, target="sold_fast", budget_seconds=10)
    assert response.status_code == 402, response.text
    problem = response.json()
    assert problem["type"].endswith("quota-exceeded")
    assert (problem["meter"], problem["limit"], problem["used"]) == (
        "storage_bytes",
        used + room,
        used,
    )
    assert await db_session.scalar(select(func.count()).select_from(AutomlRun)) == 0
    assert await db_session.scalar(select(func.count()).select_from(Job)) == 0


async def test_a_run_with_room_for_its_model_is_accepted(client, alice, homes, db_session):
    used = await storage_used(db_session, alice.org_id)
    await limit_storage(db_session, alice.org_id, used + MODEL_ROOM_BYTES)
    response = await start(client, alice, dataset_id=homes, target="sold_fast", budget_seconds=10)
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert job["status"] == "succeeded", job["error"]  # the floor held its model


async def test_a_failed_run_is_finished(client, alice, homes):
    """Regression needs a numeric target: the job fails in the search, and the run ends."""
    response = await start(
        client, alice, dataset_id=homes, target="sold_fast", task="regression", budget_seconds=10
    )
    assert response.status_code == 202, response.text
    run, job = response.json()["run"], response.json()["job"]
    assert job["status"] == "failed"
    assert "regression needs numbers" in job["error"]["detail"]
    assert run["finished_at"] is not None
    assert run["has_model"] is False
    read = await client.get(f"/api/v1/automl/runs/{run['id']}", headers=alice.headers)
    assert read.json()["run"]["finished_at"] == run["finished_at"]
