"""Export of an AutoML model to ONNX, checked against the model (`export`, `Export`).

`export` turns an `AutomlModel` into one graph over the raw input columns (a [N, 1] double per
numeric or boolean column, a [N, 1] string per categorical one, "" meaning missing): the column
preparer as ONNX-ML ops, every fold model (written by `onnx_trees` and `onnx_linear`), their
weighted sum and the temperature calibration.

Every export is checked against the model with onnxruntime, in a session opened and fed as
`registry.onnx` serves graphs (rows built to land between every pair of consecutive tree
thresholds, plus the caller's rows when given); a model that cannot convert, or whose graph
disagrees, gets a reason instead of a graph. Two known differences:
- the LightGBM converter rounds thresholds to float32, so a value within float32 precision of
  a LightGBM threshold (about 1e-7 relative) may take the other branch;
- a row missing a value that the training data (almost) never missed is predicted by the graph
  as the fold models route the missing value; the model averages it over typical values
  (`automl.model`), so the check compares the graph with the fold models alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, helper, numpy_helper
from sklearn.pipeline import Pipeline

from atelier.automl.calibration import FLOOR as CALIBRATION_FLOOR
from atelier.automl.jsonable import plain
from atelier.automl.model import AutomlModel
from atelier.automl.prepare import to_polars
from atelier.registry import onnx_linear, onnx_trees
from atelier.registry.onnx import ORT_ERRORS, feed_from_table, first_line, open_session
from atelier.registry.onnx_graph import ML_DOMAIN, OPSET, Graph, NotConvertible

MAX_GRAPH_BYTES = 1_500_000_000  # protobuf cannot write 2 GB
TOLERANCE = 1e-4  # on probabilities; on regression values, times the largest |value| (at least 1)
CHECK_ROWS = 256
_UNSEEN = "\x00a category the model never saw"


@dataclass(frozen=True)
class Export:
    """The serialized graph, or why there is none (exactly one of the two is set)."""

    onnx: bytes | None
    reason: str | None


def export(model: AutomlModel, *, sample: Any | None = None) -> Export:
    """The model as one ONNX graph over its raw input columns, checked against the model.

    The check runs onnxruntime and the model on rows built from the preparer and from the trees'
    own thresholds (a value between every pair of consecutive thresholds, 0, missing values,
    every category and an unseen one), plus `sample` (a table holding the input columns, e.g.
    a few hundred training rows) when the caller has one. It costs one more session and one
    prediction of the model: about a second for the engine's usual ensembles.
    """
    try:
        proto = _build(model)
    except NotConvertible as exc:
        return Export(None, str(exc))
    if proto.ByteSize() > MAX_GRAPH_BYTES:
        return Export(None, f"the graph would exceed {MAX_GRAPH_BYTES:,} bytes")
    data = proto.SerializeToString()
    mismatch = _verify(model, data, *_check_rows(model, proto, sample))
    return Export(None, mismatch) if mismatch else Export(data, None)


def _build(model: AutomlModel) -> onnx.ModelProto:
    prep = model.preparer
    if prep.datetime:
        raise NotConvertible(
            f"datetime column(s) {', '.join(prep.datetime)}: ONNX has no calendar operators to "
            "derive the year, month, day and weekday the model was trained on"
        )
    g = Graph()
    inputs, columns = [], []
    for name in [*(prep.numeric or []), *(prep.boolean or [])]:
        inputs.append(helper.make_tensor_value_info(name, TensorProto.DOUBLE, ["N", 1]))
        columns.append(name)
    for name, kept in prep.categories_.items():
        if "" in kept:
            raise NotConvertible(
                f"column {name!r} has the empty string as a category; the graph reads an empty "
                "string as a missing value"
            )
        inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["N", 1]))
        # The preparer's codes; "" stands for missing (strings have no null), unseen values get
        # the code after the kept ones.
        code = g.op(
            "LabelEncoder",
            name,
            domain=ML_DOMAIN,
            keys_strings=[*kept, ""],
            values_floats=[*range(len(kept)), np.nan],
            default_float=float(len(kept)),
        )
        columns.append(g.op("Cast", code, to=TensorProto.DOUBLE))
    joined = g.op("Concat", *columns, axis=1) if len(columns) > 1 else columns[0]
    features = g.op("Where", g.op("IsInf", joined), g.const(np.float64(np.nan)), joined)
    # Doubles, as the preparer computes: HistGradientBoosting's thresholds are often training
    # values themselves, which a float32 input would round to either side. Families that
    # compute in float32 (forests, XGBoost) read a rounded copy, as they do in Python.
    single = g.op("Cast", features, to=TensorProto.FLOAT)

    n_classes = len(model.classes) if model.classes else 0
    parts = []
    for i, (est, class_index, weight) in enumerate(model.members):
        out = _member(g, est, features, single, model.task, i)
        if class_index is not None and len(class_index) != n_classes:  # a fold missed a class
            scatter = np.zeros((len(class_index), n_classes), dtype=np.float32)
            scatter[np.arange(len(class_index)), class_index] = 1.0
            out = g.op("MatMul", out, g.const(scatter))
        parts.append(g.op("Mul", out, g.const(np.float32(weight))))
    total = g.op("Sum", *parts) if len(parts) > 1 else parts[0]
    if model.task == "regression":
        g.op("Reshape", total, g.const(np.array([-1])), output="label")
        outputs = [helper.make_tensor_value_info("label", TensorProto.FLOAT, ["N"])]
    else:
        outputs = _classification_outputs(g, model, total)
    nodes, initializers = _pruned(g, outputs)
    graph = helper.make_graph(nodes, "atelier_automl", inputs, outputs, initializers)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, v) for domain, v in OPSET.items()],
        producer_name="atelier",
        doc_string="Atelier AutoML model over its raw input columns; an empty string is missing",
    )
    proto.ir_version = 8
    helper.set_model_props(
        proto,
        {
            "atelier.task": model.task,
            "atelier.classes": json.dumps(plain(model.classes)),
            "atelier.boolean_columns": json.dumps(list(prep.boolean or [])),
        },
    )
    return proto


def _classification_outputs(g: Graph, model: AutomlModel, total: str) -> list:
    """`probabilities` as the model's `predict_proba` (calibrated), `label` its top class."""
    temperature = float(getattr(model, "temperature", 1.0))
    if temperature == 1.0:
        norm = g.op("ReduceSum", total, g.const(np.array([1])), keepdims=1)
        g.op("Div", total, norm, output="probabilities")
    else:  # calibration.apply_temperature: softmax(log(max(p, FLOOR)) / T)
        floored = g.op("Max", total, g.const(np.float32(CALIBRATION_FLOOR)))
        logits = g.op("Div", g.op("Log", floored), g.const(np.float32(temperature)))
        g.op("Softmax", logits, axis=1, output="probabilities")
    best = g.op("ArgMax", "probabilities", axis=1, keepdims=0)
    classes = g.const(np.asarray(model.classes))
    label_type = g.initializers[-1].data_type  # strings, integers, floats or booleans
    g.op("Gather", classes, best, output="label")
    return [
        helper.make_tensor_value_info("label", label_type, ["N"]),
        helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, ["N", len(model.classes)]
        ),
    ]


