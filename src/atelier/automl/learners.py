"""Model families: how each is built, fitted on a fold and asked for predictions.

Each family has a search space (FLAML `tune` domains), a low-cost starting point for the cost-aware
search, and default configurations that go into the starting portfolio. Gradient-boosted families
fit with early stopping on the fold's validation rows (as AutoGluon's bagging does) and stop at the
search deadline, so a slow configuration cannot overrun the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import xgboost as xgb
from flaml import tune
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

MAX_ROUNDS = 3000
EARLY_STOP = 50
FOREST_TREES = 200
N_JOBS = 1  # one thread per model: the worker pool owns the cores (see RECIPES.md)


@dataclass(frozen=True)
class Family:
    name: str
    space: dict
    low_cost: dict


FAMILIES: dict[str, Family] = {
    "linear": Family("linear", {"C": tune.loguniform(1e-3, 1e2)}, {}),
    "lightgbm": Family(
        "lightgbm",
        {
            "num_leaves": tune.lograndint(4, 256),
            "min_child_samples": tune.lograndint(2, 128),
            "learning_rate": tune.loguniform(0.01, 0.3),
            "colsample_bytree": tune.uniform(0.3, 1.0),
            "subsample": tune.uniform(0.5, 1.0),
            "reg_lambda": tune.loguniform(1e-3, 30.0),
        },
        {"num_leaves": 4},
    ),
    "xgboost": Family(
        "xgboost",
        {
            "max_depth": tune.randint(2, 11),
            "min_child_weight": tune.loguniform(0.5, 32.0),
            "learning_rate": tune.loguniform(0.01, 0.3),
            "colsample_bytree": tune.uniform(0.3, 1.0),
            "subsample": tune.uniform(0.5, 1.0),
            "reg_lambda": tune.loguniform(1e-2, 30.0),
        },
        {"max_depth": 2},
    ),
    "hist_gb": Family(
        "hist_gb",
        {
            "max_leaf_nodes": tune.lograndint(4, 128),
            "min_samples_leaf": tune.lograndint(2, 100),
            "learning_rate": tune.loguniform(0.02, 0.3),
            "l2_regularization": tune.loguniform(1e-3, 10.0),
        },
        {"max_leaf_nodes": 4},
    ),
    "extra_trees": Family(
        "extra_trees",
        {"max_features": tune.uniform(0.05, 1.0), "min_samples_leaf": tune.lograndint(1, 32)},
        {},
    ),
    "random_forest": Family(
        "random_forest",
        {"max_features": tune.uniform(0.05, 1.0), "min_samples_leaf": tune.lograndint(1, 32)},
        {},
    ),
}


def portfolio(task: str, n_features: int) -> list[tuple[str, dict]]:
    """Strong default configurations, cheapest first (after AutoGluon's and FLAML's defaults)."""
    sqrt_share = round(max(1.0, math.sqrt(n_features)) / max(n_features, 1), 3)
    forest_share = sqrt_share if task != "regression" else 1.0
    return [
        ("linear", {"C": 1.0}),
        ("lightgbm", {"num_leaves": 31, "min_child_samples": 20, "learning_rate": 0.05,
                      "colsample_bytree": 0.9, "subsample": 1.0, "reg_lambda": 1e-3}),
        ("lightgbm", {"num_leaves": 8, "min_child_samples": 5, "learning_rate": 0.05,
                      "colsample_bytree": 0.7, "subsample": 0.8, "reg_lambda": 1.0}),
        ("xgboost", {"max_depth": 6, "min_child_weight": 1.0, "learning_rate": 0.05,
                     "colsample_bytree": 0.8, "subsample": 0.8, "reg_lambda": 1.0}),
        ("extra_trees", {"max_features": forest_share, "min_samples_leaf": 1}),
        ("lightgbm", {"num_leaves": 128, "min_child_samples": 3, "learning_rate": 0.03,
                      "colsample_bytree": 0.9, "subsample": 1.0, "reg_lambda": 1e-3}),
        ("random_forest", {"max_features": forest_share, "min_samples_leaf": 1}),
        ("hist_gb", {"max_leaf_nodes": 31, "min_samples_leaf": 20, "learning_rate": 0.1,
                     "l2_regularization": 1e-3}),
        ("xgboost", {"max_depth": 8, "min_child_weight": 2.0, "learning_rate": 0.03,
                     "colsample_bytree": 0.6, "subsample": 0.7, "reg_lambda": 3.0}),
    ]  # fmt: skip


class _LgbDeadline:
    """LightGBM callback: stop boosting once the search deadline has passed."""

    order = 40

    def __init__(self, deadline: float):
        self.deadline = deadline

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if time.monotonic() > self.deadline:
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)


class _XgbDeadline(xgb.callback.TrainingCallback):
    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def after_iteration(self, model, epoch, evals_log) -> bool:
        return time.monotonic() > self.deadline


def _linear(params: dict, task: str, cat_mask: np.ndarray, seed: int) -> Pipeline:
    numeric = np.flatnonzero(~cat_mask).tolist()
    categorical = np.flatnonzero(cat_mask).tolist()
    columns = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                                 keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=-1.0)),
                        ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                                 min_frequency=5, sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ]
    )  # fmt: skip
    if task == "regression":
        model = Ridge(alpha=1.0 / params["C"])
    else:
        model = LogisticRegression(C=params["C"], max_iter=500, random_state=seed)
    return Pipeline([("columns", columns), ("model", model)])


def build(family: str, params: dict, task: str, cat_mask: np.ndarray, seed: int):
    """A fresh, unfitted scikit-learn compatible estimator."""
    classify = task != "regression"
    if family == "linear":
        return _linear(params, task, cat_mask, seed)
    if family == "lightgbm":
        cls = lgb.LGBMClassifier if classify else lgb.LGBMRegressor
        return cls(n_estimators=MAX_ROUNDS, subsample_freq=1, n_jobs=N_JOBS, random_state=seed,
                   verbose=-1, min_data_per_group=10, cat_smooth=10.0, **params)  # fmt: skip
    if family == "xgboost":
        cls = xgb.XGBClassifier if classify else xgb.XGBRegressor
        feature_types = ["c" if c else "q" for c in cat_mask]
        return cls(n_estimators=MAX_ROUNDS, tree_method="hist", enable_categorical=True,
                   feature_types=feature_types, max_cat_to_onehot=4, n_jobs=N_JOBS,
                   random_state=seed, early_stopping_rounds=EARLY_STOP, **params)  # fmt: skip
    if family == "hist_gb":
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return cls(max_iter=1000, early_stopping=True, n_iter_no_change=20,
                   categorical_features=cat_mask if cat_mask.any() else None,
                   random_state=seed, **params)  # fmt: skip
    if family in ("extra_trees", "random_forest"):
        if family == "extra_trees":
            cls = ExtraTreesClassifier if classify else ExtraTreesRegressor
        else:
            cls = RandomForestClassifier if classify else RandomForestRegressor
        return cls(n_estimators=FOREST_TREES, n_jobs=N_JOBS, random_state=seed, **params)
    raise ValueError(f"unknown learner family {family!r}")


def fit_fold(family, est, x_tr, y_tr, x_va, y_va, cat_mask, deadline):
    """Fit one fold model; boosted families stop early on the fold's validation rows."""
    if family == "lightgbm":
        cats = np.flatnonzero(cat_mask).tolist() or "auto"
        stop = [lgb.early_stopping(EARLY_STOP, verbose=False), _LgbDeadline(deadline)]
        est.fit(x_tr, y_tr, eval_X=x_va, eval_y=y_va, categorical_feature=cats, callbacks=stop)
    elif family == "xgboost":
        est.set_params(callbacks=[_XgbDeadline(deadline)])
        est.fit(x_tr, y_tr, eval_set=[(x_va, y_va)], verbose=False)
        est.set_params(callbacks=None)  # keep no custom object inside the saved model
    else:
        est.fit(x_tr, y_tr)
    return est


def work_units(family: str, est, n_rows: int) -> float:
    """A deterministic stand-in for a fold's cost (trees x size), used by the searcher."""
    if family == "lightgbm":
        return est.booster_.num_trees() * est.get_params()["num_leaves"] * n_rows / 1e6
    if family == "xgboost":
        rounds = est.get_booster().num_boosted_rounds()
        return rounds * 2 ** est.get_params()["max_depth"] * n_rows / 1e6
    if family == "hist_gb":
        return est.n_iter_ * est.get_params()["max_leaf_nodes"] * n_rows / 1e6
    if family in ("extra_trees", "random_forest"):
        return FOREST_TREES * n_rows / 1e4
    return n_rows / 1e4


def predict_fold(est, x: np.ndarray, task: str, class_index: np.ndarray | None, n_classes: int):
    """Probabilities over all classes (columns in class order), or regression values."""
    if task == "regression":
        return np.asarray(est.predict(x), dtype=np.float64)
    proba = np.asarray(est.predict_proba(x), dtype=np.float64)
    if class_index is None or len(class_index) == n_classes:
        return proba
    full = np.zeros((len(x), n_classes))
    full[:, class_index] = proba
    return full
