"""The models API: versions from AutoML runs and from uploads, stages, cards, downloads, and
the files it refuses (pickle above all) leaving nothing behind."""

import io
import json
import pickle
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sqlalchemy import func, select

from atelier.audit.models import AuditEvent
from atelier.automl import artifacts
from atelier.registry.models import ModelVersion, RegisteredModel
from atelier.storage import service as storage
from atelier.storage.models import StoredBlob
from tests.automl.factories import make_run
from tests.identity.factories import join, make_user, sign_in
from tests.registry.factories import finished_run, train_homes

BASE = "/api/v1/models"


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return train_homes(tmp_path_factory.mktemp("trained"))


@pytest.fixture
async def run_id(db_session, app, alice, trained):
    run = await finished_run(db_session, app.state.blobs, alice.org_id, trained)
    return run.id


async def register(client, who, name, run_id, **extra):
    return await client.post(
        f"{BASE}/{name}/versions", json={"run_id": run_id, **extra}, headers=who.headers
    )


async def upload(client, who, name, content: bytes, filename="model.bin", **fields):
    return await client.post(
        f"{BASE}/{name}/versions",
        data=fields,
        files={"file": (filename, content, "application/octet-stream")},
        headers=who.headers,
    )


async def counts(session) -> tuple[int, int, int]:
    return (
        await session.scalar(select(func.count()).select_from(RegisteredModel)),
        await session.scalar(select(func.count()).select_from(ModelVersion)),
        await session.scalar(
            select(func.count())
            .select_from(StoredBlob)
            .where(StoredBlob.purpose == "model-version")
        ),
    )


async def fetch_zip(client, who, name, number) -> zipfile.ZipFile:
    response = await client.get(f"{BASE}/{name}/versions/{number}/download", headers=who.headers)
    assert response.status_code == 307, response.text
    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200
    return zipfile.ZipFile(io.BytesIO(fetched.content))


# ---- versions from AutoML runs -----------------------------------------------------------------


async def test_a_run_becomes_a_version_with_its_lineage_card_and_onnx_export(
    client, alice, run_id, trained, tmp_path
):
    response = await register(client, alice, "homes-sold-fast", run_id, description="First try")
    assert response.status_code == 201, response.text
    version = response.json()
    assert response.headers["location"] == f"{BASE}/homes-sold-fast/versions/1"
    assert (version["number"], version["stage"], version["source"], version["format"]) == (
        1,
        "none",
        "automl",
        "atelier",
    )
    assert version["run_id"] == run_id
    assert version["task"] == "binary"
    assert version["target"] == "sold_fast"
    lineage = version["lineage"]
    assert lineage["run_id"] == run_id
    assert lineage["dataset"]["name"] == "Homes"
    assert lineage["parameters"]["ensemble"], "the ensemble's members and parameters"
    assert lineage["metrics"]["holdout"] == trained.results["holdout_metrics"]
    assert set(lineage["library_versions"]) >= {"scikit-learn", "lightgbm"}
    assert lineage["atelier_version"]
    assert [c["name"] for c in version["signature"]["inputs"]] == [
        c["name"] for c in trained.model.input_schema
    ]
    assert version["onnx_export"] is True, version["onnx_note"]

    archive = await fetch_zip(client, alice, "homes-sold-fast", 1)
    assert set(archive.namelist()) == {
        "version.json",
        "model.skops",
        "model.onnx",
        "signature.json",
        "lineage.json",
        "MODEL_CARD.md",
        "report.json",
        "report.html",
    }
    assert json.loads(archive.read("version.json")) == {
        "format": "atelier",
        "name": "homes-sold-fast",
        "version": 1,
    }
    archive.extractall(tmp_path / "v1")
    model, signature = artifacts.load(tmp_path / "v1")
    rows = trained.frame.drop("sold_fast")
    assert np.allclose(model.predict_proba(rows), trained.model.predict_proba(rows))
    assert signature == version["signature"]

    card = await client.get(f"{BASE}/homes-sold-fast/versions/1/card", headers=alice.headers)
    assert card.headers["content-type"].startswith("text/markdown")
    assert card.text == archive.read("MODEL_CARD.md").decode()
    assert "# homes-sold-fast — version 1" in card.text
    assert "First try" in card.text
    assert "listing_id" in card.text, "the dropped identifier and why"
    holdout_auc = trained.results["holdout_metrics"]["roc_auc"]
    assert f"| roc_auc | {holdout_auc:.4g} |" in card.text


async def test_versions_number_up_and_the_model_lists_them(client, alice, run_id):
    for _ in range(2):
        assert (await register(client, alice, "homes", run_id)).status_code == 201
    listed = (await client.get(BASE, headers=alice.headers)).json()
    assert [(m["name"], m["latest_version"]) for m in listed["items"]] == [("homes", 2)]
    detail = (await client.get(f"{BASE}/homes", headers=alice.headers)).json()
    assert [v["number"] for v in detail["versions"]] == [2, 1]
    page = (await client.get(f"{BASE}/homes/versions?limit=1", headers=alice.headers)).json()
    assert (page["total"], [v["number"] for v in page["items"]]) == (2, [2])


