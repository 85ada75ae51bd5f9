"""Uploaded skops files are read in a child process (`registry.isolated`) and converted to ONNX
where they can be: the version keeps `model.onnx` beside `model.skops`, and serving reads the
graph. A child that fails or runs too long is a refused upload."""

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from atelier.core.errors import InvalidInput
from atelier.registry import isolated, pyfunc
from tests.registry.test_api import BASE, fetch_zip, upload


def frame_and_labels():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 80), "income": rng.uniform(1, 9, 80)})
    return frame, np.where(frame["age"] + 3 * frame["income"] > 60, "yes", "no")


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
async def test_an_uploaded_estimator_is_kept_with_its_onnx_graph_and_served_from_it(
    client, alice, tmp_path, kind
):
    frame, labels = frame_and_labels()
    if kind == "classifier":
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, labels)
    else:
        model = RandomForestRegressor(n_estimators=5, random_state=0).fit(frame, frame["age"])
    sio.dump(model, tmp_path / "m.skops")
    response = await upload(client, alice, "churn", (tmp_path / "m.skops").read_bytes())
    assert response.status_code == 201, response.text
    version = response.json()
    assert (version["format"], version["onnx_export"]) == ("skops", True), version["onnx_note"]
    archive = await fetch_zip(client, alice, "churn", 1)
    assert {"model.skops", "model.onnx"} <= set(archive.namelist())
    archive.extractall(tmp_path / "version")
    # Served from the graph: the skops file is not even read.
    (tmp_path / "version" / "model.skops").unlink()
    served = pyfunc.load_version(tmp_path / "version").predict(frame[["income", "age"]])
    if kind == "classifier":
        assert list(served["prediction"]) == list(model.predict(frame))
        assert np.allclose(served["proba_yes"], model.predict_proba(frame)[:, 1], atol=1e-5)
    else:
        assert np.allclose(served["prediction"], model.predict(frame), rtol=1e-5)


async def test_a_model_that_does_not_convert_is_kept_with_the_reason(client, alice, tmp_path):
    frame, labels = frame_and_labels()
    text = frame.assign(city=np.where(labels == "yes", "Lyon", "Paris"))
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder

    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["city"]), remainder="passthrough"),
        LogisticRegression(),
    ).fit(text, labels)
    sio.dump(model, tmp_path / "m.skops")
    response = await upload(client, alice, "churn", (tmp_path / "m.skops").read_bytes())
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["onnx_export"] is False
    assert version["onnx_note"]
    card = await client.get(f"{BASE}/churn/versions/1/card", headers=alice.headers)
    assert version["onnx_note"][:40] in card.text
    archive = await fetch_zip(client, alice, "churn", 1)
    assert "model.onnx" not in archive.namelist()


async def test_a_reader_that_runs_too_long_is_killed(tmp_path):
    frame, labels = frame_and_labels()
    sio.dump(LogisticRegression().fit(frame, labels), tmp_path / "m.skops")
    (tmp_path / "version").mkdir()
    with pytest.raises(InvalidInput, match="longer than"):
        await isolated.prepare_skops(
            tmp_path / "m.skops", tmp_path / "version", onnx_export=True, limit_seconds=0.05
        )
    assert not (tmp_path / "answer.json").exists()


async def test_a_reader_that_dies_is_a_refused_file(tmp_path):
    (tmp_path / "version").mkdir()
    with pytest.raises(InvalidInput, match="could not be read"):
        await isolated.prepare_skops(
            tmp_path / "missing.skops", tmp_path / "version", onnx_export=False
        )


async def test_a_reader_past_its_memory_limit_is_a_refused_file(tmp_path):
    """The limit applies in the child: 512 MiB of address space is less than importing
    scikit-learn and onnxruntime takes, so the child fails, and the caller gets a 422."""
    frame, labels = frame_and_labels()
    sio.dump(LogisticRegression().fit(frame, labels), tmp_path / "m.skops")
    (tmp_path / "version").mkdir()
    with pytest.raises(InvalidInput, match="could not be read"):
        await isolated.prepare_skops(
            tmp_path / "m.skops", tmp_path / "version", onnx_export=True, limit_bytes=512 * 1024**2
        )
    # and with the default limit the same file is read
    read = await isolated.prepare_skops(
        tmp_path / "m.skops", tmp_path / "version", onnx_export=True
    )
    assert read["onnx_export"] is True


async def test_the_reader_answers_the_signature_and_honours_the_export_switch(tmp_path):
    frame, labels = frame_and_labels()
    sio.dump(LogisticRegression().fit(frame, labels), tmp_path / "m.skops")
    (tmp_path / "version").mkdir()
    read = await isolated.prepare_skops(
        tmp_path / "m.skops", tmp_path / "version", onnx_export=False
    )
    assert read["format"] == "skops"
    assert read["signature"]["classes"] == ["no", "yes"]
    assert [c["name"] for c in read["signature"]["inputs"]] == ["age", "income"]
    assert read["onnx_export"] is False
    assert read["onnx_note"].startswith("ONNX export is turned off")
    assert not (tmp_path / "version" / "model.onnx").exists()
