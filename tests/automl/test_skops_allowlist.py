"""The skops allow-list (`automl.skops_allowlist`): every scikit-learn function is refused
wherever a file puts it, no attribute may shadow a method of the allowed classes, a reused
object id cannot smuggle one node in for another, and the models users and AutoML really
save still load."""

import copy
import io
import json
import subprocess
import sys
import zipfile
from functools import partial

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_array

from atelier.automl import artifacts, skops_allowlist
from atelier.automl.skops_allowlist import CHECK_ARRAY, FUNCTION_TRANSFORMER, refusals

pytestmark = pytest.mark.backend_independent

# Run apart: importing every module of scikit-learn (its tests included) must not change this
# process. Prints every function object found in them, as skops would name it.
_COLLECT = r"""
import importlib, inspect, json, pkgutil, sys, warnings
import sklearn
warnings.filterwarnings("ignore")
found, modules = set(), 0
for info in pkgutil.walk_packages(sklearn.__path__, "sklearn.", onerror=lambda name: None):
    try:
        module = importlib.import_module(info.name)
    except BaseException:  # optional dependencies, pytest.importorskip
        continue
    modules += 1
    for obj in list(vars(module).values()):
        if isinstance(obj, type) or not callable(obj):
            continue
        name, where = getattr(obj, "__name__", None), getattr(obj, "__module__", None)
        if isinstance(name, str) and isinstance(where, str) and where.startswith("sklearn"):
            found.add((where, name))
with open(sys.argv[1], "w") as out:  # not stdout: some modules print as they load
    json.dump({"modules": modules, "functions": sorted(found)}, out)
"""


@pytest.fixture(scope="module")
def sklearn_functions(tmp_path_factory) -> list[tuple[str, str]]:
    out = tmp_path_factory.mktemp("sklearn") / "functions.json"
    subprocess.run(
        [sys.executable, "-c", _COLLECT, str(out)], capture_output=True, check=True, timeout=300
    )
    found = json.loads(out.read_text())
    assert found["modules"] > 500, found["modules"]  # the walk reached the private modules
    return [tuple(f) for f in found["functions"]]


def schema_of(obj) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(sio.dumps(obj))).read("schema.json"))


