"""ONNX graphs as the registry reads them: `inspect` validates an uploaded graph and reads its
signature; `OnnxPredictor` runs an uploaded graph or an Atelier export from a table.

Uploaded graphs are untrusted: tensors kept in external files are refused before onnxruntime
sees them, since it would read whatever path the graph names. Exports are written and checked
in `onnx_export`, which runs its graphs through `open_session` and `feed_from_table` so that
they are checked the way they will be served here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
from google.protobuf.message import DecodeError
from onnx import TensorProto
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from atelier.automl.artifacts import SIGNATURE_VERSION
from atelier.automl.prepare import to_polars
from atelier.core.errors import InvalidInput

MAX_INPUTS = 2_000  # as many columns as a dataset may have
MAX_OUTPUTS = 100
ORT_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidGraph,
    ort_errors.InvalidArgument,
    ort_errors.InvalidProtobuf,
    ort_errors.NotImplemented,
    ort_errors.NoSuchFile,
    ort_errors.RuntimeException,
)
_ML = "ai.onnx.ml"
_TRUE = ("true", "yes", "y", "t", "1")  # as the preparer reads boolean text
_FALSE = ("false", "no", "n", "f", "0")


# ---- uploaded graphs --------------------------------------------------------------------------


def inspect(data: bytes) -> dict[str, Any]:
    """Validate an uploaded ONNX model and read its signature; InvalidInput when it is not one.

    Shaped like `atelier.automl.artifacts.signature_of` as far as the graph tells (`target` and
    `metric` are unknown, so None): `task` is "binary" or "multiclass" when the graph shows
    class probabilities and their count, "classification" when it shows them without a count,
    "regression" when every output is a float tensor, else None. Inputs and outputs carry their
    element type ("float", "string", "sequence<map<int64,float>>", ...) and shape (None where
    any size goes); `classes` come from Atelier's metadata, a ZipMap or a classifier operator.
    """
    proto = _load(data)
    try:
        open_session(data)
    except ORT_ERRORS as exc:
        raise InvalidInput(f"onnxruntime cannot load the model: {first_line(exc)}") from None
    return _signature(proto)


def _load(data: bytes) -> onnx.ModelProto:
    """Parse and check an untrusted graph, refusing what onnxruntime should never be given."""
    if not data:
        raise InvalidInput("The ONNX file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except DecodeError as exc:
        raise InvalidInput(f"Not an ONNX model: the file does not parse ({exc})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise InvalidInput("Not an ONNX model: the file holds no graph (is it truncated?)")
    initializers = {t.name for t in proto.graph.initializer}
    n_inputs = sum(1 for v in proto.graph.input if v.name not in initializers)
    if n_inputs > MAX_INPUTS:
        raise InvalidInput(
            f"The model has {n_inputs} inputs; at most {MAX_INPUTS} are accepted", limit=MAX_INPUTS
        )
    if len(proto.graph.output) > MAX_OUTPUTS:
        raise InvalidInput(
            f"The model has {len(proto.graph.output)} outputs; at most {MAX_OUTPUTS} are accepted",
            limit=MAX_OUTPUTS,
        )
    external = _external_tensors(proto)
    if external:
        raise InvalidInput(
            f"The model keeps tensors in external files ({', '.join(external[:5])}); upload one "
            "self-contained .onnx file (onnx.save with save_as_external_data=False)"
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise InvalidInput(f"The ONNX checker refuses the model: {first_line(exc)}") from None
    return proto


def _external_tensors(proto: onnx.ModelProto) -> list[str]:
    """Names of the tensors whose data lives in another file, in every graph and subgraph."""
    tensors: list[TensorProto] = []
    graphs = [proto.graph]
    graphs += [g for info in proto.training_info for g in (info.initialization, info.algorithm)]
    nodes = [node for function in proto.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            tensors += graph.initializer
            tensors += [t for s in graph.sparse_initializer for t in (s.values, s.indices)]
            nodes += graph.node
            continue
        for attr in nodes.pop().attribute:
            tensors += [attr.t, *attr.tensors]
            tensors += [
                t for s in (attr.sparse_tensor, *attr.sparse_tensors) for t in (s.values, s.indices)
            ]
            graphs += [attr.g, *attr.graphs]
    return [
        t.name or "(unnamed)"
        for t in tensors
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data)
    ]


def open_session(data: bytes) -> ort.InferenceSession:
    """A session on one CPU thread; raises one of `ORT_ERRORS` if onnxruntime refuses it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def first_line(exc: BaseException) -> str:
    """An onnxruntime or checker error's first line (at most 500 characters), for a message."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:500]


def _signature(proto: onnx.ModelProto) -> dict[str, Any]:
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    outputs = [_value(v) for v in graph.output]
    meta = {p.key: p.value for p in proto.metadata_props}
    classes = _classes(graph, meta)
    return {
        "version": SIGNATURE_VERSION,
        "task": _task(outputs, classes, meta),
        "target": None,
        "metric": None,
        "inputs": [_value(v) for v in graph.input if v.name not in initializers],
        "outputs": outputs,
        "classes": classes,
        "opset": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip() or None,
    }


def _value(v: onnx.ValueInfoProto) -> dict[str, Any]:
    shape = None
    if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
        shape = [
            d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
        ]
    return {"name": v.name, "type": _type_name(v.type), "shape": shape}


def _type_name(t: onnx.TypeProto) -> str:
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return TensorProto.DataType.Name(t.tensor_type.elem_type).lower()
    if kind == "sequence_type":
        return f"sequence<{_type_name(t.sequence_type.elem_type)}>"
    if kind == "map_type":
        key = TensorProto.DataType.Name(t.map_type.key_type).lower()
        return f"map<{key},{_type_name(t.map_type.value_type)}>"
    return kind or "unknown"


_CLASSIFIERS = ("ZipMap", "TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")


def _classes(graph: onnx.GraphProto, meta: dict[str, str]) -> list | None:
    """Atelier's own metadata, else the labels of a ZipMap, else of a classifier operator."""
    try:
        classes = json.loads(meta.get("atelier.classes", "null"))
    except json.JSONDecodeError:
        classes = None
    if isinstance(classes, list) and classes:
        return classes
    nodes = [n for n in graph.node if n.op_type in _CLASSIFIERS and n.domain == _ML]
    for node in sorted(nodes, key=lambda n: n.op_type != "ZipMap"):
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode("utf-8", "replace") for s in attr.strings]
            if attr.name == "classlabels_int64s" and attr.ints:
                return list(attr.ints)
    return None