def _pruned(g: Graph, outputs: list) -> tuple[list, list]:
    """The nodes and constants the outputs depend on (converters also compute unread labels)."""
    needed = {o.name for o in outputs}
    nodes = []
    for node in reversed(g.nodes):
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    return nodes[::-1], [t for t in g.initializers if t.name in needed]


def _member(g: Graph, est: Any, features: str, single: str, task: str, index: int) -> str:
    """One fold model: [N, its classes] probabilities, or [N, 1] values."""
    if isinstance(est, onnx_trees.BOOSTERS):
        return onnx_trees.write_booster(g, est, single, task, index)
    if isinstance(est, onnx_trees.FORESTS):
        return onnx_trees.write_forest(g, est, single, task)
    if isinstance(est, onnx_trees.HIST_GB):
        return onnx_trees.write_hist_gb(g, est, features)
    if isinstance(est, Pipeline):
        return onnx_linear.write_linear(g, est, features)
    raise NotConvertible(f"no ONNX converter for {type(est).__module__}.{type(est).__name__}")


# ---- checking an export -----------------------------------------------------------------------


def _check_rows(
    model: AutomlModel, proto: onnx.ModelProto, sample: Any | None
) -> tuple[dict[str, np.ndarray], pl.DataFrame]:
    """The graph's inputs and the same rows as a frame for the model: a value in every interval
    between a numeric column's tree thresholds, 0, missing, every category, an unseen one;
    then the caller's sample, read as `OnnxPredictor` reads a table."""
    prep = model.preparer
    rng = np.random.default_rng(0)
    numeric = [*(prep.numeric or []), *(prep.boolean or [])]
    thresholds = _thresholds(proto, len(numeric))
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(numeric):
        t = np.unique(np.asarray(thresholds[j], dtype=np.float64))
        if name in (prep.boolean or []):
            columns[name] = np.array([0.0, 1.0, np.nan])
        elif len(t):
            # Between thresholds, never within float32 precision of one (see the module's
            # docstring on LightGBM).
            apart = np.diff(t) > 1e-6 * np.maximum(1.0, np.abs(t[1:]))
            middles = ((t[:-1] + t[1:]) / 2)[apart]
            if len(middles) > CHECK_ROWS - 4:
                middles = rng.choice(middles, CHECK_ROWS - 4, replace=False)
            columns[name] = np.concatenate([middles, [t[0] - 1, t[-1] + 1, 0.0, np.nan]])
        else:
            columns[name] = np.array([-10.0, -1.0, 0.0, 0.5, 1.0, 10.0, np.nan])
    for name, kept in prep.categories_.items():
        columns[name] = np.array([*kept, _UNSEEN, ""], dtype=object)
    rows = max([32, *(len(v) for v in columns.values())])
    feed = {k: rng.permutation(np.resize(v, rows)).reshape(-1, 1) for k, v in columns.items()}
    if sample is not None:
        inputs = [
            (name, "tensor(string)" if v.dtype == object else "tensor(double)", ["N", 1])
            for name, v in feed.items()
        ]
        more = feed_from_table(to_polars(sample), inputs, frozenset(prep.boolean or []))
        feed = {k: np.concatenate([v, more[k]]) for k, v in feed.items()}
    frame = pl.DataFrame(
        [
            pl.Series(k, [None if s == "" else s for s in v.ravel()], dtype=pl.Utf8)
            if v.dtype == object
            else pl.Series(k, v.ravel(), dtype=pl.Float64)
            for k, v in feed.items()
        ]
    )
    return feed, frame