async def test_a_run_without_a_model_or_of_another_org_cannot_be_registered(
    client, alice, mallory, db_session, app, trained
):
    unfinished = await make_run(db_session, alice.org_id, "ds_x")
    response = await register(client, alice, "homes", unfinished.id)
    assert response.status_code == 409, response.text
    theirs = await finished_run(db_session, app.state.blobs, mallory.org_id, trained)
    response = await register(client, alice, "homes", theirs.id)
    assert response.status_code == 404
    assert await counts(db_session) == (0, 0, 0)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("../etc", {"run_id": "run_x"}),
        ("a b", {"run_id": "run_x"}),
        ("-leading", {"run_id": "run_x"}),
        ("ok", {"run_id": 7}),
        ("ok", {"run": "run_x"}),
        ("ok", {"run_id": "run_x", "description": "x" * 2001}),
    ],
)
async def test_bad_registrations_are_422(client, alice, db_session, name, body):
    response = await client.post(f"{BASE}/{name}/versions", json=body, headers=alice.headers)
    # "../etc" is normalised away by the client and does not route: 404. Every other is 422.
    assert response.status_code == (404 if name == "../etc" else 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await counts(db_session) == (0, 0, 0)


# ---- stages -----------------------------------------------------------------------------------


async def stage(client, who, name, number, to):
    return await client.patch(
        f"{BASE}/{name}/versions/{number}", json={"stage": to}, headers=who.headers
    )


async def test_one_production_version_at_a_time_and_every_change_audited(
    client, alice, run_id, db_session
):
    for _ in range(3):
        await register(client, alice, "homes", run_id)
    assert (await stage(client, alice, "homes", 1, "production")).json()["stage"] == "production"
    assert (await stage(client, alice, "homes", 2, "staging")).json()["stage"] == "staging"
    promoted = await stage(client, alice, "homes", 2, "production")
    assert promoted.status_code == 200, promoted.text
    versions = (await client.get(f"{BASE}/homes/versions", headers=alice.headers)).json()
    assert {v["number"]: v["stage"] for v in versions["items"]} == {
        3: "none",
        2: "production",
        1: "archived",
    }
    listed = (await client.get(BASE, headers=alice.headers)).json()
    assert listed["items"][0]["production_version"] == 2
    events = (
        await db_session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "model.stage_changed")
            .order_by(AuditEvent.created_at)
        )
    ).all()
    assert [(e.details["version"], e.details["to"], e.details["archived"]) for e in events] == [
        (1, "production", []),
        (2, "staging", []),
        (2, "production", [1]),
    ]
    bad = await stage(client, alice, "homes", 3, "live")
    assert bad.status_code == 422


async def test_a_viewer_reads_but_cannot_promote(client, alice, run_id, db_session):
    await register(client, alice, "homes", run_id)
    viewer = await make_user(db_session)
    await join(db_session, viewer, alice.org_id, "viewer")
    signed = await sign_in(client, viewer, alice.org_id)
    assert (await client.get(f"{BASE}/homes", headers=signed.headers)).status_code == 200
    assert (await stage(client, signed, "homes", 1, "production")).status_code == 403
    assert (await register(client, signed, "homes", run_id)).status_code == 403


async def test_deleting_a_version_releases_its_storage_but_not_in_production(
    client, alice, run_id, db_session
):
    await register(client, alice, "homes", run_id)
    await register(client, alice, "homes", run_id)
    used = await storage.storage_used(db_session, alice.org_id)
    await stage(client, alice, "homes", 2, "production")
    refused = await client.delete(f"{BASE}/homes/versions/2", headers=alice.headers)
    assert refused.status_code == 409
    deleted = await client.delete(f"{BASE}/homes/versions/1", headers=alice.headers)
    assert deleted.status_code == 204
    assert await storage.storage_used(db_session, alice.org_id) < used
    gone = await client.get(f"{BASE}/homes/versions/1", headers=alice.headers)
    assert gone.status_code == 404


async def test_another_org_sees_no_model(client, alice, mallory, run_id):
    await register(client, alice, "homes", run_id)
    for path in ("/homes", "/homes/versions", "/homes/versions/1", "/homes/versions/1/card"):
        response = await client.get(BASE + path, headers=mallory.headers)
        assert response.status_code == 404, path
    assert (await stage(client, mallory, "homes", 1, "production")).status_code == 404
    assert (await client.get(BASE, headers=mallory.headers)).json()["total"] == 0


# ---- uploads ----------------------------------------------------------------------------------


def fitted_frame_model():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 60), "income": rng.uniform(1, 9, 60)})
    labels = np.where(frame["age"] > 45, "senior", "junior")
    return LogisticRegression().fit(frame, labels), frame


