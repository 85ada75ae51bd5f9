"""ONNX export of AutoML models, inspection of uploaded graphs, and the ONNX predictor.

The models are real: fold models of every family the engine uses, fitted as the engine fits
them on a small synthetic table (numeric, integer, boolean and text columns, missing values, a
rare category), and one model from the engine itself.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import onnx
import polars as pl
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from atelier.automl import learners
from atelier.automl.engine import TrainConfig, train
from atelier.automl.model import AutomlModel
from atelier.automl.prepare import ColumnPreparer, encode_target
from atelier.core.errors import InvalidInput
from atelier.registry.onnx import OnnxPredictor, inspect
from atelier.registry.onnx_export import Export, export

pytestmark = pytest.mark.backend_independent

FAMILIES = ("linear", "lightgbm", "xgboost", "hist_gb", "extra_trees", "random_forest")
COLOURS = ["red", "green", "blue", "black", "white", "violet"]


def _table(task: str, n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    colour = rng.choice(COLOURS, n, p=[0.25, 0.25, 0.2, 0.15, 0.13, 0.02]).astype(object)
    colour[rng.random(n) < 0.1] = None
    x1 = rng.normal(size=n)
    x2 = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n) * 100)
    rooms = rng.integers(1, 8, n)
    garden = rng.random(n) < 0.4
    score = 1.5 * x1 + (colour == "red") * 2 - (colour == "blue") + np.nan_to_num(x2) / 100
    score = score + 0.3 * rooms + garden
    if task == "binary":
        target = np.where(rng.random(n) < 1 / (1 + np.exp(-(score - 1.5))), "yes", "no")
    elif task == "multiclass":
        target = np.array(["low", "mid", "high", "top"])[np.digitize(score, [0.5, 1.8, 3.2])]
    else:
        target = 10 * score + rng.normal(size=n)
    return pl.DataFrame(
        {"x1": x1, "x2": x2, "rooms": rooms, "garden": garden, "colour": list(colour), "y": target}
    )


def _model(table: pl.DataFrame, task: str, families=FAMILIES) -> AutomlModel:
    """One fold model per family, fitted as `search.run_trial` fits them; in a multiclass model
    the first member never saw one class (as a fold can miss a rare class)."""
    prep = ColumnPreparer(["x1", "x2", "rooms"], ["garden"], [], ["colour"]).fit(table)
    x = prep.transform(table)
    y, classes = encode_target(table["y"], task)
    train_rows, valid_rows = np.arange(0, 240), np.arange(240, 300)
    members = []
    for k, family in enumerate(families):
        tr = train_rows[y[train_rows] != 3] if task == "multiclass" and k == 0 else train_rows
        params = dict(learners.portfolio(task, x.shape[1]))[family]
        est = learners.build(family, params, task, prep.categorical_mask_, k)
        y_tr, y_va, class_index = y[tr], y[valid_rows], None
        if task != "regression":
            class_index = np.unique(y_tr)
            y_tr = np.searchsorted(class_index, y_tr)
            y_va = np.searchsorted(class_index, y_va).clip(0, len(class_index) - 1)
        learners.fit_fold(
            family,
            est,
            x[tr],
            y_tr,
            x[valid_rows],
            y_va,
            prep.categorical_mask_,
            time.monotonic() + 60,
        )
        members.append((est, class_index, 1 / len(families)))
    schema = [{"name": c, "type": str(table[c].dtype)} for c in prep.input_columns()]
    return AutomlModel(prep, members, task, classes, schema)


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[AutomlModel, Export]]:
    out = {}
    for task in ("binary", "multiclass", "regression"):
        model = _model(_table(task, 300, seed=1), task)
        out[task] = (model, export(model))
    return out


def _fresh_rows(task: str) -> pl.DataFrame:
    """Rows the models never saw, with an unseen category and an infinite value."""
    rows = _table(task, 200, seed=7).drop("y")
    return rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("mauve"))
        .otherwise("colour")
        .alias("colour"),
        pl.when(pl.int_range(pl.len()) == 4).then(float("inf")).otherwise("x2").alias("x2"),
    )


def _assert_same_predictions(model: AutomlModel, got: dict[str, np.ndarray], rows) -> None:
    if model.task == "regression":
        want = model.predict(rows)
        assert got["label"].shape == want.shape
        assert np.abs(got["label"] - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
        return
    proba = model.predict_proba(rows)
    assert got["probabilities"].shape == proba.shape
    assert np.abs(got["probabilities"] - proba).max() <= 1e-4
    # Labels agree wherever the model's top class leads by more than float32 can blur.
    ordered = np.sort(proba, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 1e-4
    assert clear.mean() > 0.9
    assert (got["label"][clear] == model.predict(rows)[clear]).all()


# ---- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_exported_graph_reproduces_the_model_on_new_rows(fitted, task):
    model, exported = fitted[task]
    assert exported.reason is None, exported.reason
    if task == "multiclass":  # a member over three of the four classes is spread over all four
        assert len(model.members[0][1]) == 3
    rows = _fresh_rows(task)
    got = OnnxPredictor(exported.onnx).predict(rows)
    _assert_same_predictions(model, got, rows)


def test_exported_graph_takes_the_raw_columns_and_says_what_it_is(fitted):
    model, exported = fitted["multiclass"]
    signature = inspect(exported.onnx)
    assert signature["task"] == "multiclass"
    assert signature["classes"] == ["high", "low", "mid", "top"] == model.classes
    assert signature["inputs"] == [
        {"name": "x1", "type": "double", "shape": [None, 1]},
        {"name": "x2", "type": "double", "shape": [None, 1]},
        {"name": "rooms", "type": "double", "shape": [None, 1]},
        {"name": "garden", "type": "double", "shape": [None, 1]},
        {"name": "colour", "type": "string", "shape": [None, 1]},
    ]
    assert signature["outputs"] == [
        {"name": "label", "type": "string", "shape": [None]},
        {"name": "probabilities", "type": "float", "shape": [None, 4]},
    ]
    assert signature["opset"] == {"ai.onnx": 17, "ai.onnx.ml": 3}
    assert signature["producer"] == "atelier"
    regression = inspect(fitted["regression"][1].onnx)
    assert regression["task"] == "regression"
    assert regression["classes"] is None
    assert regression["outputs"] == [{"name": "label", "type": "float", "shape": [None]}]


def test_integer_classes_come_back_as_integers():
    table = _table("binary", 300, seed=2).with_columns((pl.col("y") == "yes").cast(pl.Int64))
    model = _model(table, "binary", ("lightgbm", "linear"))
    exported = export(model)
    got = OnnxPredictor(exported.onnx).predict(table)
    assert got["label"].dtype == np.int64
    _assert_same_predictions(model, got, table)


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_calibrated_probabilities_are_reproduced(temperature):
    table = _table("multiclass", 300, seed=9)
    model = _model(table, "multiclass", ("lightgbm", "linear"))
    model.temperature = temperature
    exported = export(model)
    assert exported.reason is None, exported.reason
    rows = _fresh_rows("multiclass")
    got = OnnxPredictor(exported.onnx).predict(rows)
    _assert_same_predictions(model, got, rows)
    model.temperature = 1.0
    assert np.abs(got["probabilities"] - model.predict_proba(rows)).max() > 0.01


def test_a_model_reading_a_datetime_column_gets_a_reason_not_a_graph():
    table = _table("binary", 300, seed=3).with_columns(
        pl.Series("signup", [dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(300)])
    )
    prep = ColumnPreparer(["x1"], [], ["signup"], []).fit(table)
    y, classes = encode_target(table["y"], "binary")
    est = LogisticRegression().fit(prep.transform(table), y)
    model = AutomlModel(prep, [(est, None, 1.0)], "binary", classes, [])
    assert export(model) == Export(
        None,
        "datetime column(s) signup: ONNX has no calendar operators to derive the year, month, "
        "day and weekday the model was trained on",
    )


def test_an_estimator_without_a_converter_gets_a_reason():
    table = _table("binary", 300, seed=4)
    model = _model(table, "binary", ("linear",))
    y, _ = encode_target(table["y"], "binary")
    neighbours = KNeighborsClassifier().fit(np.nan_to_num(model.preparer.transform(table)), y)
    model.members.append((neighbours, None, 0.5))
    exported = export(model)
    assert exported.onnx is None
    assert exported.reason == (
        "no ONNX converter for sklearn.neighbors._classification.KNeighborsClassifier"
    )


class _SharpenedForest(RandomForestClassifier):
    """A forest whose probabilities are not its trees' mean: the graph cannot know that."""

    def predict_proba(self, x):
        proba = super().predict_proba(x) ** 2
        return proba / proba.sum(axis=1, keepdims=True)


