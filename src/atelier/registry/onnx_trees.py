"""Tree ensembles for an ONNX export: the LightGBM, XGBoost, forest and HistGradientBoosting
fold models of an `AutomlModel`, written into an `onnx_graph.Graph`.

LightGBM and XGBoost members go through skl2onnx with onnxmltools' converters and are spliced
in under their own prefix. Scikit-learn's trees are written here as TreeEnsembleRegressor node
tables: skl2onnx ignores where the trees send missing values (`missing_go_to_left`) and
HistGradientBoosting's categorical splits, so its graphs would predict differently without
failing. `onnx_export` picks the writer for each fold model by its class (`BOOSTERS`,
`FORESTS`, `HIST_GB`).
"""

from __future__ import annotations

import functools
from typing import Any

import lightgbm as lgb
import numpy as np
import onnx
import xgboost as xgb
from onnx import numpy_helper
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
from skl2onnx import convert_sklearn, update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from skl2onnx.common.shape_calculator import (
    calculate_linear_classifier_output_shapes as _classifier_shapes,
)
from skl2onnx.common.shape_calculator import (
    calculate_linear_regressor_output_shapes as _regressor_shapes,
)
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from atelier.registry.onnx_graph import ML_DOMAIN, OPSET, Graph, NotConvertible

BOOSTERS = (lgb.LGBMClassifier, lgb.LGBMRegressor, xgb.XGBClassifier, xgb.XGBRegressor)
FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier,
           ExtraTreesRegressor)  # fmt: skip
HIST_GB = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)


@functools.cache
def _register_converters() -> None:
    """skl2onnx looks converters up in its own process-wide registry: add onnxmltools' LightGBM
    and XGBoost converters to it, once."""
    classifier = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for cls, alias, convert, shapes, options in [
        (lgb.LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm, _classifier_shapes,
         classifier),
        (lgb.LGBMRegressor, "LightGbmLGBMRegressor", convert_lightgbm, _regressor_shapes,
         {"split": None}),
        (xgb.XGBClassifier, "XGBoostXGBClassifier", convert_xgboost, _classifier_shapes,
         classifier),
        (xgb.XGBRegressor, "XGBoostXGBRegressor", convert_xgboost, _regressor_shapes, None),
    ]:  # fmt: skip
        update_registered_converter(cls, alias, shapes, convert, options=options)


