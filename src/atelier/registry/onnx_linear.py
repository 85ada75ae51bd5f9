"""The linear family's fold model for an ONNX export, written into an `onnx_graph.Graph`.

The engine's linear pipeline (imputation with missing indicators, scaling, one-hot encoding,
then logistic or ridge regression) is written here op by op rather than through skl2onnx,
which ignores the imputer's missing indicators, so its graphs would predict differently
without failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from atelier.registry.onnx_graph import Graph, NotConvertible


def write_linear(g: Graph, pipeline: Pipeline, features: str) -> str:
    """The linear family's pipeline (imputation with missing indicators, scaling, one-hot
    encoding, then logistic or ridge regression), computed in double precision."""
    x = features
    for _, step in pipeline.steps[:-1]:
        x = _transform(g, step, x)
    final = pipeline.steps[-1][1]
    if not isinstance(final, LogisticRegression | Ridge):
        raise NotConvertible(f"no ONNX converter for {type(final).__name__}")
    coef = np.atleast_2d(final.coef_).astype(np.float64)
    z = g.op(
        "Add",
        g.op("MatMul", x, g.const(coef.T)),
        g.const(np.atleast_1d(final.intercept_).astype(np.float64)),
    )
    if isinstance(final, LogisticRegression):
        if getattr(final, "multi_class", "auto") == "ovr":
            raise NotConvertible("one-vs-rest LogisticRegression")
        if coef.shape[0] == 1:
            p = g.op("Sigmoid", z)
            z = g.op("Concat", g.op("Sub", g.const(np.float64(1.0)), p), p, axis=1)
        else:
            z = g.op("Softmax", z, axis=1)
    return g.op("Cast", z, to=TensorProto.FLOAT)


def _transform(g: Graph, step: Any, x: str) -> str:
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            x = _transform(g, sub, x)
        return x
    if isinstance(step, ColumnTransformer):
        parts = []
        for _, transformer, columns in step.transformers_:
            index = np.asarray(columns)
            index = np.flatnonzero(index) if index.dtype == bool else index
            if (isinstance(transformer, str) and transformer == "drop") or index.size == 0:
                continue
            if index.dtype.kind not in "iu":
                raise NotConvertible("a ColumnTransformer selecting columns by name")
            part = g.op("Gather", x, g.const(index.astype(np.int64)), axis=1)
            parts.append(part if transformer == "passthrough" else _transform(g, transformer, part))
        return g.op("Concat", *parts, axis=1) if len(parts) > 1 else parts[0]
    if isinstance(step, SimpleImputer):
        return _imputer(g, step, x)
    if isinstance(step, StandardScaler):
        if step.with_mean:
            x = g.op("Sub", x, g.const(step.mean_.astype(np.float64)))
        return g.op("Div", x, g.const(step.scale_.astype(np.float64))) if step.with_std else x
    if isinstance(step, OneHotEncoder):
        return _one_hot(g, step, x)
    raise NotConvertible(f"no ONNX converter for {type(step).__name__}")


def _imputer(g: Graph, step: SimpleImputer, x: str) -> str:
    if not (isinstance(step.missing_values, float) and np.isnan(step.missing_values)):
        raise NotConvertible(f"SimpleImputer with missing_values={step.missing_values!r}")
    stats = np.asarray(step.statistics_, dtype=np.float64)
    valid = ~np.isnan(stats)  # all-missing columns are dropped unless keep_empty_features
    kept = x if valid.all() else g.op("Gather", x, g.const(np.flatnonzero(valid)), axis=1)
    out = g.op("Where", g.op("IsNaN", kept), g.const(stats[valid]), kept)
    if step.add_indicator and len(step.indicator_.features_):
        picked = g.op("Gather", x, g.const(step.indicator_.features_.astype(np.int64)), axis=1)
        flags = g.op("Cast", g.op("IsNaN", picked), to=TensorProto.DOUBLE)
        out = g.op("Concat", out, flags, axis=1)
    return out


def _one_hot(g: Graph, step: OneHotEncoder, x: str) -> str:
    if step.drop_idx_ is not None or step.handle_unknown not in ("ignore", "infrequent_if_exist"):
        raise NotConvertible(
            f"OneHotEncoder with drop={step.drop!r}, handle_unknown={step.handle_unknown!r}"
        )
    n = len(step.categories_)
    rare = step.infrequent_categories_ if step._infrequent_enabled else [None] * n
    parts = []
    for i, cats in enumerate(step.categories_):
        if cats.dtype.kind not in "fiu" or np.isnan(cats.astype(np.float64)).any():
            raise NotConvertible("OneHotEncoder over text or missing categories")
        frequent = cats if rare[i] is None else cats[~np.isin(cats, rare[i])]
        column = g.op("Gather", x, g.const(np.array([i])), axis=1)
        hot = g.op(
            "Cast",
            g.op("Equal", column, g.const(frequent.astype(np.float64))),
            to=TensorProto.DOUBLE,
        )
        parts.append(hot)
        if rare[i] is not None:  # the infrequent column: known rare and unseen values alike
            seen = g.op("ReduceSum", hot, g.const(np.array([1])), keepdims=1)
            parts.append(g.op("Sub", g.const(np.float64(1.0)), seen))
    return g.op("Concat", *parts, axis=1) if len(parts) > 1 else parts[0]