class _OddForLargeValues(RandomForestClassifier):
    """Predicts like its trees except for values of x1 far outside the training range."""

    def predict_proba(self, x):
        proba = super().predict_proba(x)
        return np.where(x[:, :1] > 500, proba[:, ::-1], proba)


def _with_forest(cls) -> AutomlModel:
    table = _table("binary", 300, seed=5)
    model = _model(table, "binary", ("linear",))
    y, _ = encode_target(table["y"], "binary")
    forest = cls(n_estimators=20, random_state=0).fit(model.preparer.transform(table), y)
    model.members = [(forest, None, 1.0)]
    return model


def test_a_graph_that_predicts_differently_is_not_exported():
    exported = export(_with_forest(_SharpenedForest))
    assert exported.onnx is None
    assert exported.reason.startswith("the graph's probabilities differ from the model's by up to")


def test_the_callers_sample_rows_are_checked_too():
    model = _with_forest(_OddForLargeValues)
    assert export(model).reason is None  # the built rows never reach x1 > 500
    sample = _table("binary", 50, seed=6).drop("y").with_columns(x1=pl.lit(900.0))
    exported = export(model, sample=sample.to_pandas())
    assert exported.onnx is None
    assert "probabilities differ" in exported.reason


def test_a_model_from_the_engine_converts():
    table = _table("binary", 300, seed=8)
    result = train(table, TrainConfig(target="y", budget_seconds=4.0, max_trials=4))
    exported = export(result.model)
    assert exported.reason is None, exported.reason
    rows = _fresh_rows("binary")
    _assert_same_predictions(result.model, OnnxPredictor(exported.onnx).predict(rows), rows)


