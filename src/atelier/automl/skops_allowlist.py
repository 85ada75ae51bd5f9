"""What a skops file may hold: an exact allow-list, checked on the file's schema alone.

A skops file is a zip whose `schema.json` describes every object to rebuild as a node: a loader
(`ObjectNode`, `FunctionNode`, ...), a module and a class name, and its state. `refusals` reads
that schema as data (nothing is imported from it, nothing built) and names everything outside
the list below; only a file with no refusal is handed to `skops.io.load`.

Default deny, exact names, no prefixes. scikit-learn ships functions that run arbitrary Python
(`sklearn.utils._testing.assert_run_python_script_without_output`), so "anything under
`sklearn.`" is no boundary; neither is skops' own trust in `functools.partial` or numpy ufuncs.
The rules:

- every node's loader must be one we know and its type one listed for that loader;
- no callable comes from a file: functions, partials, bound methods and `operator` callables are
  refused, and a type may be referred to (a dtype, a dict's key type) only if calling it is
  inert (`str`, `numpy.float64`, ...). One exception, the shape HistGradientBoosting writes for
  its categorical columns: `FunctionTransformer(func=partial(check_array, dtype=...,
  ensure_all_finite=...))`, accepted only there and only with those arguments;
- an object's state may not shadow its class: no dunder name, and no name the class holds a
  method, property or other descriptor under (`__sklearn_tags__`, `predict`, `fit`), so a method
  called on the rebuilt object is always the class's own;
- an object id used twice must name the same kind of node both times: skops builds the second
  use from the first, so a node checked as a plain value cannot turn into an object's state or
  into the one allowed partial.

The lists come from what Atelier's AutoML models contain (every learner family) and from the
scikit-learn, LightGBM and XGBoost estimators and transformers a user commonly uploads;
`tests/automl/test_skops_allowlist.py` builds those models, and walks every scikit-learn module
to check that none of its functions gets through.
"""

from __future__ import annotations

import importlib
import inspect
import json
import zipfile
from pathlib import Path
from typing import Any

MAX_SCHEMA_BYTES = 256 * 1024 * 1024  # a 200-tree forest writes about 3 MB

_NUMPY_SCALARS = frozenset(
    f"numpy.{name}"
    for name in (
        "bool",
        "str_",
        "bytes_",
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    )
)

