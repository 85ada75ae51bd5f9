"""Uploaded estimators as ONNX graphs, so that serving them never rebuilds Python objects.

`export_estimator` converts a scikit-learn estimator or pipeline (skl2onnx) or a LightGBM or
XGBoost wrapper (onnxmltools) taking the numeric columns of its signature as one [N, k] float
matrix, then checks the graph against the estimator with onnxruntime on seeded random rows: a
model that does not convert, or whose graph disagrees, gets a reason instead of a graph. It
runs where the upload was loaded, in the child process of `registry.isolated`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atelier.registry.onnx import ORT_ERRORS, first_line, open_session
from atelier.registry.onnx_export import Export

TOLERANCE = 1e-4  # on probabilities; on regression values, times the largest |value| (at least 1)
CHECK_ROWS = 200
TARGET_OPSET = 17


def export_estimator(model: Any, signature: dict[str, Any]) -> Export:
    """The estimator as one graph over its input matrix, checked against the estimator."""
    columns = [c["name"] for c in signature.get("inputs") or []]
    if not columns:
        return Export(None, "the signature names no input columns")
    try:
        proto = _convert(model, len(columns))
    except Exception as exc:  # converters raise anything; the note says why
        return Export(None, f"no ONNX conversion for this model: {first_line(exc)}")
    data = proto.SerializeToString()
    mismatch = _verify(model, data, columns, signature)
    return Export(None, mismatch) if mismatch else Export(data, None)


def _convert(model: Any, n_columns: int) -> Any:
    from skl2onnx.common.data_types import FloatTensorType

    inputs = [("X", FloatTensorType([None, n_columns]))]
    family = type(model).__module__.split(".", 1)[0]
    if family == "lightgbm":
        from onnxmltools import convert_lightgbm

        return convert_lightgbm(model, initial_types=inputs, zipmap=False)
    if family == "xgboost":
        from onnxmltools import convert_xgboost

        return convert_xgboost(model, initial_types=inputs)
    from skl2onnx import to_onnx

    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    return to_onnx(model, initial_types=inputs, options=options, target_opset=TARGET_OPSET)


def _verify(model: Any, data: bytes, columns: list[str], signature: dict[str, Any]) -> str | None:
    """Why the graph does not reproduce the estimator on the check rows, or None."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, size=(CHECK_ROWS, len(columns))).astype(np.float32)
    frame = pd.DataFrame(x.astype(np.float64), columns=columns)
    rows = frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
    try:
        session = open_session(data)
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))
    except ORT_ERRORS as exc:
        return f"onnxruntime cannot run the converted graph: {first_line(exc)}"
    label = np.asarray(got[names[0]]).reshape(len(x), -1)
    if signature.get("task") == "regression" or not signature.get("classes"):
        want = np.asarray(model.predict(rows), dtype=np.float64).reshape(len(x), -1)
        tolerance = TOLERANCE * max(1.0, float(np.nanmax(np.abs(want))))
        gap = np.abs(label.astype(np.float64) - want)
        if not np.all(gap <= tolerance):
            return f"the graph's predictions differ from the model's by up to {gap.max():.3g}"
        return None
    proba_name = next((n for n in names if "prob" in n.lower()), None)
    if proba_name is None or not callable(getattr(model, "predict_proba", None)):
        same = np.asarray(model.predict(rows)).astype(str) == label[:, 0].astype(str)
        return None if same.all() else f"the graph's labels differ on {(~same).sum()} rows"
    gap = np.abs(np.asarray(got[proba_name], dtype=np.float64) - model.predict_proba(rows))
    if not np.all(gap <= TOLERANCE):
        return f"the graph's probabilities differ from the model's by up to {gap.max():.3g}"
    return None
