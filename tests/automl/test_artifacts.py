"""Model folders: saved with skops, loaded only when everything in the file is allowed."""

import json
import operator

import numpy as np
import pandas as pd
import polars as pl
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from atelier.automl import artifacts
from atelier.automl.engine import TrainConfig, train

pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def iris_model():
    frame = pl.from_pandas(load_iris(as_frame=True).frame).with_columns(
        pl.col("target").map_elements(
            lambda v: ["setosa", "versicolor", "virginica"][v], return_dtype=pl.String
        )
    )
    result = train(frame, TrainConfig(target="target", budget_seconds=10, seed=0, max_trials=4))
    return frame, result


def test_a_model_folder_round_trips(tmp_path, iris_model):
    frame, result = iris_model
    artifacts.save(
        tmp_path,
        result.model,
        target="target",
        metric=result.metric,
        report={"ok": True},
        report_html="<p>report</p>",
    )
    model, signature = artifacts.load(tmp_path)
    rows = frame.drop("target")
    assert np.allclose(model.predict_proba(rows), result.model.predict_proba(rows))
    assert list(model.predict(rows)) == list(result.model.predict(rows))
    assert signature["task"] == "multiclass"
    assert signature["target"] == "target"
    assert signature["classes"] == ["setosa", "versicolor", "virginica"]
    assert [c["name"] for c in signature["inputs"]] == list(rows.columns)
    assert [o["name"] for o in signature["outputs"]] == [
        "prediction",
        "proba_setosa",
        "proba_versicolor",
        "proba_virginica",
    ]
    assert json.loads((tmp_path / "report.json").read_text()) == {"ok": True}
    assert artifacts.untrusted_types(tmp_path / artifacts.MODEL_FILE) == []


def test_a_file_with_a_function_inside_is_refused_before_anything_is_built(tmp_path):
    """No function may be referred to (but the check_array partial HistGradientBoosting keeps
    in a FunctionTransformer): a transformer's function runs at prediction time."""
    x, y = load_iris(return_X_y=True)
    hostile = make_pipeline(FunctionTransformer(np.exp), LogisticRegression(max_iter=200))
    hostile.fit(x, y)
    sio.dump(hostile, tmp_path / artifacts.MODEL_FILE)
    with pytest.raises(artifacts.UntrustedModel) as refused:
        artifacts.load(tmp_path)
    assert refused.value.types == ["numpy.exp"]  # skops itself would trust it
    # And a function skops itself does not trust.
    sio.dump(make_pipeline(FunctionTransformer(operator.neg)).fit(x), tmp_path / "model.skops")
    with pytest.raises(artifacts.UntrustedModel, match=r"_operator\.neg"):
        artifacts.load(tmp_path)


def test_a_folder_without_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder"):
        artifacts.load(tmp_path)


def test_histgradientboostings_check_array_partial_is_allowed(tmp_path):
    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x[:, :2], columns=["a", "b"]).assign(
        c=pd.Categorical(np.where(y == 0, "x", "y"))
    )
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype")
    model.fit(frame, y)
    sio.dump(model, tmp_path / artifacts.MODEL_FILE)
    assert artifacts.untrusted_types(tmp_path / artifacts.MODEL_FILE) == []
    loaded, _ = artifacts.load(tmp_path)
    assert list(loaded.predict(frame)) == list(model.predict(frame))