# ---- inspecting uploads -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_model():
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    return model, to_onnx(model, x[:1].astype(np.float32), target_opset=17).SerializeToString()


def test_inspect_reads_a_plain_skl2onnx_classifier(iris_model):
    _, data = iris_model
    signature = inspect(data)
    assert signature["task"] == "multiclass"
    assert signature["classes"] == [0, 1, 2]
    assert signature["inputs"] == [{"name": "X", "type": "float", "shape": [None, 4]}]
    assert signature["outputs"] == [
        {"name": "output_label", "type": "int64", "shape": [None]},
        {"name": "output_probability", "type": "sequence<map<int64,float>>", "shape": None},
    ]
    assert signature["producer"].startswith("skl2onnx ")
    assert signature["opset"]["ai.onnx"] == 17


def test_a_matrix_input_is_fed_from_the_tables_columns_in_order(iris_model):
    model, data = iris_model
    x, _ = load_iris(return_X_y=True)
    table = pl.DataFrame(x, schema=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    got = OnnxPredictor(data).predict(table)
    assert (got["output_label"] == model.predict(x)).all()
    assert np.abs(got["output_probability"] - model.predict_proba(x)).max() < 1e-5
    with pytest.raises(InvalidInput, match="takes 4 columns as one matrix; the table has 3"):
        OnnxPredictor(data).predict(table.drop("petal_w"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The ONNX file is empty"),
        (b"\x08\x07garbage that is not protobuf \xff\xfe", "Not an ONNX model"),
        (b"<html>not a model</html>", "Not an ONNX model"),
    ],
)
def test_garbage_is_refused(data, message):
    with pytest.raises(InvalidInput, match=message):
        inspect(data)


def test_a_truncated_file_is_refused(fitted):
    data = fitted["binary"][1].onnx
    for cut in (len(data) // 2, len(data) - 3, 40):
        with pytest.raises(InvalidInput, match=r"Not an ONNX model|checker|onnxruntime"):
            inspect(data[:cut])


def _graph(inputs, nodes, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _floats(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_a_graph_the_checker_refuses_is_refused():
    broken = _graph(
        [_floats("x", [None, 1])],
        [helper.make_node("Relu", ["nowhere"], ["y"])],
        [_floats("y", [None, 1])],
    )
    with pytest.raises(InvalidInput, match="The ONNX checker refuses the model"):
        inspect(broken.SerializeToString())


def test_a_model_with_ten_thousand_inputs_is_refused():
    names = [f"c{i}" for i in range(10_000)]
    wide = _graph(
        [_floats(n, [None, 1]) for n in names],
        [helper.make_node("Concat", names, ["y"], axis=1)],
        [_floats("y", [None, 10_000])],
    )
    with pytest.raises(InvalidInput, match="The model has 10000 inputs; at most 2000 are accepted"):
        inspect(wide.SerializeToString())


def test_tensors_in_external_files_are_refused_before_anything_reads_them():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../../etc/passwd")
    model = _graph(
        [_floats("x", [None, 1])],
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [_floats("y", [None, 1])],
        [weight],
    )
    with pytest.raises(InvalidInput, match=r"external files \(w\)"):
        inspect(model.SerializeToString())
    with pytest.raises(InvalidInput, match="external files"):
        OnnxPredictor(model.SerializeToString())


def test_a_graph_onnxruntime_cannot_run_is_refused():
    custom = _graph(
        [_floats("x", [None, 1])],
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        [_floats("y", [None, 1])],
    )
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(InvalidInput, match="onnxruntime cannot load the model"):
        inspect(custom.SerializeToString())


def test_a_regression_graph_with_unnamed_float_outputs_is_read_as_regression():
    model = _graph(
        [_floats("x", [None, 3])],
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        [_floats("y", [None])],
    )
    signature = inspect(model.SerializeToString())
    assert (signature["task"], signature["classes"], signature["producer"]) == (
        "regression",
        None,
        None,
    )


# ---- predicting -------------------------------------------------------------------------------


def test_missing_columns_are_a_clear_invalid_input(fitted):
    predictor = OnnxPredictor(fitted["binary"][1].onnx)
    rows = _fresh_rows("binary").drop("garden", "colour")
    with pytest.raises(InvalidInput, match="Missing input columns: garden, colour") as caught:
        predictor.predict(rows)
    assert caught.value.extra["errors"] == [
        {"pointer": "/garden", "detail": "missing input column"},
        {"pointer": "/colour", "detail": "missing input column"},
    ]


def test_text_pandas_and_arrow_tables_predict_like_typed_polars(fitted):
    """A CSV read without type inference gives text: numbers and booleans are parsed as the
    model's own preparer parses them."""
    model, exported = fitted["binary"]
    predictor = OnnxPredictor(exported.onnx)
    rows = _fresh_rows("binary")
    want = predictor.predict(rows)["probabilities"]
    text = rows.select(pl.all().cast(pl.Utf8))
    assert np.abs(predictor.predict(text)["probabilities"] - want).max() < 1e-6
    assert np.abs(predictor.predict(text)["probabilities"] - model.predict_proba(text)).max() < 1e-4
    assert np.array_equal(predictor.predict(rows.to_pandas())["probabilities"], want)
    assert np.array_equal(predictor.predict(rows.to_arrow())["probabilities"], want)


def test_a_column_that_cannot_be_read_as_numbers_is_refused(fitted):
    predictor = OnnxPredictor(fitted["binary"][1].onnx)
    rows = _fresh_rows("binary").with_columns(x1=pl.lit(dt.date(2024, 1, 1)))
    with pytest.raises(InvalidInput, match="Column 'x1' holds Date; the model takes numbers"):
        predictor.predict(rows)


def test_single_row_latency_is_printed(fitted, capsys):
    """Measured, not asserted (timed assertions belong in bench/): one row, as served."""
    model, exported = fitted["binary"]
    predictor = OnnxPredictor(exported.onnx)
    row = _fresh_rows("binary")[:1]
    assert predictor.predict(row)["label"].tolist() == model.predict(row).tolist()
    timings = {}
    for name, call, repeats in (
        ("OnnxPredictor.predict", lambda: predictor.predict(row), 200),
        ("AutomlModel.predict", lambda: model.predict(row), 10),
    ):
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        timings[name] = (time.perf_counter() - start) / repeats * 1e6
    with capsys.disabled():
        print("\nsingle row: " + ", ".join(f"{k} {v:,.0f} us" for k, v in timings.items()))