def write_booster(g: Graph, est: Any, single: str, task: str, index: int) -> str:
    """A LightGBM or XGBoost fold model through skl2onnx, spliced in under its own prefix."""
    _register_converters()
    options = {id(est): {"zipmap": False}} if task != "regression" else None
    initial = [("features", FloatTensorType([None, est.n_features_in_]))]
    try:
        sub = convert_sklearn(est, initial_types=initial, target_opset=OPSET, options=options)
    except (RuntimeError, ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise NotConvertible(f"the {type(est).__name__} converter failed: {exc}") from None
    sub = onnx.compose.add_prefix(sub, f"m{index}_")
    g.add_tree_nodes(
        sum(len(a.ints) for n in sub.graph.node for a in n.attribute if a.name == "nodes_nodeids")
    )
    g.op("Identity", single, output=sub.graph.input[0].name)
    g.nodes.extend(sub.graph.node)
    g.initializers.extend(sub.graph.initializer)
    return sub.graph.output[0 if task == "regression" else 1].name  # values, or probabilities


class _Trees:
    """The attributes of one TreeEnsembleRegressor, gathered tree by tree (ids are per tree)."""

    _NODE_KEYS = ("treeids", "nodeids", "featureids", "modes", "values", "truenodeids",
                  "falsenodeids", "missing_value_tracks_true")  # fmt: skip
    _TARGET_KEYS = ("treeids", "nodeids", "ids", "weights")

    def __init__(self, n_targets: int) -> None:
        self.n_targets = n_targets
        self.nodes: dict[str, list] = {k: [] for k in self._NODE_KEYS}
        self.targets: dict[str, list] = {k: [] for k in self._TARGET_KEYS}

    def add(self, tree: int, ids, features, modes, values, true_ids, false_ids, missing) -> None:
        columns = (
            np.full(len(ids), tree),
            ids,
            features,
            modes,
            values,
            true_ids,
            false_ids,
            missing,
        )
        for key, column in zip(self._NODE_KEYS, columns, strict=True):
            self.nodes[key].append(np.asarray(column))

    def leaves(self, tree: int, ids, targets, weights) -> None:
        columns = (np.full(len(ids), tree), ids, targets, weights)
        for key, column in zip(self._TARGET_KEYS, columns, strict=True):
            self.targets[key].append(np.asarray(column))

    def emit(self, g: Graph, x: str, base_values: np.ndarray, dtype: type) -> str:
        """The node; thresholds and leaf values in `dtype`, the input's own type."""
        nodes = {k: np.concatenate(v) for k, v in self.nodes.items()}
        targets = {k: np.concatenate(v) for k, v in self.targets.items()}
        attrs = {f"nodes_{k}": v.tolist() for k, v in nodes.items() if k != "values"}
        attrs |= {f"target_{k}": v.tolist() for k, v in targets.items() if k != "weights"}
        return g.op(
            "TreeEnsembleRegressor",
            x,
            domain=ML_DOMAIN,
            n_targets=self.n_targets,
            aggregate_function="SUM",
            post_transform="NONE",
            nodes_values_as_tensor=numpy_helper.from_array(nodes["values"].astype(dtype)),
            target_weights_as_tensor=numpy_helper.from_array(targets["weights"].astype(dtype)),
            base_values_as_tensor=numpy_helper.from_array(np.asarray(base_values, dtype)),
            **attrs,
        )


def _floor32(values: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each threshold: for a float32 input x, `x <= t` in
    float64 (how scikit-learn's trees compare) is exactly `x <= floor32(t)` in float32."""
    exact = np.asarray(values, dtype=np.float64)
    out = exact.astype(np.float32)
    above = out.astype(np.float64) > exact
    out[above] = np.nextafter(out[above], np.float32(-np.inf))
    return out


def write_forest(g: Graph, est: Any, single: str, task: str) -> str:
    """Random forest or extra trees: the mean of the trees, each leaf a class distribution (or a
    value); a missing value follows the side each split learned (`missing_go_to_left`)."""
    trees = [e.tree_ for e in est.estimators_]
    g.add_tree_nodes(sum(t.node_count for t in trees))
    classify = task != "regression"
    ensemble = _Trees(int(est.n_classes_) if classify else 1)
    for tree_id, t in enumerate(trees):
        leaf = t.children_left < 0
        ids = np.arange(t.node_count)
        ensemble.add(
            tree_id,
            ids,
            np.where(leaf, 0, t.feature),
            np.where(leaf, "LEAF", "BRANCH_LEQ"),
            np.where(leaf, 0, _floor32(t.threshold)),
            np.where(leaf, 0, t.children_left),
            np.where(leaf, 0, t.children_right),
            np.where(leaf, 0, t.missing_go_to_left),
        )
        values = t.value[leaf, 0, :]
        if classify:
            values = values / values.sum(axis=1, keepdims=True)
        rows, targets = np.nonzero(values)
        ensemble.leaves(tree_id, ids[leaf][rows], targets, values[rows, targets] / len(trees))
    return ensemble.emit(g, single, np.zeros(ensemble.n_targets), np.float32)


_LINKS = {"HalfSquaredError": "identity", "HalfBinomialLoss": "sigmoid",
          "HalfMultinomialLoss": "softmax"}  # fmt: skip


def write_hist_gb(g: Graph, est: Any, features: str) -> str:
    """HistGradientBoosting: the baseline plus every tree, then the loss's link. A categorical
    split becomes a chain of equality tests on the raw category codes; codes the model never
    saw take the split's missing-value side, as in scikit-learn's own prediction."""
    link = _LINKS.get(type(est._loss).__name__)
    if link is None:
        raise NotConvertible(f"HistGradientBoosting with the {est.loss!r} loss")
    g.add_tree_nodes(sum(len(p.nodes) for it in est._predictors for p in it))
    columns, categories = np.arange(est.n_features_in_), {}
    if est._preprocessor is not None:  # categorical features come first, ordinal-encoded
        mask = est.is_categorical_
        columns = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
        encoder = est._preprocessor.named_transformers_["encoder"]
        for position, cats in enumerate(encoder.categories_):
            categories[position] = cats[~np.isnan(cats)]
    known, known_index = est._bin_mapper.make_known_categories_bitsets()
    ensemble = _Trees(est.n_trees_per_iteration_)
    for tree_id, (target, predictor) in enumerate(
        (k, p) for iteration in est._predictors for k, p in enumerate(iteration)
    ):
        _hist_gb_tree(ensemble, tree_id, target, predictor, columns, categories, known, known_index)
    raw = ensemble.emit(g, features, est._baseline_prediction.ravel(), np.float64)
    if link == "sigmoid":
        p = g.op("Sigmoid", raw)
        return g.op("Concat", g.op("Sub", g.const(np.float32(1.0)), p), p, axis=1)
    return g.op("Softmax", raw, axis=1) if link == "softmax" else raw


def _bits(bitset: np.ndarray, n: int) -> np.ndarray:
    j = np.arange(n)
    return ((bitset[j >> 5] >> (j & 31).astype(np.uint32)) & 1).astype(bool)


def _hist_gb_tree(ensemble, tree_id, target, predictor, columns, categories, known, known_index):
    extra = len(predictor.nodes)  # ids for the chain nodes of categorical splits
    rows: list[tuple] = []
    leaf_ids, leaf_values = [], []
    for i, node in enumerate(predictor.nodes):
        if node["is_leaf"]:
            rows.append((i, 0, "LEAF", 0.0, 0, 0, 0))
            leaf_ids.append(i)
            leaf_values.append(node["value"])
            continue
        f, left, right = int(node["feature_idx"]), int(node["left"]), int(node["right"])
        to_left = int(node["missing_go_to_left"])
        if not node["is_categorical"]:
            rows.append((i, columns[f], "BRANCH_LEQ", node["num_threshold"], left, right, to_left))
            continue
        cats = categories[f]
        in_left = _bits(predictor.raw_left_cat_bitsets[node["bitset_idx"]], len(cats))
        is_known = _bits(known[known_index[f]], len(cats))
        # Test the codes that leave the missing-value side; the rest (unseen codes, NaN) fall
        # through the chain to that side.
        if to_left:
            tested, hit, fallback = cats[is_known & ~in_left], right, left
        else:
            tested, hit, fallback = cats[in_left], left, right
        tested = tested if len(tested) else np.array([np.nan])  # a test nothing passes
        chain = [i, *range(extra, extra + len(tested) - 1), fallback]
        extra += len(tested) - 1
        for k, code in enumerate(tested):
            rows.append((chain[k], columns[f], "BRANCH_EQ", code, hit, chain[k + 1], 0))
    ensemble.add(tree_id, *zip(*rows, strict=True))
    ensemble.leaves(tree_id, leaf_ids, [target] * len(leaf_ids), leaf_values)
