"""The datasets and AutoML pages over HTTP: uploads through the page's form (its script's JSON
answers and the plain form's redirects), profiles with their charts, the new-run form, a run's
page and its event stream, the report and the model; bad input, other organizations' ids,
missing CSRF tokens."""

import random
import re

import pytest
from sqlalchemy import func, select

from atelier import __version__
from atelier.automl.report import build_report
from atelier.core.blobs import org_key
from atelier.core.clock import SystemClock
from atelier.core.uploads import CHUNK_BYTES
from atelier.jobs.models import RUNNING, SUCCEEDED, Job
from atelier.plans.models import Plan
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob
from atelier.web.datasets_pages import HISTOGRAM_HEIGHT, PAGE_SIZE, chart_of, format_number
from tests.automl.factories import make_run
from tests.automl.test_report_document import RUN, binary_result
from tests.identity.factories import join, make_user, personal_org_id
from tests.identity.factories import sign_in as api_sign_in
from tests.web.test_pages import lang_of, urls_in
from tests.web.test_sign_in_pages import csrf_of
from tests.web.test_sign_in_pages import sign_in as web_sign_in

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
HOSTILE = '<img src=x onerror="alert(1)">'


def churn_csv(rows: int = 300, seed: int = 3) -> bytes:
    """Subscribers: who left? Mostly the new ones on the basic plan. An id, numbers, categories,
    a date, a constant column and a yes/no target."""
    rng = random.Random(seed)
    lines = ["customer_id,tenure_months,monthly_fee,plan,region,signed_up,channel,churned"]
    for i in range(rows):
        plan = rng.choice(["basic", "plus", "premium"])
        tenure = rng.randint(1, 72)
        fee = {"basic": 9.99, "plus": 19.99, "premium": 39.99}[plan] * rng.uniform(0.9, 1.1)
        risk = (0.7 if tenure < 12 else 0.2) + (0.2 if plan == "basic" else -0.1)
        churned = "yes" if rng.random() < risk else "no"
        region = rng.choice(["north", "south", "east", "west"])
        lines.append(
            f"C{10000 + i},{tenure},{fee:.2f},{plan},{region},2024-{rng.randint(1, 12):02d}-01,"
            f"web,{churned}"
        )
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def ada(client, db_session):
    """A user signed in to the UI (the client keeps her session cookie) who may also call
    the API (her token's headers)."""
    user = await make_user(db_session, display_name="Ada")
    api = await api_sign_in(client, user, await personal_org_id(db_session, user))
    await web_sign_in(client, user.email)
    return api


async def token_of(client, path: str = "/datasets") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def upload(client, token, content=None, *, path="/datasets", name="Churn", headers=JSON):
    fields = {"csrf_token": token, "name": name} if token else {"name": name}
    return await client.post(
        path,
        data=fields,
        files={"file": ("churn.csv", churn_csv() if content is None else content, "text/csv")},
        headers=headers,
    )


