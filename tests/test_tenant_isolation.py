"""Tenant isolation, discovered from the OpenAPI document so it covers routes added later.

Every operation declares `x-atelier-resource` and `x-atelier-action`; every operation with a
path parameter is called by a user of another organization with the ids of the victim's
objects, and must answer 404 (403 only for operations declared `admin`).
"""

import re

import pytest

from tests.automl.factories import make_run
from tests.identity.factories import join, make_user
from tests.jobs.factories import make_job

ACTIONS = {"public", "read", "create", "update", "delete", "admin"}


def _skops_model() -> bytes:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    return sio.dumps(model)


async def test_every_operation_declares_what_it_touches(app):
    missing = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
        if "x-atelier-resource" not in operation or operation.get("x-atelier-action") not in ACTIONS
    ]
    assert missing == [], "use **operation(resource, action) on these routes"


@pytest.fixture
async def victim_ids(client, db_session, alice) -> dict[str, str]:
    """An object of Alice's organization for every path parameter name the API uses."""
    member = await make_user(db_session, display_name="Victim member")
    await join(db_session, member, alice.org_id, "member")
    key = await client.post("/api/v1/api-keys", json={"name": "victim"}, headers=alice.headers)
    invitation = await client.post(
        f"/api/v1/orgs/{alice.org_id}/invitations",
        json={"email": "invitee@example.com"},
        headers=alice.headers,
    )
    job = await make_job(db_session, alice.org_id)
    dataset = await client.post(
        "/api/v1/datasets",
        files={"file": ("victim.csv", b"a,b\n1,2\n3,4\n", "text/csv")},
        headers=alice.headers,
    )
    assert dataset.status_code == 201, dataset.text
    run = await make_run(
        db_session,
        alice.org_id,
        dataset.json()["dataset"]["id"],
        dataset_version_id=dataset.json()["version"]["id"],
    )
    model = await client.post(
        "/api/v1/models/victim-model/versions",
        files={"file": ("victim.skops", _skops_model(), "application/octet-stream")},
        headers=alice.headers,
    )
    assert model.status_code == 201, model.text
    return {
        "name": "victim-model",
        "run_id": run.id,
        "dataset_id": dataset.json()["dataset"]["id"],
        "number": "1",
        "org_id": alice.org_id,
        "job_id": job.id,
        "user_id": member.id,
        "key_id": key.json()["id"],
        "invitation_id": invitation.json()["id"],
        "plan_id": "trial",
    }


async def test_another_organization_gets_404_on_every_tenant_route(
    app, client, mallory, victim_ids
):
    checked = 0
    for path, operations in app.openapi()["paths"].items():
        params = re.findall(r"\{(\w+)\}", path)
        guarded = [op for op in operations.values() if op["x-atelier-action"] != "public"]
        if not params or not guarded:
            continue
        unknown = set(params) - victim_ids.keys()
        assert not unknown, f"teach victim_ids how to make a {unknown} for {path}"
        url = path.format(**victim_ids)
        for method, operation in operations.items():
            if operation["x-atelier-action"] == "public":
                continue
            response = await client.request(method.upper(), url, headers=mallory.headers, json={})
            allowed = {404, 403} if operation["x-atelier-action"] == "admin" else {404}
            if "{name}" in path and operation["x-atelier-action"] == "create":
                # Model names are per organization: this would make Mallory's own model of
                # that name (her empty body is refused), never touch Alice's.
                allowed = {422}
            assert response.status_code in allowed, f"{method.upper()} {url}: {response.text}"
            checked += 1
    assert checked >= 7  # the identity routes at least; more as domains arrive
