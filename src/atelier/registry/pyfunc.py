"""MLflow's loader for an exported model version: `mlflow.pyfunc.load_model` calls
`_load_pyfunc(data_path)` with the version folder that `mlflow_export.export_pyfunc` copied in.

Nothing here unpickles: the model file is read the way Atelier reads it everywhere, a skops file
through the allow-list (`automl.artifacts.load`), so an exported folder that was tampered with
on its way (a hostile `model.skops` put in its place) is refused before a single object is
built, and an ONNX graph through `registry.onnx.OnnxPredictor`, which refuses tensors stored
outside the file. An uploaded estimator that Atelier converted to ONNX at upload is served as
that graph: no Python object is rebuilt from the upload at all. `predict` answers a pandas frame
with a `prediction` column and, for classifiers, one `proba_<class>` column per class, as
Atelier's own prediction API does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atelier.automl import artifacts
from atelier.automl.model import AutomlModel
from atelier.core.errors import Conflict
from atelier.registry import folders

FORMATS = ("atelier", "skops", "onnx")


class UnsupportedVersion(Conflict):
    """A version folder this loader cannot serve (unknown format, missing or wrong model); a
    409 when an export is asked of the API."""

    slug = "not-exportable"
    title = "This model version cannot be served through MLflow"


def _load_pyfunc(data_path: str) -> VersionPredictor:
    """MLflow's entry point (the `loader_module` contract)."""
    return load_version(Path(data_path))


def load_version(folder: Path) -> VersionPredictor:
    """The predictor for a version folder; `artifacts.UntrustedModel` if its skops file holds a
    type outside the allow-list, `UnsupportedVersion` for anything else it cannot serve."""
    about = folders.read_json(folder, folders.VERSION_FILE)
    kind = about.get("format")
    if kind not in FORMATS:
        raise UnsupportedVersion(
            f"{folder} is not a model version folder Atelier can serve through MLflow "
            f"(format {kind!r}; expected one of {', '.join(FORMATS)})"
        )
    if kind == "onnx":
        signature = folders.read_json(folder, folders.SIGNATURE_FILE)
        return VersionPredictor(_OnnxOutputs(folder / folders.ONNX_FILE, signature), signature)
    if kind == "skops" and (folder / folders.ONNX_FILE).is_file():
        # An uploaded estimator that converted: served as its graph, never rebuilt in Python.
        signature = folders.read_json(folder, folders.SIGNATURE_FILE)
        columns = [column["name"] for column in signature.get("inputs") or []]
        graph = _OnnxOutputs(folder / folders.ONNX_FILE, signature)
        return VersionPredictor(_ColumnsInOrder(graph, columns), signature)
    model, signature = artifacts.load(folder)  # the allow-list check comes first
    if kind == "atelier":
        if not isinstance(model, AutomlModel):
            raise UnsupportedVersion(f"format atelier holds a {type(model).__name__}")
        return VersionPredictor(_AutomlOutputs(model), signature)
    if not callable(getattr(model, "predict", None)):
        raise UnsupportedVersion(f"a {type(model).__name__} cannot predict")
    return VersionPredictor(_EstimatorOutputs(model, signature), signature)


class VersionPredictor:
    """What `mlflow.pyfunc.load_model` wraps: `predict(frame, params)` -> a frame."""

    def __init__(self, outputs: Any, signature: dict[str, Any]) -> None:
        self._outputs = outputs
        self.signature = signature

    def predict(
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """`prediction`, then `proba_<class>` columns for classifiers; `params` is unused."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        prediction, proba, classes = self._outputs(model_input)
        out = pd.DataFrame({"prediction": prediction}, index=model_input.index)
        if proba is not None:
            for i, label in enumerate(classes):
                out[f"proba_{label}"] = proba[:, i]
        return out


class _AutomlOutputs:
    def __init__(self, model: AutomlModel) -> None:
        self.model = model

    def __call__(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list]:
        if self.model.task == "regression":
            return np.asarray(self.model.predict(frame), dtype=float), None, []
        proba = self.model.predict_proba(frame)  # one pass; the label is its argmax
        classes = list(self.model.classes)
        return np.asarray(classes)[np.argmax(proba, axis=1)], proba, classes


class _EstimatorOutputs:
    """A plain scikit-learn compatible estimator, fed the columns its signature names."""

    def __init__(self, estimator: Any, signature: dict[str, Any]) -> None:
        self.estimator = estimator
        self.columns = [column["name"] for column in signature.get("inputs") or []]

    def __call__(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list]:
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise ValueError(f"missing input columns: {', '.join(missing)}")
        rows = frame[self.columns] if self.columns else frame
        # Fitted on a frame: it checks the column names; fitted on an array: it wants one.
        x = rows if hasattr(self.estimator, "feature_names_in_") else rows.to_numpy()
        prediction = np.asarray(self.estimator.predict(x))
        classes = getattr(self.estimator, "classes_", None)
        if classes is None or not callable(getattr(self.estimator, "predict_proba", None)):
            return prediction, None, []
        return prediction, np.asarray(self.estimator.predict_proba(x)), list(classes)


class _ColumnsInOrder:
    """The signature's columns, in its order, as the one matrix a converted estimator takes."""

    def __init__(self, outputs: _OnnxOutputs, columns: list[str]) -> None:
        self.outputs = outputs
        self.columns = columns

    def __call__(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list]:
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise ValueError(f"missing input columns: {', '.join(missing)}")
        return self.outputs(frame[self.columns])


class _OnnxOutputs:
    """An ONNX graph: the output named like probabilities (a matrix, classes in order) gives the
    `proba_<class>` columns; the first other output is the prediction."""

    def __init__(self, path: Path, signature: dict[str, Any]) -> None:
        from atelier.registry.onnx import OnnxPredictor

        if not path.is_file():
            raise UnsupportedVersion(f"No {path.name} in {path.parent}")
        self.predictor = OnnxPredictor(path.read_bytes())
        self.classes = signature.get("classes") or self.predictor.signature.get("classes")

    def __call__(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, list]:
        outputs = self.predictor.predict(frame)
        proba_name = next(
            (n for n, v in outputs.items() if "prob" in n.lower() and np.ndim(v) == 2), None
        )
        label_name = next((n for n in outputs if n != proba_name), None)
        if label_name is None:
            raise UnsupportedVersion("The graph has no output to read a prediction from")
        prediction = np.asarray(outputs[label_name])
        if prediction.ndim == 2 and prediction.shape[1] == 1:
            prediction = prediction[:, 0]
        if proba_name is None:
            return prediction, None, []
        proba = np.asarray(outputs[proba_name])
        known = self.classes and len(self.classes) == proba.shape[1]
        return prediction, proba, list(self.classes) if known else list(range(proba.shape[1]))
