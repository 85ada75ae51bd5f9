"""The jobs API with the inline executor: a job runs as it is submitted, on the test database."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atelier.jobs.models import Job
from tests.identity.factories import make_user, personal_org_id, sign_in
from tests.jobs import kinds  # noqa: F401 - registers the test kinds
from tests.jobs.factories import make_job

MINUTE = timedelta(minutes=1)


@pytest.fixture
def settings(make_settings):
    return make_settings(jobs={"executor": "inline", "time_limit_grace_seconds": 0.2})


@pytest.fixture
async def operator(client, db_session):
    user = await make_user(db_session, display_name="Operator")
    user.is_superadmin = True
    await db_session.commit()
    return await sign_in(client, user, await personal_org_id(db_session, user))


async def submit(client, who, kind, payload=None, **headers):
    return await client.post(
        "/api/v1/jobs",
        json={"kind": kind, "payload": payload or {}},
        headers={**who.headers, **headers},
    )


async def test_a_submitted_job_runs_and_reports_its_result(client, alice):
    response = await submit(client, alice, "test.work", {"seconds": 0.1})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["status"] == "succeeded"
    assert job["result"]["attempt"] == 1
    assert job["progress"] == 1.0
    assert job["started_at"]
    assert job["finished_at"]
    log = await client.get(f"/api/v1/jobs/{job['id']}/log", headers=alice.headers)
    assert [line["message"] for line in log.json()] == ["worked 0.1 s"]


async def test_the_demo_kind_is_for_operators_only(client, alice, operator):
    refused = await submit(client, alice, "system.sleep", {"seconds": 0})
    assert refused.status_code == 403
    accepted = await submit(client, operator, "system.sleep", {"seconds": 0.05, "steps": 2})
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "succeeded"
    assert accepted.json()["result"] == {"slept_seconds": 0.05, "steps": 2, "attempt": 1}
    kinds_seen = await client.get("/api/v1/job-kinds", headers=operator.headers)
    assert "system.sleep" in {k["name"] for k in kinds_seen.json()}
    kinds_alice = await client.get("/api/v1/job-kinds", headers=alice.headers)
    assert "system.sleep" not in {k["name"] for k in kinds_alice.json()}


async def test_bad_submissions_get_problems(client, alice):
    unknown = await submit(client, alice, "no.such.kind")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    bad = await submit(client, alice, "test.flaky", {"succeed_on": "soon"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "/payload/succeed_on"
    extra = await client.post(
        "/api/v1/jobs", json={"kind": "test.noop", "surprise": 1}, headers=alice.headers
    )
    assert extra.status_code == 422


async def test_an_idempotency_key_returns_the_same_job(client, alice, db_session):
    first = await submit(client, alice, "test.noop", {}, **{"Idempotency-Key": "abc-1"})
    again = await submit(client, alice, "test.noop", {}, **{"Idempotency-Key": "abc-1"})
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await submit(client, alice, "test.work", {}, **{"Idempotency-Key": "abc-1"})
    assert other.status_code == 409
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    count = len((await db_session.scalars(select(Job).where(Job.org_id == alice.org_id))).all())
    assert count == 1


async def test_failures_are_problem_documents(client, alice):
    boom = (await submit(client, alice, "test.boom")).json()
    assert boom["status"] == "failed"
    assert boom["error"]["type"] == "/problems/job-error"
    assert boom["error"]["detail"] == "the handler broke"
    assert boom["error"]["exception"] == "ValueError"
    not_json = (await submit(client, alice, "test.not_json")).json()
    assert not_json["status"] == "failed"
    assert not_json["error"]["type"] == "/problems/job-result-not-json"


async def test_a_retryable_failure_is_retried(client, alice):
    job = (await submit(client, alice, "test.flaky", {"succeed_on": 2})).json()
    assert job["status"] == "succeeded"
    assert job["result"] == {"attempt": 2}


async def test_retries_wait_for_their_backoff(client, alice, app):
    job = (await submit(client, alice, "test.flaky_backoff", {"succeed_on": 2})).json()
    assert job["status"] == "queued"
    assert job["waiting"] is True
    assert job["attempt"] == 1
    assert job["error"]["detail"] == "not yet (attempt 1)"
    not_before = datetime.fromisoformat(job["not_before"])
    assert 55 < (not_before - datetime.now(UTC)).total_seconds() <= 60
    # Not due yet: the sweeper leaves it waiting.
    await app.state.dispatcher.sweep(stale_after=MINUTE, redispatch_after=MINUTE)
    again = (await client.get(f"/api/v1/jobs/{job['id']}", headers=alice.headers)).json()
    assert again["status"] == "queued"


async def test_retries_stop_at_max_attempts(client, alice):
    job = (await submit(client, alice, "test.flaky", {"succeed_on": 9})).json()
    assert job["status"] == "failed"
    assert job["attempt"] == 3
    assert job["error"]["detail"] == "not yet (attempt 3)"


@pytest.mark.parametrize("kind", ["test.cooperative_slow", "test.async_slow"])
async def test_a_job_over_its_time_limit_fails_clearly(client, alice, kind):
    job = (await submit(client, alice, kind)).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "/problems/job-time-limit"
    assert "longer than its limit of 1 seconds" in job["error"]["detail"]


async def test_a_handler_ignoring_its_time_limit_ends_its_process(client, alice, app):
    exits = []
    app.state.runtime.hard_exit = lambda: exits.append(True)
    job = (await submit(client, alice, "test.stubborn")).json()
    assert job["status"] == "failed"
    assert job["error"]["type"] == "/problems/job-time-limit"
    assert exits == [True]


async def test_jobs_are_listed_and_filtered(client, alice, mallory, db_session):
    await submit(client, alice, "test.noop")
    await submit(client, alice, "test.boom")
    await make_job(db_session, mallory.org_id)
    listed = (await client.get("/api/v1/jobs", headers=alice.headers)).json()
    assert listed["total"] == 2
    assert [j["kind"] for j in listed["items"]] == ["test.boom", "test.noop"]
    failed = (await client.get("/api/v1/jobs?status=failed", headers=alice.headers)).json()
    assert [j["kind"] for j in failed["items"]] == ["test.boom"]
    bad = await client.get("/api/v1/jobs?status=melted", headers=alice.headers)
    assert bad.status_code == 422


async def test_cancel_a_waiting_job_and_not_an_ended_one(client, alice, db_session):
    waiting = await make_job(db_session, alice.org_id)
    cancelled = await client.post(f"/api/v1/jobs/{waiting.id}/cancel", headers=alice.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await client.post(f"/api/v1/jobs/{waiting.id}/cancel", headers=alice.headers)
    assert again.status_code == 409


async def test_the_event_stream_of_an_ended_job(client, alice):
    job = (await submit(client, alice, "test.work", {"seconds": 0})).json()
    async with client.stream(
        "GET", f"/api/v1/jobs/{job['id']}/events", headers=alice.headers
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in response.aiter_text()])
    events = [block for block in text.split("\n\n") if block]
    names = [block.split("\n")[0] for block in events]
    assert names == ["event: log", "event: job", "event: end"]
    data = json.loads(events[1].split("data: ", 1)[1])
    assert data["status"] == "succeeded"


@pytest.mark.parametrize(
    "last_event_id", ["99999999999999999999:99999999999999999999", "4294967296:1", b"1:\xb2", "x"]
)
async def test_a_hostile_last_event_id_starts_the_stream_over(client, alice, last_event_id):
    """Numbers past the columns' range (a driver error mid-stream before), or digits int()
    does not read (a superscript two, as Latin-1 header bytes), are not ours: the stream starts
    from the beginning."""
    job = (await submit(client, alice, "test.work", {"seconds": 0})).json()
    headers = {**alice.headers, "Last-Event-ID": last_event_id}
    async with client.stream(
        "GET", f"/api/v1/jobs/{job['id']}/events", headers=headers
    ) as response:
        text = "".join([chunk async for chunk in response.aiter_text()])
    names = [block.split("\n")[0] for block in text.split("\n\n") if block]
    assert names == ["event: log", "event: job", "event: end"]


async def test_operators_list_every_organizations_jobs(client, alice, operator, mallory):
    await submit(client, alice, "test.noop")
    await submit(client, mallory, "test.noop")
    listed = await client.get("/api/v1/admin/jobs?kind=test.noop", headers=operator.headers)
    assert listed.status_code == 200
    assert {j["org_id"] for j in listed.json()["items"]} >= {alice.org_id, mallory.org_id}
    refused = await client.get("/api/v1/admin/jobs", headers=alice.headers)
    assert refused.status_code == 403


async def test_compute_seconds_are_metered_when_a_job_ends(client, alice, db_session):
    from atelier.plans.models import Usage

    job = (await submit(client, alice, "test.work", {"seconds": 1.2})).json()
    assert job["status"] == "succeeded"
    assert 1.2 <= job["compute_seconds"] < 3
    metered = await db_session.scalar(
        select(Usage.amount).where(Usage.org_id == alice.org_id, Usage.meter == "compute_seconds")
    )
    assert metered == 1  # whole seconds, rounded
    usage = await client.get(f"/api/v1/orgs/{alice.org_id}/usage", headers=alice.headers)
    meters = {m["meter"]: m["used"] for m in usage.json()["meters"]}
    assert meters["compute_seconds"] == 1


async def test_queue_gauges_come_from_the_jobs_table(client, alice, db_session):
    await make_job(db_session, alice.org_id, queue="ml")  # waiting for a slot
    await make_job(db_session, alice.org_id, queue="ml", status="running")
    metrics = (await client.get("/metrics")).text
    assert 'atelier_jobs_queue_depth{queue="ml",state="waiting"} 1.0' in metrics
    assert 'atelier_jobs_queued{queue="ml"} 1.0' in metrics
    assert 'atelier_jobs_running{queue="ml"} 1.0' in metrics