# Estimators and transformers (instances rebuilt from their state).
ESTIMATORS = frozenset(
    {
        "atelier.automl.model.AutomlModel",
        "atelier.automl.prepare.ColumnPreparer",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "xgboost.core.Booster",
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.compose._column_transformer.make_column_selector",
        "sklearn.compose._target.TransformedTargetRegressor",
        "sklearn.decomposition._pca.PCA",
        "sklearn.decomposition._truncated_svd.TruncatedSVD",
        "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
        "sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis",
        "sklearn.dummy.DummyClassifier",
        "sklearn.dummy.DummyRegressor",
        "sklearn.ensemble._bagging.BaggingClassifier",
        "sklearn.ensemble._bagging.BaggingRegressor",
        "sklearn.ensemble._forest.ExtraTreesClassifier",
        "sklearn.ensemble._forest.ExtraTreesRegressor",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._forest.RandomForestRegressor",
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._stacking.StackingClassifier",
        "sklearn.ensemble._stacking.StackingRegressor",
        "sklearn.ensemble._voting.VotingClassifier",
        "sklearn.ensemble._voting.VotingRegressor",
        "sklearn.ensemble._weight_boosting.AdaBoostClassifier",
        "sklearn.ensemble._weight_boosting.AdaBoostRegressor",
        "sklearn.feature_selection._from_model.SelectFromModel",
        "sklearn.feature_selection._rfe.RFE",
        "sklearn.feature_selection._variance_threshold.VarianceThreshold",
        "sklearn.impute._base.MissingIndicator",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.impute._knn.KNNImputer",
        "sklearn.kernel_approximation.Nystroem",
        "sklearn.kernel_approximation.RBFSampler",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._bayes.ARDRegression",
        "sklearn.linear_model._bayes.BayesianRidge",
        "sklearn.linear_model._coordinate_descent.ElasticNet",
        "sklearn.linear_model._coordinate_descent.ElasticNetCV",
        "sklearn.linear_model._coordinate_descent.Lasso",
        "sklearn.linear_model._coordinate_descent.LassoCV",
        "sklearn.linear_model._glm.glm.GammaRegressor",
        "sklearn.linear_model._glm.glm.PoissonRegressor",
        "sklearn.linear_model._glm.glm.TweedieRegressor",
        "sklearn.linear_model._huber.HuberRegressor",
        "sklearn.linear_model._least_angle.Lars",
        "sklearn.linear_model._least_angle.LassoLars",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._logistic.LogisticRegressionCV",
        "sklearn.linear_model._omp.OrthogonalMatchingPursuit",
        "sklearn.linear_model._passive_aggressive.PassiveAggressiveClassifier",
        "sklearn.linear_model._perceptron.Perceptron",
        "sklearn.linear_model._quantile.QuantileRegressor",
        "sklearn.linear_model._ransac.RANSACRegressor",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.linear_model._ridge.RidgeCV",
        "sklearn.linear_model._ridge.RidgeClassifier",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.linear_model._stochastic_gradient.SGDRegressor",
        "sklearn.linear_model._theil_sen.TheilSenRegressor",
        "sklearn.multiclass.OneVsRestClassifier",
        "sklearn.naive_bayes.BernoulliNB",
        "sklearn.naive_bayes.GaussianNB",
        "sklearn.naive_bayes.MultinomialNB",
        "sklearn.neighbors._classification.KNeighborsClassifier",
        "sklearn.neighbors._classification.RadiusNeighborsClassifier",
        "sklearn.neighbors._nearest_centroid.NearestCentroid",
        "sklearn.neighbors._regression.KNeighborsRegressor",
        "sklearn.neighbors._regression.RadiusNeighborsRegressor",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.Binarizer",
        "sklearn.preprocessing._data.MaxAbsScaler",
        "sklearn.preprocessing._data.MinMaxScaler",
        "sklearn.preprocessing._data.Normalizer",
        "sklearn.preprocessing._data.PowerTransformer",
        "sklearn.preprocessing._data.QuantileTransformer",
        "sklearn.preprocessing._data.RobustScaler",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._discretization.KBinsDiscretizer",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._encoders.OrdinalEncoder",
        "sklearn.preprocessing._function_transformer.FunctionTransformer",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.preprocessing._label.LabelEncoder",
        "sklearn.preprocessing._polynomial.PolynomialFeatures",
        "sklearn.preprocessing._target_encoder.TargetEncoder",
        "sklearn.svm._classes.LinearSVC",
        "sklearn.svm._classes.LinearSVR",
        "sklearn.svm._classes.NuSVC",
        "sklearn.svm._classes.NuSVR",
        "sklearn.svm._classes.SVC",
        "sklearn.svm._classes.SVR",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.tree._classes.ExtraTreeRegressor",
    }
)
# What those estimators keep inside them (losses, links, neighbour trees, optimizers).
INTERNALS = frozenset(
    {
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.AbsoluteError",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfGammaLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfPoissonLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.HalfTweedieLoss",
        "sklearn._loss.loss.HalfTweedieLossIdentity",
        "sklearn._loss.loss.HuberLoss",
        "sklearn._loss.loss.PinballLoss",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)
# Types a file may name as a value (a dtype, a dict's key type, a defaultdict's factory): what
# loading or using the model may call with data, so only types whose call is inert.
TYPE_REFERENCES = _NUMPY_SCALARS | {
    "builtins.bool",
    "builtins.float",
    "builtins.int",
    "builtins.object",
    "builtins.str",
    "collections.OrderedDict",
}
# Loader -> the exact types it may build. A loader that is not a key is refused whatever its
# type (MethodNode, OperatorFuncNode, ConstructorFromReduceNode, SetNode, SparseMatrixNode...).
ALLOWED: dict[str, frozenset[str]] = {
    "ObjectNode": ESTIMATORS | INTERNALS,
    "TreeNode": frozenset({"sklearn.tree._tree.Tree"}),
    "LossNode": frozenset(
        {
            "sklearn._loss._loss.CyAbsoluteError",
            "sklearn._loss._loss.CyHalfBinomialLoss",
            "sklearn._loss._loss.CyHalfGammaLoss",
            "sklearn._loss._loss.CyHalfMultinomialLoss",
            "sklearn._loss._loss.CyHalfPoissonLoss",
            "sklearn._loss._loss.CyHalfSquaredError",
            "sklearn._loss._loss.CyHalfTweedieLoss",
            "sklearn._loss._loss.CyHalfTweedieLossIdentity",
            "sklearn._loss._loss.CyHuberLoss",
            "sklearn._loss._loss.CyPinballLoss",
            "sklearn.linear_model._sgd_fast.Hinge",
            "sklearn.linear_model._sgd_fast.ModifiedHuber",
        }
    ),
    "NdArrayNode": _NUMPY_SCALARS | {"numpy.ndarray"},
    "DTypeNode": frozenset({"numpy.dtype"}),
    "RandomStateNode": frozenset({"numpy.random.mtrand.RandomState"}),
    "RandomGeneratorNode": frozenset({"numpy.random._generator.Generator"}),
    "DictNode": frozenset(
        {"builtins.dict", "collections.OrderedDict", "sklearn.utils._bunch.Bunch"}
    ),
    "DefaultDictNode": frozenset({"collections.defaultdict"}),
    "ListNode": frozenset({"builtins.list"}),
    "TupleNode": frozenset({"builtins.tuple"}),
    "SliceNode": frozenset({"builtins.slice"}),
    "JsonNode": frozenset({"builtins.str"}),
    "BytesNode": frozenset({"builtins.bytes"}),
    "BytearrayNode": frozenset({"builtins.bytearray"}),
    "TypeNode": TYPE_REFERENCES,
}
# Functions: none may be referred to, except this one where HistGradientBoosting puts it.
FUNCTION_TRANSFORMER = "sklearn.preprocessing._function_transformer.FunctionTransformer"
CHECK_ARRAY = "sklearn.utils.validation.check_array"
CHECK_ARRAY_KEYWORDS = frozenset({"dtype", "ensure_all_finite"})
# Extension types whose state is a tuple their own `__setstate__` reads.
TUPLE_STATE = frozenset(
    {
        "sklearn.metrics._dist_metrics.ChebyshevDistance64",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
    }
)
BIT_GENERATORS = frozenset({"MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"})


def allowed_names() -> frozenset[str]:
    """Every name the list holds, whatever the loader, and the partial of check_array (which
    `refusals` accepts in its one place only): what skops may be told to trust once a file
    has no refusal."""
    return frozenset().union(*ALLOWED.values()) | {"functools.partial", CHECK_ARRAY}


def check_file(path: Path) -> list[str]:
    """The refusals for a skops file (`refusals`), reading `schema.json` as data only.
    ValueError (or zipfile.BadZipFile) when the file is no readable skops file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("schema.json")
        if info.file_size > MAX_SCHEMA_BYTES:
            raise ValueError(f"schema.json is larger than {MAX_SCHEMA_BYTES} bytes")
        schema = json.loads(archive.read(info))
    if not isinstance(schema, dict):
        raise ValueError("schema.json is not a skops schema")
    return refusals(schema)


def refusals(schema: dict[str, Any]) -> list[str]:
    """Every type, function and attribute in the schema that is not allowed, sorted: a type or
    function as `module.name`, an attribute as `module.Class.attribute`. Empty: loadable."""
    return sorted(_Walk().run(schema))


class _Walk:
    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.by_id: dict[int, tuple] = {}

    def run(self, schema: dict[str, Any]) -> set[str]:
        # (value, slot): slot is (owner type, attribute) for the value of an object's attribute.
        stack: list[tuple[Any, tuple[str, str] | None]] = [(schema, None)]
        while stack:
            value, slot = stack.pop()
            if isinstance(value, list):
                stack.extend((item, None) for item in value)
            elif isinstance(value, dict):
                if "__loader__" in value:
                    stack.extend(self._node(value, slot))
                else:
                    stack.extend((item, None) for item in value.values())
        return self.refused

    def _node(self, node: dict[str, Any], slot: tuple[str, str] | None) -> list:
        """Check one node; the values still to walk."""
        loader, name = node.get("__loader__"), _name(node)
        if slot == (FUNCTION_TRANSFORMER, "func") and _is_check_array(node):
            self._same_object(node, "check_array partial")
            # The empty `args` and the null `namespace` share ids with every other empty tuple
            # and null in the file; even swapped for another tuple or dict, check_array stays
            # inert (it takes one more positional argument, an accepted sparse format).
            for part in ("func", "kwds"):
                self._same_object(node["content"][part], f"check_array partial {part}")
            for part in ("args", "namespace"):
                self._same_object(node["content"][part], None)
            kwds = node["content"]["kwds"]
            return [(kwds.get("key_types"), None), *((v, None) for v in kwds["content"].values())]
        self._same_object(node, None)
        if loader not in ALLOWED or name not in ALLOWED[loader]:
            self.refused.add(name)
        elif loader == "ObjectNode":
            return self._object_state(node, name)
        elif loader == "RandomGeneratorNode" and _bit_generator(node) not in BIT_GENERATORS:
            self.refused.add(f"numpy.random.{_bit_generator(node)}")
        return [(v, None) for k, v in node.items() if k != "__loader__"]

    def _object_state(self, node: dict[str, Any], name: str) -> list:
        """An instance's attributes: each checked against its class, each value walked. What
        skops passes to `__setstate__` or `__dict__.update`: a dict of attributes, nothing (a
        JSON null), or for the few extension types that keep one, a tuple."""
        state = node.get("content")
        if state is None:
            return []
        loader = state.get("__loader__") if isinstance(state, dict) else None
        if loader == "JsonNode" and state.get("content") == "null":
            return []
        role = f"state of {name}"
        if loader == "TupleNode" and _name(state) == "builtins.tuple" and name in TUPLE_STATE:
            self._same_object(state, role)
            return [(v, None) for k, v in state.items() if k != "__loader__"]
        if loader != "DictNode" or _name(state) != "builtins.dict":
            self.refused.add(f"{name} (its state is not a dict of attributes)")
            return [(state, None)]
        if not isinstance(state.get("content"), dict):
            self.refused.add(f"{name} (its state is not a dict of attributes)")
            return []
        self._same_object(state, role)
        cls = _import_type(name)
        pending: list = [(state.get("key_types"), None)]
        for key, value in state["content"].items():
            if cls is None or _shadows(cls, key):
                self.refused.add(f"{name}.{key}")
            pending.append((value, (name, key)))
        return pending

    def _same_object(self, node: Any, role: str | None) -> None:
        """skops builds every node carrying an object id already seen from the first such node.
        Each node is checked where it stands, so a node may only stand for another of the same
        loader, type and role (an object's state, the check_array partial, or a plain value)."""
        if not isinstance(node, dict) or "__id__" not in node:
            return
        saved, kind = node["__id__"], (node.get("__loader__"), _name(node), role)
        if not isinstance(saved, int) or isinstance(saved, bool):
            self.refused.add(f"{kind[1]} (an object id that is not a number)")
        elif self.by_id.setdefault(saved, kind) != kind:
            self.refused.add(f"{kind[1]} (object id {saved} also names another kind of object)")


def _name(node: dict[str, Any]) -> str:
    module, cls = node.get("__module__"), node.get("__class__")
    if not isinstance(module, str) or not isinstance(cls, str):
        return f"{node.get('__loader__')!s} (a node without a type)"
    return f"{module}.{cls}"


def _is_check_array(node: dict[str, Any]) -> bool:
    """`partial(check_array, dtype=..., ensure_all_finite=...)`, nothing more."""
    content = node.get("content")
    if node.get("__loader__") != "PartialNode" or _name(node) != "functools.partial":
        return False
    if not isinstance(content, dict) or set(content) != {"func", "args", "kwds", "namespace"}:
        return False
    func, args, kwds, namespace = (content[k] for k in ("func", "args", "kwds", "namespace"))
    return (
        isinstance(func, dict)
        and func.get("__loader__") == "FunctionNode"
        and _name(func) == CHECK_ARRAY
        and isinstance(args, dict)
        and args.get("__loader__") == "TupleNode"
        and args.get("content") == []
        and isinstance(namespace, dict)
        and namespace.get("__loader__") == "JsonNode"
        and namespace.get("content") == "null"
        and isinstance(kwds, dict)
        and kwds.get("__loader__") == "DictNode"
        and _name(kwds) == "builtins.dict"
        and isinstance(kwds.get("content"), dict)
        and set(kwds["content"]) <= CHECK_ARRAY_KEYWORDS
    )


def _bit_generator(node: dict[str, Any]) -> str:
    try:
        state = node["content"]["bit_generator"]["content"]
        return str(json.loads(state["bit_generator"]["content"]))
    except (KeyError, TypeError, ValueError):
        return "(unreadable bit generator)"


def _import_type(name: str) -> type | None:
    """An allowed type (only names from the list ever reach here); None if it is not one."""
    module, _, cls = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) else None


def _shadows(cls: type, key: str) -> bool:
    """Whether an instance attribute `key` is a dunder or names a method (or any descriptor:
    property, classmethod, ...) of `cls`."""
    if key.startswith("__") and key.endswith("__"):
        return True
    try:
        attribute = inspect.getattr_static(cls, key)
    except AttributeError:
        return False
    return callable(attribute) or hasattr(type(attribute), "__get__")
