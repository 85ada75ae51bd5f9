"""Model versions exported as MLflow pyfunc models: loaded by MLflow itself, with no pickle."""

import operator

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from atelier import __version__
from atelier.automl import artifacts
from atelier.registry import folders, formats
from atelier.registry import onnx as onnx_models
from atelier.registry.mlflow_export import DATA_NAME, export_pyfunc
from atelier.registry.pyfunc import UnsupportedVersion
from tests.mlflow.conftest import make_version

pytestmark = [
    pytest.mark.backend_independent,
    # We have no real rows to show as MLflow's input example; the signature says it all.
    pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning"),
]
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".pt", ".pth")


@pytest.fixture
def version(trained, tmp_path):
    return make_version(trained.model_dir, tmp_path / "v1", format="atelier")


@pytest.fixture
def exported(version, tmp_path):
    return export_pyfunc(version, tmp_path / "export")


def test_mlflow_loads_the_export_and_predicts_like_the_model(exported, trained):
    loaded = mlflow.pyfunc.load_model(str(exported))
    rows = trained.rows.head(150)
    out = loaded.predict(rows.to_pandas())
    classes = trained.result.classes
    assert list(out.columns) == ["prediction", *(f"proba_{c}" for c in classes)]
    assert list(out["prediction"]) == list(trained.result.model.predict(rows))
    expected = trained.result.model.predict_proba(rows)
    assert np.allclose(out[[f"proba_{c}" for c in classes]].to_numpy(), expected)


def test_the_export_holds_no_pickle_and_only_the_versions_own_files(version, tmp_path, monkeypatch):
    (version / "extra.pkl").write_bytes(b"\x80\x04K\x01.")  # a stray file is not carried along
    # Exported from inside a uv project (as from a checkout of Atelier): MLflow would copy it.
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "elsewhere"\n')
    (project / "uv.lock").write_text("version = 1\n")
    monkeypatch.chdir(project)
    out = export_pyfunc(version, tmp_path / "export")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES)], files
    data = {f.removeprefix(f"data/{DATA_NAME}/") for f in files if f.startswith("data/")}
    assert data == {p.name for p in version.iterdir()} - {"extra.pkl"}
    # Nothing of the directory the export ran from.
    assert not {"pyproject.toml", "uv.lock"} & set(files)
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "atelier.registry.pyfunc"
    assert flavor["data"] == f"data/{DATA_NAME}"
    assert set(mlmodel["flavors"]) == {"python_function"}
    assert "python_model" not in flavor
    assert "cloudpickle" not in (out / "MLmodel").read_text()
    assert f"atelier[ml]=={__version__}" in (out / "requirements.txt").read_text().split()
    assert mlmodel["metadata"]["atelier"] == {"format": "atelier", "name": "shoppers", "version": 1}


def test_the_signature_describes_inputs_and_outputs_and_mlflow_enforces_it(exported, trained):
    loaded = mlflow.pyfunc.load_model(str(exported))
    inputs = {c.name: c.type.name for c in loaded.metadata.get_input_schema().inputs}
    assert inputs == {
        "visits": "long",
        "minutes": "double",
        "channel": "string",
        "member": "boolean",
    }
    outputs = [c.name for c in loaded.metadata.get_output_schema().inputs]
    assert outputs == ["prediction", "proba_no", "proba_yes"]
    with pytest.raises(MlflowException, match="channel"):
        loaded.predict(trained.rows.drop("channel").to_pandas())


def test_a_tampered_export_is_refused_when_mlflow_loads_it(exported):
    """The allow-list runs at load time too: the folder may have been changed on its way."""
    x = np.arange(20.0).reshape(10, 2)
    hostile = make_pipeline(FunctionTransformer(operator.neg)).fit(x)
    sio.dump(hostile, exported / "data" / DATA_NAME / folders.SKOPS_FILE)
    with pytest.raises(artifacts.UntrustedModel, match=r"_operator\.neg"):
        mlflow.pyfunc.load_model(str(exported))