async def test_an_onnx_model_is_accepted_with_its_signature_read_from_the_graph(
    client, alice, db_session
):
    from skl2onnx import to_onnx

    model, frame = fitted_frame_model()
    graph = to_onnx(model, frame.to_numpy(dtype=np.float32)[:1], target_opset=15)
    response = await upload(client, alice, "churn", graph.SerializeToString(), "churn.onnx")
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["format"], version["source"]) == ("onnx", "upload")
    signature = version["signature"]
    assert signature["inputs"][0]["shape"][-1] == 2
    assert signature["classes"] == ["junior", "senior"]
    assert version["lineage"]["filename"] == "churn.onnx"
    archive = await fetch_zip(client, alice, "churn", 1)
    assert archive.read("model.onnx") == graph.SerializeToString()


async def test_a_skops_estimator_is_accepted_with_its_signature(client, alice, tmp_path):
    model, _frame = fitted_frame_model()
    path = tmp_path / "churn.skops"
    sio.dump(model, path)
    response = await upload(client, alice, "churn", path.read_bytes(), "churn.skops")
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["format"] == "skops"
    assert [c["name"] for c in version["signature"]["inputs"]] == ["age", "income"]
    assert version["signature"]["classes"] == ["junior", "senior"]
    assert version["task"] == "binary"
    card = await client.get(f"{BASE}/churn/versions/1/card", headers=alice.headers)
    assert "uploaded, not trained here" in card.text


class Trap:
    """Loading this pickle would write a file: proof that nothing was deserialized."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickles(tmp_path) -> dict[str, bytes]:
    marker = str(tmp_path / "unpickled")
    model, _ = fitted_frame_model()
    found = {
        "pickle": pickle.dumps(Trap(marker)),
        "pickle-protocol-0": pickle.dumps(Trap(marker), protocol=0),
        "pickle-model": pickle.dumps(model),
    }
    for compress in (0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)):
        path = tmp_path / "model.joblib"
        joblib.dump(Trap(marker), path, compress=compress)
        found[f"joblib-{compress}"] = path.read_bytes()
    holder = io.BytesIO()
    with zipfile.ZipFile(holder, "w") as zipped:  # the layout of a PyTorch checkpoint
        zipped.writestr("archive/data.pkl", pickle.dumps(Trap(marker)))
    found["torch-like-zip"] = holder.getvalue()
    try:
        import cloudpickle

        found["cloudpickle"] = cloudpickle.dumps(lambda: open(marker, "w"))  # noqa: SIM115
    except ImportError:
        pass
    return found


async def test_pickle_and_its_relatives_are_refused_unread(client, alice, db_session, tmp_path):
    for kind, content in pickles(tmp_path).items():
        response = await upload(client, alice, "churn", content, "model.pkl")
        assert response.status_code == 415, (kind, response.text)
        problem = response.json()
        assert problem["type"].endswith("pickle-refused"), (kind, problem)
        assert "skops" in problem["detail"]
        assert "ONNX" in problem["detail"]
    assert not (tmp_path / "unpickled").exists(), "a pickle was loaded"
    assert await counts(db_session) == (0, 0, 0)


async def test_bad_model_files_are_clear_4xx_and_leave_nothing(client, alice, db_session, tmp_path):
    from skl2onnx import to_onnx

    model, frame = fitted_frame_model()
    graph = to_onnx(model, frame.to_numpy(dtype=np.float32)[:1], target_opset=15)
    untrusted = tmp_path / "untrusted.skops"
    sio.dump(make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()), untrusted)
    zip_of_text = io.BytesIO()
    with zipfile.ZipFile(zip_of_text, "w") as zipped:
        zipped.writestr("notes.txt", "hello")
    cases = {
        "empty": (b"", 422),
        "text": (b"hello, this is not a model", 415),
        "png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415),
        "truncated onnx": (graph.SerializeToString()[:200], 422),
        "zip of text": (zip_of_text.getvalue(), 415),
        "untrusted skops": (untrusted.read_bytes(), 422),
    }
    for what, (content, status) in cases.items():
        response = await upload(client, alice, "churn", content)
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    untrusted_problem = (await upload(client, alice, "churn", untrusted.read_bytes())).json()
    assert "numpy.log1p" in untrusted_problem["untrusted_types"]
    assert await counts(db_session) == (0, 0, 0)
    leftovers = list((tmp_path / "var" / "tmp").glob("*")) if (tmp_path / "var").exists() else []
    assert leftovers == [], "temporary files are removed"


async def test_a_version_exports_as_an_mlflow_pyfunc_model(
    client, alice, run_id, trained, tmp_path
):
    import mlflow.pyfunc

    await register(client, alice, "homes", run_id)
    response = await client.get(
        f"{BASE}/homes/versions/1/export?format=mlflow", headers=alice.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(tmp_path / "mlflow")
    names = {p.name for p in (tmp_path / "mlflow").rglob("*")}
    assert "MLmodel" in names
    assert not [n for n in names if n.endswith((".pkl", ".pickle"))]
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "mlflow"))
    rows = trained.frame.drop("sold_fast").to_pandas()
    predicted = loaded.predict(rows)
    assert list(predicted["prediction"]) == list(trained.model.predict(rows))
    unknown = await client.get(
        f"{BASE}/homes/versions/1/export?format=pickle", headers=alice.headers
    )
    assert unknown.status_code == 422