def _task(outputs: list[dict], classes: list | None, meta: dict[str, str]) -> str | None:
    if meta.get("atelier.task") in ("binary", "multiclass", "regression"):
        return meta["atelier.task"]
    probabilities = [
        o
        for o in outputs
        if o["type"].startswith("sequence<map<")
        or ("prob" in o["name"].lower() and o["type"] in ("float", "double"))
    ]
    if probabilities or classes:
        shape = probabilities[0]["shape"] if probabilities else None
        n = len(classes) if classes else shape[-1] if shape and len(shape) == 2 else None
        return "binary" if n == 2 else "multiclass" if n and n > 2 else "classification"
    if outputs and all(o["type"] in ("float", "double", "float16") for o in outputs):
        return "regression"
    return None


# ---- predicting -------------------------------------------------------------------------------


class OnnxPredictor:
    """One onnxruntime session (CPU, one thread) over a checked graph: an Atelier export (one
    input per column) or an uploaded model (inputs named like columns, or one [N, k] matrix)."""

    def __init__(self, data: bytes) -> None:
        proto = _load(data)
        try:
            self.session = open_session(data)
        except ORT_ERRORS as exc:
            raise InvalidInput(f"onnxruntime cannot load the model: {first_line(exc)}") from None
        self.signature = _signature(proto)
        meta = {p.key: p.value for p in proto.metadata_props}
        try:
            self._boolean = frozenset(json.loads(meta.get("atelier.boolean_columns", "[]")))
        except (json.JSONDecodeError, TypeError):
            self._boolean = frozenset()
        self._inputs = [(i.name, i.type, i.shape) for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    def predict(self, frame: Any) -> dict[str, np.ndarray]:
        """Every graph output by name, from a pandas, polars or pyarrow table: each column cast
        to its input's element type (text parsed as numbers, missing as NaN, or as "" for text
        inputs). A ZipMap output comes back as a matrix, columns in the graph's class order."""
        feed = feed_from_table(to_polars(frame), self._inputs, self._boolean)
        try:
            results = self.session.run(None, feed)
        except ORT_ERRORS as exc:
            raise InvalidInput(f"The model cannot predict these rows: {first_line(exc)}") from None
        return {name: _array(v) for name, v in zip(self._outputs, results, strict=True)}


_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
           "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
           "tensor(bool)": np.bool_, "tensor(string)": np.object_}  # fmt: skip