async def api_dataset(client, who, content=None, name="Churn") -> dict:
    response = await client.post(
        "/api/v1/datasets",
        data={"name": name},
        files={"file": ("churn.csv", content or churn_csv(), "text/csv")},
        headers=who.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def blob_rows(session, org_id: str) -> int:
    return await session.scalar(
        select(func.count()).select_from(StoredBlob).where(StoredBlob.org_id == org_id)
    )


# ---- sign-in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/datasets", "/datasets/ds_x", "/automl", "/automl/new"])
async def test_the_pages_need_a_sign_in(client, path):
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


async def test_the_navigation_links_the_datasets_and_automl_pages(client, ada):
    home = (await client.get("/")).text
    assert 'href="/datasets" data-nav="datasets"' in home
    assert 'href="/automl" data-nav="automl"' in home


# ---- uploads -----------------------------------------------------------------------------------


async def test_the_upload_form_sends_its_token_and_name_before_the_file(client, ada):
    page = (await client.get("/datasets")).text
    form = re.search(r'<form method="post" action="/datasets".*?</form>', page, re.S).group(0)
    assert 'enctype="multipart/form-data"' in form
    assert "data-upload" in form
    assert form.index('name="csrf_token"') < form.index('name="name"') < form.index('name="file"')
    assert "<progress" in form
    assert '<script src="/static/js/upload.js' in page


async def test_an_upload_from_the_script_answers_where_the_profile_is(client, ada, db_session):
    response = await upload(client, await token_of(client))
    assert response.status_code == 201, response.text
    location = response.json()["location"]
    dataset_id = location.removeprefix("/datasets/")
    listed = (await client.get("/api/v1/datasets", headers=ada.headers)).json()
    assert [d["id"] for d in listed["items"]] == [dataset_id]
    assert listed["items"][0]["name"] == "Churn"
    page = (await client.get("/datasets")).text
    assert f'<a href="/datasets/{dataset_id}">Churn</a>' in page


async def test_the_list_comes_in_pages(client, ada):
    for number in range(PAGE_SIZE + 1):
        await api_dataset(client, ada, content=b"a,b\n1,2\n3,4\n", name=f"Table {number:02d}")
    first = (await client.get("/datasets")).text
    assert first.count("<tr data-dataset=") == PAGE_SIZE
    assert "Table 20" in first  # the most recent first
    assert f"1–{PAGE_SIZE} of {PAGE_SIZE + 1}" in first
    assert f'href="/datasets?offset={PAGE_SIZE}" rel="next"' in first
    second = (await client.get(f"/datasets?offset={PAGE_SIZE}")).text
    assert second.count("<tr data-dataset=") == 1
    assert "Table 00" in second
    assert 'href="/datasets?offset=0" rel="prev"' in second
    assert 'rel="next"' not in second


async def test_a_plain_form_upload_is_redirected_to_the_profile(client, ada):
    response = await upload(client, await token_of(client), name="", headers=HTML)
    assert response.status_code == 303
    assert re.fullmatch(r"/datasets/ds_\w+", response.headers["location"])
    profile = await client.get(response.headers["location"])
    assert '<h1 data-dataset="' in profile.text
    assert ">churn</h1>" in profile.text  # no name given: the file's


async def test_the_profile_shows_each_column_with_its_chart(client, ada):
    created = await api_dataset(client, ada)
    dataset_id = created["dataset"]["id"]
    response = await client.get(f"/datasets/{dataset_id}")
    assert response.status_code == 200
    page = response.text
    assert "300 rows" in page
    assert "8 columns" in page
    kinds = dict(re.findall(r'data-column="([^"]+)" data-kind="([^"]+)"', page))
    assert kinds == {
        "customer_id": "identifier",
        "tenure_months": "integer",
        "monthly_fee": "numeric",
        "plan": "categorical",
        "region": "categorical",
        "signed_up": "datetime",
        "channel": "constant",
        "churned": "boolean",
    }
    columns = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<article data-column="([^"]+)".*?</article>', page, re.S)
    }
    assert len(columns) == 8
    fee = columns["monthly_fee"]
    assert fee.count("<svg") == 1
    assert fee.count('<rect class="bar"') == 20  # the profile's 20 bins
    assert "Distribution of monthly_fee" in fee
    assert "Standard deviation" in fee
    plan = columns["plan"]
    assert plan.count('<rect class="bar"') == 3
    assert "Most frequent values of plan" in plan
    assert '<text class="label"' in plan
    assert "<svg" not in columns["customer_id"]  # every value differs: nothing to draw
    assert "Left out of training: a different value on every row" in columns["customer_id"]
    assert columns["signed_up"].count('<rect class="bar"') == 20
    assert f'href="/automl/new?dataset={dataset_id}&amp;version=1"' in page
    assert f'href="/datasets/{dataset_id}/versions/1/download?file=parquet"' in page
    assert "data-schema-diff" not in page  # version 1 has nothing to compare with
    assert f"<p>Atelier {__version__} ·" in page  # the page's own data leaves the footer alone