def nodes(schema, loader):
    """Every node of the schema with that loader."""
    stack, found = [schema], []
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if value.get("__loader__") == loader:
                found.append(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found


def hgb_transformer() -> FunctionTransformer:
    """What HistGradientBoosting keeps for its numeric columns when some are categorical."""
    return FunctionTransformer(
        partial(check_array, dtype=[np.float64], ensure_all_finite=False)
    ).fit(np.ones((3, 2)))


def test_every_scikit_learn_function_is_refused_wherever_a_file_puts_it(sklearn_functions):
    assert len(sklearn_functions) > 5000
    assert ("sklearn.utils._testing", "assert_run_python_script_without_output") in set(
        sklearn_functions
    )
    plain = schema_of(FunctionTransformer(np.exp).fit(np.ones((3, 2))))
    in_partial = schema_of(hgb_transformer())
    as_state = schema_of(Ridge().fit(np.ones((3, 2)), [1.0, 2.0, 3.0]))
    assert refusals(in_partial) == []  # the one accepted shape, the template of the second case
    passed = []
    for module, name in sklearn_functions:
        qualified = f"{module}.{name}"
        schemas = []
        for template in (plain, in_partial):
            schema = copy.deepcopy(template)
            (function,) = nodes(schema, "FunctionNode")
            function.update(__module__=module, __class__=name)
            schemas.append(schema)
        schema = copy.deepcopy(as_state)  # a partial as the value of a plain attribute
        schema["content"]["content"]["alpha"] = copy.deepcopy(nodes(schemas[1], "PartialNode")[0])
        schemas.append(schema)
        for schema in schemas:
            refused = refusals(schema)
            if qualified not in refused:
                passed.append((qualified, refused))
    # check_array is let through inside HistGradientBoosting's partial only (second case).
    assert passed == [(CHECK_ARRAY, [])], passed[:5]


@pytest.mark.parametrize(
    "name", sorted(skops_allowlist.ALLOWED["ObjectNode"]), ids=lambda n: n.rsplit(".", 1)[1]
)
def test_no_attribute_may_shadow_a_method_or_be_a_dunder(name):
    module, _, cls_name = name.rpartition(".")
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    methods = [
        key
        for key in dir(cls)
        if key.startswith("__") or callable(getattr(cls, key, None)) or _descriptor(cls, key)
    ]
    assert "__sklearn_tags__" in methods or not hasattr(cls, "fit")
    for key in [*methods, "__sklearn_tags__", "__class__", "__reduce__"]:
        schema = {
            "__class__": cls_name,
            "__module__": module,
            "__loader__": "ObjectNode",
            "protocol": 2,
            "content": {
                "__class__": "dict",
                "__module__": "builtins",
                "__loader__": "DictNode",
                "content": {key: {"__class__": "str", "__module__": "builtins",
                                  "__loader__": "JsonNode", "content": "1", "is_json": True}},
                "key_types": {"__class__": "list", "__module__": "builtins",
                              "__loader__": "ListNode", "content": []},
            },
        }  # fmt: skip
        assert refusals(schema) == [f"{name}.{key}"], key


def _descriptor(cls, key) -> bool:
    import inspect

    try:
        return hasattr(type(inspect.getattr_static(cls, key)), "__get__")
    except AttributeError:
        return False


@pytest.mark.parametrize(
    ("value", "loader", "refused"),
    [
        (
            LogisticRegression().fit,
            "MethodNode",
            "sklearn.linear_model._logistic.LogisticRegression",
        ),
        (__import__("operator").methodcaller("fit"), "OperatorFuncNode", "operator.methodcaller"),
        (eval, "TypeNode", "builtins.eval"),
        (LogisticRegression, "TypeNode", "sklearn.linear_model._logistic.LogisticRegression"),
        (np.exp, "FunctionNode", "numpy.exp"),
    ],
    ids=["bound-method", "methodcaller", "builtin", "class", "ufunc"],
)
def test_callables_skops_would_build_are_refused(value, loader, refused):
    """A bound method, an operator callable, a builtin or a class as a value (a type may be
    referred to only when calling it is inert), a numpy ufunc."""
    schema = schema_of({"value": value})
    assert [n["__loader__"] for n in nodes(schema["content"]["value"], loader)]
    assert refusals(schema) == [refused]


def test_an_object_id_cannot_turn_a_plain_dict_into_an_objects_state():
    """skops builds the second node with an id from the first: a dict checked as a plain value
    (here under an attribute of another object) may not become an estimator's state."""
    model = LogisticRegression().fit(np.ones((4, 2)), [0, 1, 0, 1])
    schema = schema_of([model, {"predict": 1}])
    assert refusals(schema) == []
    state = schema["content"][0]["content"]
    plain = schema["content"][1]
    plain["__id__"] = state["__id__"]
    assert refusals(schema) == [
        f"builtins.dict (object id {state['__id__']} also names another kind of object)"
    ]


def test_the_check_array_partial_is_accepted_only_where_and_as_histgradientboosting_writes_it():
    assert refusals(schema_of(hgb_transformer())) == []
    other_argument = FunctionTransformer(partial(check_array, estimator="x"))
    assert "functools.partial" in refusals(schema_of(other_argument.fit(np.ones((3, 2)))))
    inverse = FunctionTransformer(inverse_func=partial(check_array, dtype=[np.float64])).fit(
        np.ones((3, 2))
    )
    assert set(refusals(schema_of(inverse))) == {"functools.partial", CHECK_ARRAY}
    outside = schema_of([partial(check_array, dtype=[np.float64])])
    assert set(refusals(outside)) == {"functools.partial", CHECK_ARRAY}
    assert FUNCTION_TRANSFORMER in skops_allowlist.ALLOWED["ObjectNode"]


def _frame():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=80),
            "b": rng.uniform(size=80),
            "color": pd.Categorical(rng.choice(["r", "g", "b"], 80)),
        }
    )
    return frame, (frame["a"] > 0).astype(int).to_numpy()


def _user_models():
    scaled = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    encode = ColumnTransformer(
        [("num", scaled, ["a", "b"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])]
    )
    numeric = ["a", "b"]
    return {
        "pipeline": (Pipeline([("prep", encode), ("model", LogisticRegression())]), None),
        "hist-gb-categorical": (
            HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype"),
            None,
        ),
        "gradient-boosting": (GradientBoostingClassifier(n_estimators=5), numeric),
        "forest": (RandomForestRegressor(n_estimators=3), numeric),
        "svc": (SVC(probability=True), numeric),
        "knn": (KNeighborsClassifier(), numeric),
        "naive-bayes": (GaussianNB(), numeric),
        "sgd": (SGDClassifier(), numeric),
    }


@pytest.mark.parametrize("kind", list(_user_models()))
def test_common_estimators_load_and_predict_as_saved(tmp_path, kind):
    model, columns = _user_models()[kind]
    frame, y = _frame()
    x = frame[columns] if columns else frame
    model.fit(x, y)
    sio.dump(model, tmp_path / "model.skops")
    assert artifacts.untrusted_types(tmp_path / "model.skops") == []
    loaded = artifacts.load_checked(tmp_path / "model.skops")
    assert np.array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_lightgbm_and_xgboost_wrappers_load(tmp_path, family):
    import lightgbm
    import xgboost

    frame, y = _frame()
    x = frame[["a", "b"]]
    if family == "lightgbm":
        model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1)
    else:
        model = xgboost.XGBClassifier(n_estimators=5)
    model.fit(x, y)
    sio.dump(model, tmp_path / "model.skops")
    loaded = artifacts.load_checked(tmp_path / "model.skops")
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))
