"""The model registry's pages: list, versions with promotion, card, download, and registering
an AutoML run's model from a form."""

import re

import pytest

from tests.identity.factories import make_user, personal_org_id
from tests.registry.factories import finished_run, train_homes
from tests.web.test_sign_in_pages import csrf_of, sign_in


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return train_homes(tmp_path_factory.mktemp("trained"))


@pytest.fixture
async def owner(db_session, client):
    user = await make_user(db_session, display_name="Owner")
    await sign_in(client, user.email)
    return user, await personal_org_id(db_session, user)


async def token_of(client, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def test_register_a_run_then_promote_a_version_from_the_pages(
    client, owner, db_session, app, trained
):
    _, org_id = owner
    run = await finished_run(db_session, app.state.blobs, org_id, trained)
    empty = await client.get("/models")
    assert "No models yet" in empty.text
    token = await token_of(client, "/models")
    for _ in range(2):
        registered = await client.post(
            "/models/register", data={"run_id": run.id, "name": "homes", "csrf_token": token}
        )
        assert registered.status_code == 303, registered.text
    assert registered.headers["location"] == "/models/homes#v2"

    listed = await client.get("/models")
    assert 'data-model="homes"' in listed.text
    detail = await client.get("/models/homes")
    assert re.findall(r'data-version="(\d+)" data-stage="(\w+)"', detail.text) == [
        ("2", "none"),
        ("1", "none"),
    ]
    for number in (1, 2):
        promoted = await client.post(
            f"/models/homes/versions/{number}/stage",
            data={"stage": "production", "csrf_token": csrf_of(detail.text)},
        )
        assert promoted.status_code == 303
    detail = await client.get("/models/homes")
    assert re.findall(r'data-version="(\d+)" data-stage="(\w+)"', detail.text) == [
        ("2", "production"),
        ("1", "archived"),
    ]
    card = await client.get("/models/homes/versions/2/card")
    assert "homes — version 2" in card.text
    download = await client.get("/models/homes/versions/2/download")
    assert download.status_code == 303
    assert (await client.get(download.headers["location"])).status_code == 200


async def test_forms_need_their_csrf_token_and_other_orgs_models_are_404(
    client, owner, db_session, app, trained
):
    _, org_id = owner
    run = await finished_run(db_session, app.state.blobs, org_id, trained)
    refused = await client.post("/models/register", data={"run_id": run.id, "name": "homes"})
    assert refused.status_code == 403
    assert "No models yet" in (await client.get("/models")).text

    stranger = await make_user(db_session)
    theirs = await finished_run(
        db_session, app.state.blobs, await personal_org_id(db_session, stranger), trained
    )
    token = await token_of(client, "/models")
    response = await client.post(
        "/models/register", data={"run_id": theirs.id, "name": "homes", "csrf_token": token}
    )
    assert response.status_code == 404
    assert (await client.get("/models/elsewhere")).status_code == 404


async def test_the_pages_need_a_sign_in(client):
    response = await client.get("/models")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/models"