def test_a_version_whose_model_is_not_allowed_is_not_exported(version, tmp_path):
    x = np.arange(20.0).reshape(10, 2)
    sio.dump(make_pipeline(FunctionTransformer(np.exp)).fit(x), version / folders.SKOPS_FILE)
    with pytest.raises(artifacts.UntrustedModel, match=r"numpy\.exp"):
        export_pyfunc(version, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def _estimator_version(estimator, folder):
    """A version of format skops, as an upload of a plain estimator makes it."""
    model_dir = folder.parent / f"{folder.name}-model"
    model_dir.mkdir()
    sio.dump(estimator, model_dir / folders.SKOPS_FILE)
    version = make_version(model_dir, folder, format="skops", name="plain")
    folders.write_json(version / folders.SIGNATURE_FILE, formats.estimator_signature(estimator))
    return version


def test_a_plain_classifier_exports_with_its_probabilities(trained, tmp_path):
    # An estimator's signature says only "number", which MLflow reads as double, and MLflow
    # refuses int64 for a double column (not every int64 fits a float64): send floats.
    frame = trained.rows.select("visits", "minutes").to_pandas().astype(float)
    target = trained.frame["bought"].to_numpy()
    estimator = LogisticRegression(max_iter=500).fit(frame, target)
    out = export_pyfunc(_estimator_version(estimator, tmp_path / "v1"), tmp_path / "export")
    predicted = mlflow.pyfunc.load_model(str(out)).predict(frame)
    assert list(predicted.columns) == ["prediction", "proba_no", "proba_yes"]
    assert list(predicted["prediction"]) == list(estimator.predict(frame))
    assert np.allclose(predicted[["proba_no", "proba_yes"]], estimator.predict_proba(frame))


def test_a_regressor_fitted_on_an_array_gets_its_columns_in_signature_order(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3))
    estimator = LinearRegression().fit(x, x @ [1.0, -2.0, 0.5])
    out = export_pyfunc(_estimator_version(estimator, tmp_path / "v1"), tmp_path / "export")
    shuffled = pd.DataFrame(x, columns=["x0", "x1", "x2"])[["x2", "x0", "x1"]]
    predicted = mlflow.pyfunc.load_model(str(out)).predict(shuffled)
    assert list(predicted.columns) == ["prediction"]
    assert np.allclose(predicted["prediction"], estimator.predict(x))


def _graph_version(graph: bytes, folder):
    """A version of format onnx, as an upload of a graph makes it."""
    model_dir = folder.parent / f"{folder.name}-graph"
    model_dir.mkdir()
    (model_dir / folders.ONNX_FILE).write_bytes(graph)
    version = make_version(model_dir, folder, format="onnx", name="graph")
    folders.write_json(version / folders.SIGNATURE_FILE, onnx_models.inspect(graph))
    return version


def test_an_onnx_version_with_one_input_per_column_predicts_through_onnxruntime(trained, tmp_path):
    from skl2onnx import to_onnx

    rows = trained.rows.select("visits", "minutes", "channel").to_pandas()
    rows = rows.astype({"visits": np.float32, "minutes": np.float32})
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("numbers", StandardScaler(), ["visits", "minutes"]),
                ("channel", OneHotEncoder(handle_unknown="ignore"), ["channel"]),
            ]
        ),
        LogisticRegression(max_iter=500),
    ).fit(rows, trained.frame["bought"].to_numpy())
    graph = to_onnx(pipeline, rows.head(1)).SerializeToString()  # one input per column
    out_dir = export_pyfunc(_graph_version(graph, tmp_path / "v1"), tmp_path / "export")
    loaded = mlflow.pyfunc.load_model(str(out_dir))
    # The graph's float inputs are doubles to MLflow, which wants doubles sent for them.
    out = loaded.predict(rows.astype({"visits": float, "minutes": float}))
    assert list(out.columns) == ["prediction", "proba_no", "proba_yes"]
    assert np.allclose(out[["proba_no", "proba_yes"]], pipeline.predict_proba(rows), atol=1e-5)
    assert list(out["prediction"]) == list(pipeline.predict(rows))


def test_a_graph_taking_one_matrix_is_not_exported(tmp_path):
    from skl2onnx import to_onnx

    x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    graph = to_onnx(LogisticRegression().fit(x, x[:, 0] > 0), x[:1]).SerializeToString()
    with pytest.raises(UnsupportedVersion, match="matrix"):
        export_pyfunc(_graph_version(graph, tmp_path / "v1"), tmp_path / "export")


def test_a_folder_of_another_format_is_not_exported(trained, tmp_path):
    version = make_version(trained.model_dir, tmp_path / "v1", format="joblib")
    with pytest.raises(UnsupportedVersion, match="joblib"):
        export_pyfunc(version, tmp_path / "export")


@pytest.mark.live
def test_the_export_logged_to_a_server_loads_back_by_its_runs_uri(
    exported, trained, mlflow_server, monkeypatch
):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment("atelier/exports")
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(exported), "model")
    client.set_terminated(run_id)
    # `runs:/` URIs resolve through MLflow's process-wide tracking URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    rows = trained.rows.head(50)
    out = loaded.predict(rows.to_pandas())
    assert list(out["prediction"]) == list(trained.result.model.predict(rows))