def _thresholds(proto: onnx.ModelProto, n_numeric: int) -> list[list[float]]:
    """Each numeric feature's thresholds, read from every tree ensemble in the graph."""
    found: list[list[float]] = [[] for _ in range(n_numeric)]
    for node in proto.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        values = attrs.get("nodes_values") or numpy_helper.to_array(attrs["nodes_values_as_tensor"])
        for feature, mode, value in zip(
            attrs["nodes_featureids"], attrs["nodes_modes"], values, strict=True
        ):
            if feature < n_numeric and mode not in (b"LEAF", b"BRANCH_EQ", b"BRANCH_NEQ"):
                found[feature].append(value)
    return found


def _verify(model: AutomlModel, data: bytes, feed: dict, frame: pl.DataFrame) -> str | None:
    """Why the graph does not reproduce the model on the check rows, or None."""
    try:
        session = open_session(data)
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, session.run(None, feed), strict=True))
    except ORT_ERRORS as exc:
        return f"onnxruntime cannot run the exported graph: {first_line(exc)}"
    n = frame.height
    if model.task == "regression":
        want = model.predict(frame, average_missing=False)
        gap = np.abs(got["label"].astype(np.float64) - want)
        tolerance = TOLERANCE * max(1.0, float(np.nanmax(np.abs(want))))
        if not np.all(gap <= tolerance):
            return (
                f"the graph's predictions differ from the model's by up to {np.nanmax(gap):.3g} "
                f"(tolerance {tolerance:.3g}) on {n} check rows"
            )
        return None
    want = model.predict_proba(frame, average_missing=False)
    gap = np.abs(got["probabilities"].astype(np.float64) - want)
    if not np.all(gap <= TOLERANCE):
        return (
            f"the graph's probabilities differ from the model's by up to {np.nanmax(gap):.3g} "
            f"on {n} check rows"
        )
    index = {c: i for i, c in enumerate(plain(model.classes))}
    picked = np.array([index.get(v, -1) for v in plain(got["label"])])
    # On a near tie float32 and float64 may order two classes differently: either will do.
    top = want.max(axis=1)
    chosen = np.where(picked >= 0, want[np.arange(n), picked.clip(0)], -1.0)
    wrong = int((chosen < top - TOLERANCE).sum())
    return (
        f"the graph's labels differ from the model's on {wrong} of {n} check rows"
        if wrong
        else None
    )
