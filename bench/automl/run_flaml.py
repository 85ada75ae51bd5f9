"""FLAML (installed as flaml[automl]: lgbm, xgboost, xgb_limitdepth, rf, extra_tree, lrl1 as
it chooses): AutoML.fit(time_budget=budget, n_jobs=1, metric = the primary metric).
Runs under bench/automl/.venvs/flaml."""

from __future__ import annotations

from importlib.metadata import version

from common import SEED, THREADS, align_proba, run, with_categories
from flaml import AutoML

METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}


def fit_predict(meta, train, x_test, budget, workdir):
    target, cats, task = meta["target"], meta["categorical"], meta["task"]
    x = with_categories(train.drop(columns=[target]), train, cats)
    x_test = with_categories(x_test, train, cats)
    automl = AutoML()
    automl.fit(x, train[target], task="regression" if task == "regression" else "classification",
               metric=METRIC[task], time_budget=budget, n_jobs=THREADS, seed=SEED, verbose=0,
               log_file_name=str(workdir / "flaml.log"))  # fmt: skip
    info = {"best_estimator": automl.best_estimator}
    if task == "regression":
        return automl.predict(x_test), info
    proba = automl.predict_proba(x_test)
    return align_proba(proba, list(automl.classes_), meta["classes"]), info


if __name__ == "__main__":
    run("flaml", fit_predict, {"flaml": version("flaml"), "lightgbm": version("lightgbm"),
                               "xgboost": version("xgboost")})  # fmt: skip