def feed_from_table(df: pl.DataFrame, inputs: list, boolean: frozenset) -> dict[str, np.ndarray]:
    """A session's feed from a table, `inputs` being (name, element type, shape) triples and
    `boolean` the columns that also read true/yes/... as 1; InvalidInput if it cannot fill them."""
    missing = [name for name, _, _ in inputs if name not in df.columns]
    if missing and len(inputs) == 1 and len(inputs[0][2]) == 2:
        name, kind, shape = inputs[0]  # one [N, k] matrix: the table's columns, in order
        if isinstance(shape[1], int) and shape[1] != df.width:
            raise InvalidInput(
                f"The model takes {shape[1]} columns as one matrix; the table has {df.width}"
            )
        columns = [_cast(df[c], kind, words=False).reshape(-1, 1) for c in df.columns]
        return {name: np.hstack(columns)}
    if missing:
        raise InvalidInput(
            "Missing input columns: " + ", ".join(missing[:20]),
            errors=[{"pointer": f"/{name}", "detail": "missing input column"} for name in missing],
        )
    feed = {}
    for name, kind, shape in inputs:
        wide = len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1
        if len(shape) not in (1, 2) or wide:
            raise InvalidInput(f"Input {name!r} has shape {shape}; a table column cannot fill it")
        values = _cast(df[name], kind, words=name in boolean)
        feed[name] = values.reshape(-1, 1) if len(shape) == 2 else values
    return feed


def _cast(series: pl.Series, kind: str, *, words: bool) -> np.ndarray:
    """A column as an input's element type: text as it is ("" for missing); numbers (from
    text too, and true/yes/... as 1 for a boolean column when `words`), missing as NaN."""
    name, dtype = series.name, _DTYPES.get(kind)
    if dtype is None:
        raise InvalidInput(f"Input {name!r} is a {kind}, which a table column cannot fill")
    if dtype is np.object_:
        return series.cast(pl.Utf8).fill_null("").to_numpy().astype(object)
    if series.dtype == pl.Boolean or series.dtype.is_numeric() or series.dtype == pl.Null:
        numbers = series.cast(pl.Float64)
    elif series.dtype == pl.Utf8:
        text = series.str.strip_chars()
        numbers = text.cast(pl.Float64, strict=False)
        if words:
            lower = text.str.to_lowercase()
            flags = pl.select(
                pl.when(lower.is_in(_TRUE)).then(1.0).when(lower.is_in(_FALSE)).then(0.0)
            ).to_series()
            numbers = numbers.fill_null(flags)
    else:
        raise InvalidInput(f"Column {name!r} holds {series.dtype}; the model takes numbers")
    values = numbers.to_numpy().astype(np.float64)
    if dtype in (np.float32, np.float64, np.float16):
        return values.astype(dtype)
    if np.isnan(values).any():
        raise InvalidInput(f"Column {name!r} has missing values; the model's {kind} has none")
    if dtype is np.bool_:
        return values != 0
    if not np.all(values == np.round(values)):
        raise InvalidInput(f"Column {name!r} holds fractions; the model takes whole numbers")
    return values.astype(dtype)


def _array(value: Any) -> np.ndarray:
    if isinstance(value, list) and (not value or isinstance(value[0], dict)):  # a ZipMap
        keys = list(value[0]) if value else []
        rows = [[row[k] for k in keys] for row in value]
        return np.array(rows, dtype=np.float32).reshape(len(value), len(keys))
    return np.asarray(value)
