"""Hostile skops files sent to the upload endpoint: a scikit-learn function that runs Python,
hidden in an estimator's instance state (issue 17). Each payload would write a marker file if
any of it ran; the upload is refused with a 422 that names what is not allowed, and the marker
never appears."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._testing import assert_run_python_script_without_output

from atelier.automl import artifacts
from tests.registry.test_api import counts, upload

RUNS_PYTHON = "sklearn.utils._testing.assert_run_python_script_without_output"
LOGISTIC = "sklearn.linear_model._logistic.LogisticRegression"


def fitted() -> tuple[LogisticRegression, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 60), "income": rng.uniform(1, 9, 60)})
    labels = np.where(frame["age"] > 45, "senior", "junior")
    return LogisticRegression().fit(frame, labels), frame, labels


def code_writing(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def tags_payload(path, marker) -> None:
    """A fitted LogisticRegression whose instance state holds `__sklearn_tags__`: scikit-learn's
    `is_classifier(model)` calls it."""
    model, _, _ = fitted()
    model.__dict__["__sklearn_tags__"] = partial(
        assert_run_python_script_without_output, code_writing(marker)
    )
    sio.dump(model, path)


def function_transformer_payload(path, marker) -> None:
    """A pipeline whose FunctionTransformer runs Python when the model predicts."""
    _, frame, labels = fitted()
    pipeline = Pipeline([("step", FunctionTransformer()), ("model", LogisticRegression())]).fit(
        frame, labels
    )
    runs = partial(assert_run_python_script_without_output, code_writing(marker))
    pipeline.steps[0][1].func = runs
    sio.dump(pipeline, path)


PAYLOADS = {"sklearn-tags": tags_payload, "function-transformer": function_transformer_payload}


@pytest.mark.parametrize("kind", PAYLOADS)
async def test_a_hostile_skops_upload_is_refused_and_runs_nothing(
    client, alice, db_session, tmp_path, kind
):
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.skops"
    PAYLOADS[kind](path, marker)
    response = await upload(client, alice, "churn", path.read_bytes(), "churn.skops")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert RUNS_PYTHON in problem["untrusted_types"]
    assert "functools.partial" in problem["untrusted_types"]
    if kind == "sklearn-tags":
        assert f"{LOGISTIC}.__sklearn_tags__" in problem["untrusted_types"]
    assert RUNS_PYTHON in problem["detail"]
    assert not marker.exists(), "the payload ran"
    assert await counts(db_session) == (0, 0, 0)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_a_hostile_model_folder_is_refused_by_the_loader(tmp_path, kind):
    """What `atelier automl predict` and the MLflow loader read (a folder changed on its way)."""
    marker = tmp_path / "marker"
    PAYLOADS[kind](tmp_path / artifacts.MODEL_FILE, marker)
    with pytest.raises(artifacts.UntrustedModel) as refused:
        artifacts.load(tmp_path)
    assert RUNS_PYTHON in refused.value.types
    assert not marker.exists(), "the payload ran"