async def test_pages_draw_charts_with_no_script_inline_style_or_outside_asset(client, ada):
    created = await api_dataset(client, ada, content=churn_csv(40))
    page = (await client.get(f"/datasets/{created['dataset']['id']}")).text
    assert "style=" not in page  # the CSP allows no inline style
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts
    assert all('src="/static/' in attributes for attributes in scripts)
    assert [u for u in urls_in(page) if u.startswith(("http:", "https:", "//"))] == []
    for path in ("/static/js/upload.js", "/static/js/run-events.js", "/static/css/ml.css"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_download_link_leads_to_the_file_as_sent(client, ada):
    content = churn_csv(20)
    created = await api_dataset(client, ada, content=content)
    path = f"/datasets/{created['dataset']['id']}/versions/1/download?file=original"
    response = await client.get(path)
    assert response.status_code == 303
    file = await client.get(response.headers["location"])
    assert file.content == content


async def test_a_dataset_is_deleted_from_its_page_with_its_files(client, ada, db_session):
    created = await api_dataset(client, ada)
    dataset_id = created["dataset"]["id"]
    page = await client.get(f"/datasets/{dataset_id}")
    assert 'data-action="delete-dataset"' in page.text
    path = f"/datasets/{dataset_id}/delete"
    refused = await client.post(path, data={})
    assert refused.status_code == 403
    assert await blob_rows(db_session, ada.org_id) == 2
    deleted = await client.post(path, data={"csrf_token": csrf_of(page.text)})
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/datasets"
    assert (await client.get(f"/datasets/{dataset_id}")).status_code == 404
    assert await blob_rows(db_session, ada.org_id) == 0


async def test_a_new_version_from_the_page_shows_its_schema_diff(client, ada):
    dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
    token = await token_of(client, f"/datasets/{dataset_id}")
    header, *rows = churn_csv().decode().splitlines()
    wider = "\n".join([header + ",extra", *(row + ",1" for row in rows)]).encode()
    response = await upload(client, token, wider, path=f"/datasets/{dataset_id}/versions")
    assert response.status_code == 201, response.text
    assert response.json()["location"] == f"/datasets/{dataset_id}/versions/2"
    page = (await client.get(f"/datasets/{dataset_id}/versions/2")).text
    assert "Changes since version 1" in page
    assert 'data-added="extra"' in page
    assert f'href="/datasets/{dataset_id}/versions/1"' in page
    first = (await client.get(f"/datasets/{dataset_id}/versions/1")).text
    assert 'data-version="1"' in first


async def test_a_garbage_file_shows_the_problem_and_keeps_nothing(client, ada, db_session):
    token = await token_of(client)
    garbage = bytes(range(256)) * 40
    scripted = await upload(client, token, garbage)
    assert scripted.status_code == 415  # not a table in any format read
    assert scripted.headers["content-type"] == "application/problem+json"
    detail = scripted.json()["detail"]
    assert detail
    plain = await upload(client, token, garbage, name=HOSTILE, headers=HTML)
    assert plain.status_code == 415
    assert lang_of(plain.text) == "en"
    message = re.search(r"data-upload-error>(.*?)</p>", plain.text, re.S).group(1)
    assert message.replace("&#39;", "'").replace("&quot;", '"') == detail
    assert HOSTILE not in plain.text  # the name typed is kept, escaped
    assert 'value="&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"' in plain.text
    listed = (await client.get("/api/v1/datasets", headers=ada.headers)).json()
    assert listed["total"] == 0
    assert await blob_rows(db_session, ada.org_id) == 0


async def test_a_full_storage_quota_is_shown_on_the_page_and_keeps_nothing(client, ada, db_session):
    """Refused inside the service's unit of work (rolled back): the page still renders."""
    await db_session.execute(
        Plan.__table__.update().where(Plan.id == "trial").values(max_storage_bytes=100)
    )
    await db_session.commit()
    response = await upload(client, await token_of(client), headers=HTML)
    assert response.status_code == 402
    assert "data-user=" in response.text
    message = re.search(r"data-upload-error>(.*?)</p>", response.text, re.S).group(1)
    assert "storage" in message.lower()
    assert (await client.get("/api/v1/datasets", headers=ada.headers)).json()["total"] == 0
    assert await blob_rows(db_session, ada.org_id) == 0


async def test_an_upload_without_its_csrf_token_is_refused_and_keeps_nothing(
    client, ada, db_session
):
    await client.get("/datasets")  # the CSRF cookie, but no token in the form
    refused = await upload(client, None)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "csrf"
    forged = await upload(client, "0" * 64, headers=HTML)
    assert forged.status_code == 403
    assert "reload the page and retry" in forged.text
    # The token is looked for when the file starts: one sent after a file is too late.
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + churn_csv(3000)
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        f"{await token_of(client)}\r\n--{boundary}--\r\n".encode()
    )
    assert len(body) > 2 * CHUNK_BYTES  # read in several pieces, as from a network
    late = await client.post(
        "/datasets",
        content=body,
        headers={**JSON, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert late.status_code == 403
    assert (await client.get("/api/v1/datasets", headers=ada.headers)).json()["total"] == 0
    assert await blob_rows(db_session, ada.org_id) == 0


async def test_a_viewer_sees_no_upload_form_and_cannot_upload(client, db_session):
    owner = await make_user(db_session)
    viewer = await make_user(db_session, display_name="Viewer")
    org_id = await personal_org_id(db_session, owner)
    await join(db_session, viewer, org_id, "viewer")
    await web_sign_in(client, viewer.email)
    token = await token_of(client, "/")
    await client.post("/session/org", data={"org_id": org_id, "csrf_token": token})
    page = (await client.get("/datasets")).text
    assert "data-upload" not in page
    assert 'data-action="new-run"' not in (await client.get("/automl")).text
    refused = await upload(client, csrf_of(page))
    assert refused.status_code == 403
    assert "member" in refused.json()["detail"]


# ---- another organization --------------------------------------------------------------------


async def test_another_organizations_dataset_and_run_are_not_found(client, db_session, ada):
    other = await make_user(db_session, display_name="Mallory")
    mallory = await api_sign_in(client, other, await personal_org_id(db_session, other))
    theirs = await api_dataset(client, mallory)
    dataset_id = theirs["dataset"]["id"]
    run = await make_run(
        db_session, mallory.org_id, dataset_id, dataset_version_id=theirs["version"]["id"]
    )
    token = await token_of(client)
    for path in (
        f"/datasets/{dataset_id}",
        f"/datasets/{dataset_id}/versions/1",
        f"/datasets/{dataset_id}/versions/1/download",
        f"/automl/new?dataset={dataset_id}",
        f"/automl/new/fields?dataset={dataset_id}",
        f"/automl/runs/{run.id}",
        f"/automl/runs/{run.id}/events",
        f"/automl/runs/{run.id}/report",
        f"/automl/runs/{run.id}/model",
    ):
        response = await client.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert 'data-status="404"' in response.text, path
    version = await upload(client, token, path=f"/datasets/{dataset_id}/versions")
    assert version.status_code == 404
    started = await client.post(
        "/automl/runs",
        data={"csrf_token": token, "dataset": dataset_id, "target": "churned"},
        headers=HTML,
    )
    assert started.status_code == 404
    cancelled = await client.post(f"/automl/runs/{run.id}/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 404
    job = await db_session.get(Job, run.job_id, populate_existing=True)
    assert job.status == "queued"
    assert (await client.get(f"/api/v1/datasets/{dataset_id}", headers=mallory.headers)).json()[
        "latest_version"
    ] == 1


# ---- a new run -------------------------------------------------------------------------------


async def test_the_new_run_form_suggests_targets_from_the_profile(client, ada):
    dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
    page = (await client.get(f"/automl/new?dataset={dataset_id}")).text
    options = dict(re.findall(r'<option value="([^"]*)"([^>]*)>', page))
    assert " selected" in options[dataset_id]
    assert options["churned"] == " selected"  # the last column that can be predicted
    assert options["customer_id"] == " disabled"  # an identifier
    assert options["channel"] == " disabled"  # constant
    assert options["plan"] == ""
    assert 'name="budget_seconds" min="10" max="3600" step="1" required value="60"' in page
    assert f"<p>Atelier {__version__} ·" in page
    fragment = (await client.get(f"/automl/new/fields?dataset={dataset_id}&version=1")).text
    assert "<html" not in fragment
    assert 'name="target"' in fragment
    assert 'hx-get="/automl/new/fields"' in page


def test_a_column_named_like_a_target_is_suggested_first():
    from atelier.web.automl_pages import suggested_target, target_choices

    schema = [
        {"name": "id", "kind": "identifier"},
        {"name": "Label", "kind": "categorical"},
        {"name": "score", "kind": "numeric"},
        {"name": "notes", "kind": "text"},
    ]
    assert suggested_target(target_choices(schema)) == "Label"
    assert suggested_target(target_choices(schema[2:])) == "score"
    assert suggested_target(target_choices(schema[3:])) is None


class TestWithoutWorkers:
    """Jobs are stored and left queued (the local executor outside `atelier up`), so a run
    started from the form stays queued for the assertions."""

    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(jobs={"executor": "local"})

    async def test_starting_a_run_from_the_form_leads_to_its_page_then_cancel(self, client, ada):
        dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
        token = await token_of(client, f"/automl/new?dataset={dataset_id}")
        response = await client.post(
            "/automl/runs",
            data={
                "csrf_token": token,
                "dataset": dataset_id,
                "version": "1",
                "target": "churned",
                "task": "",
                "metric": "accuracy",
                "budget_seconds": "10",
            },
        )
        assert response.status_code == 303
        run_path = response.headers["location"]
        run_id = run_path.removeprefix("/automl/runs/")
        api = (await client.get(f"/api/v1/automl/runs/{run_id}", headers=ada.headers)).json()
        assert api["run"]["target"] == "churned"
        assert api["run"]["metric"] == "accuracy"
        assert api["run"]["budget_seconds"] == 10
        page = (await client.get(run_path)).text
        assert 'data-status="queued"' in page
        assert f'data-run-events="/automl/runs/{run_id}/events"' in page
        assert 'data-action="cancel"' in page
        assert '<script src="/static/js/run-events.js' in page
        assert 'id="register"' not in page
        listing = (await client.get("/automl")).text
        assert f'<tr data-run="{run_id}" data-status="queued">' in listing
        cancel_token = csrf_of(page)
        cancelled = await client.post(f"{run_path}/cancel", data={"csrf_token": cancel_token})
        assert cancelled.status_code == 303
        page = (await client.get(run_path)).text
        assert 'data-status="cancelled"' in page
        assert "data-run-events" not in page
        assert 'data-action="cancel"' not in page
        again = await client.post(f"{run_path}/cancel", data={"csrf_token": cancel_token})
        assert again.status_code == 303  # it had ended: nothing to do

    async def test_a_refused_run_shows_the_form_again_with_the_problem(self, client, ada):
        dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
        token = await token_of(client, "/automl/new")
        form = {"csrf_token": token, "dataset": dataset_id, "budget_seconds": "30"}
        identifier = await client.post("/automl/runs", data={**form, "target": "customer_id"})
        assert identifier.status_code == 422
        assert "cannot be predicted" in identifier.text
        assert 'value="30"' in identifier.text  # what was typed stays
        short = await client.post(
            "/automl/runs", data={**form, "target": "churned", "budget_seconds": "5"}
        )
        assert short.status_code == 422
        assert "budget_seconds" in short.text
        untargeted = await client.post("/automl/runs", data=form)
        assert untargeted.status_code == 422
        assert 'name="target"' in untargeted.text  # now with the dataset's columns
        listed = (await client.get("/api/v1/automl/runs", headers=ada.headers)).json()
        assert listed["total"] == 0

    async def test_a_plan_out_of_compute_time_shows_the_form_again(self, client, ada, db_session):
        """Refused inside the run's unit of work (rolled back): the form still renders."""
        dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
        await db_session.execute(
            Plan.__table__.update().where(Plan.id == "trial").values(monthly_compute_seconds=0)
        )
        await db_session.commit()
        token = await token_of(client, "/automl/new")
        form = {"csrf_token": token, "dataset": dataset_id, "target": "churned"}
        refused = await client.post("/automl/runs", data=form)
        assert refused.status_code == 402
        assert "compute_seconds a month" in refused.text
        assert "data-user=" in refused.text
        listed = (await client.get("/api/v1/automl/runs", headers=ada.headers)).json()
        assert listed["total"] == 0

    async def test_a_form_without_its_csrf_token_starts_no_run(self, client, ada):
        dataset_id = (await api_dataset(client, ada))["dataset"]["id"]
        await client.get("/automl/new")
        refused = await client.post(
            "/automl/runs", data={"dataset": dataset_id, "target": "churned"}
        )
        assert refused.status_code == 403
        listed = (await client.get("/api/v1/automl/runs", headers=ada.headers)).json()
        assert listed["total"] == 0


# ---- a run -----------------------------------------------------------------------------------


def trial(rank: int, trial_id, learner: str, score: float, weight: float = 0) -> dict:
    """A leaderboard row as `automl.summaries.leaderboard` writes it."""
    return {
        "rank": rank,
        "id": trial_id,
        "learner": learner,
        "params": {},
        "cv_score": score,
        "fit_seconds": 0.3,
        "finished_at_seconds": 4.2,
        "in_ensemble": weight,
    }


LEADERBOARD = [trial(1, "ensemble", "ensemble", 0.91), trial(2, 3, "lightgbm", 0.9, 0.75)]


@pytest.fixture
async def finished_run(app, client, db_session, ada):
    """A run whose job succeeded, with its results, report and model zip."""
    created = await api_dataset(client, ada)
    data = {"rows": 300, "columns": 8}
    report = build_report(RUN | {"dataset_name": "Churn"}, data, binary_result())
    run = await make_run(
        db_session,
        ada.org_id,
        created["dataset"]["id"],
        dataset_version_id=created["version"]["id"],
        task="binary",
        metric="roc_auc",
        results={
            "cv_score": 0.91,
            "holdout_metrics": {"roc_auc": 0.934, "accuracy": 0.875},
            "dropped_columns": [{"name": HOSTILE, "reason": "identifier"}],
        },
        report=report,
    )

    async def chunks():
        yield b"PK model"

    blob = await storage.save_upload(
        db_session,
        app.state.blobs,
        org_id=ada.org_id,
        plan=Plan(id="unlimited", name="Unlimited", max_storage_bytes=None),
        key=org_key(ada.org_id, "automl", run.id, "model.zip"),
        chunks=chunks(),
        content_type="application/zip",
        filename=f"{run.id}-model.zip",
        max_bytes=1024,
        clock=SystemClock(),
        purpose="automl-model",
    )
    run.dataset_name, run.target, run.leaderboard = "Churn", "churned", LEADERBOARD
    run.model_blob_id = blob.id
    job = await db_session.get(Job, run.job_id)
    now = SystemClock().now()
    job.status, job.progress, job.started_at, job.finished_at = SUCCEEDED, 1.0, now, now
    await db_session.commit()
    return run


async def test_a_finished_run_shows_its_results_report_and_model(client, finished_run):
    run = finished_run
    page = (await client.get(f"/automl/runs/{run.id}")).text
    assert 'data-status="succeeded"' in page
    assert "data-run-events" not in page  # nothing left to follow
    assert '<progress value="100" max="100"' in page
    assert '<tr data-metric="roc_auc"><th scope="row">roc_auc</th><td>0.934</td></tr>' in page
    assert page.count("<tr data-trial=") == 2
    assert HOSTILE not in page
    assert '<section id="register">' in page
    assert "<td data-task>binary classification · roc_auc</td>" in page
    assert f'href="/automl/runs/{run.id}/report" data-action="report"' in page
    report = await client.get(f"/automl/runs/{run.id}/report")
    assert report.status_code == 200
    assert report.text.startswith("<!doctype html>")
    assert "Churn" in report.text
    api_csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors"
    assert report.headers["content-security-policy"].startswith(api_csp)
    model = await client.get(f"/automl/runs/{run.id}/model")
    assert model.status_code == 303
    assert (await client.get(model.headers["location"])).content == b"PK model"
    listing = (await client.get("/automl")).text
    assert f'<tr data-run="{run.id}" data-status="succeeded">' in listing
    assert "0.91 <small>roc_auc</small>" in listing


async def test_the_event_stream_sends_the_live_page_then_its_end(client, finished_run):
    async with client.stream("GET", f"/automl/runs/{finished_run.id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join([chunk async for chunk in response.aiter_text()])
    events = [block for block in text.split("\n\n") if block]
    assert [block.split("\n", 1)[0] for block in events] == ["event: run", "event: end"]
    run_lines = events[0].split("\n")[1:]
    assert all(line.startswith("data: ") for line in run_lines)
    html = "\n".join(line.removeprefix("data: ") for line in run_lines)
    assert 'data-status="succeeded"' in html
    assert html.count("<tr data-trial=") == 2
    assert "<html" not in html
    assert events[1] == "event: end\ndata: succeeded"


async def test_a_running_run_offers_to_cancel_and_no_report_yet(client, db_session, ada):
    created = await api_dataset(client, ada)
    run = await make_run(
        db_session,
        ada.org_id,
        created["dataset"]["id"],
        dataset_version_id=created["version"]["id"],
    )
    run.leaderboard = LEADERBOARD[1:]
    job = await db_session.get(Job, run.job_id)
    job.status, job.progress, job.progress_message = RUNNING, 0.42, "lightgbm trial 3"
    job.started_at = SystemClock().now()
    await db_session.commit()
    page = (await client.get(f"/automl/runs/{run.id}")).text
    assert '<progress value="42" max="100"' in page
    assert "lightgbm trial 3" in page
    assert 'data-action="cancel"' in page
    assert "data-results" not in page
    report = await client.get(f"/automl/runs/{run.id}/report", headers=HTML)
    assert report.status_code == 409
    model = await client.get(f"/automl/runs/{run.id}/model", headers=JSON)
    assert model.status_code == 409


# ---- French --------------------------------------------------------------------------------


async def test_the_pages_speak_french(client, ada, finished_run):
    client.cookies.set("atelier_lang", "fr")
    dataset_id = finished_run.dataset_id
    checks = {
        "/datasets": "Jeux de données",
        f"/datasets/{dataset_id}": "Entraîner un modèle",
        "/automl": "Exécutions AutoML",
        f"/automl/new?dataset={dataset_id}": "Budget de temps, en secondes",
        f"/automl/runs/{finished_run.id}": "Classement",
    }
    for path, text in checks.items():
        page = (await client.get(path)).text
        assert lang_of(page) == "fr", path
        assert text in page, path
    profile = (await client.get(f"/datasets/{dataset_id}")).text
    assert "300 lignes" in profile
    assert "9,99" in profile or "10,4" in profile  # a decimal comma


# ---- what the pages compute ------------------------------------------------------------------


@pytest.mark.backend_independent
def test_a_histogram_chart_scales_its_bars_to_the_tallest():
    column = {
        "kind": "numeric",
        "histogram": {"edges": [0, 1, 2, 3, 4], "counts": [1, 4, 0, 2]},
        "top": [],
    }
    chart = chart_of(column, "en")
    assert chart.kind == "histogram"
    heights = [bar.height for bar in chart.bars]
    assert heights[1] == HISTOGRAM_HEIGHT - 2
    assert heights[2] == 0
    assert heights[0] == pytest.approx(heights[1] / 4)
    assert all(bar.y + bar.height == HISTOGRAM_HEIGHT for bar in chart.bars)
    assert chart.bars[1].title == "1 – 2: 4"


@pytest.mark.backend_independent
def test_a_top_values_chart_has_a_bar_per_value_and_identifiers_have_none():
    top = [{"value": "a" * 40, "count": 10}, {"value": "b", "count": 5}]
    chart = chart_of({"kind": "categorical", "top": top}, "fr")
    assert chart.kind == "top"
    assert [bar.count for bar in chart.bars] == ["10", "5"]
    assert chart.bars[0].label.endswith("…")
    assert len(chart.bars[0].label) == 18
    assert chart.bars[0].title == "a" * 40 + ": 10"
    assert chart.bars[1].width == pytest.approx(chart.bars[0].width / 2)
    assert chart_of({"kind": "identifier", "top": top}, "en") is None
    assert chart_of({"kind": "numeric", "histogram": None, "top": top}, "en").kind == "top"


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    ("value", "lang", "text"),
    [
        (1234567, "en", "1,234,567"),
        (1234567.8, "fr", "1\u202f234\u202f568"),
        (12.34567, "en", "12.346"),
        (0.812345, "fr", "0,8123"),
        (0.0000123, "en", "1.23E-5"),
        (float("nan"), "en", "—"),
        (None, "en", "—"),
        (0, "en", "0"),
    ],
)
def test_numbers_are_written_for_the_reader(value, lang, text):
    assert format_number(value, lang) == text
