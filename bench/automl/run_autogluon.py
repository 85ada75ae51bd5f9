"""AutoGluon-Tabular with its defaults (presets="medium_quality"): TabularPredictor.fit(
time_limit=budget, num_cpus=1, num_gpus=0), eval_metric = the primary metric. Installed with
the lightgbm/catboost/xgboost extras only, so its torch/fastai neural networks are skipped.
Runs under bench/automl/.venvs/autogluon."""

from __future__ import annotations

import shutil
from importlib.metadata import version

from autogluon.tabular import TabularPredictor
from common import align_proba, run

METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "root_mean_squared_error"}


def fit_predict(meta, train, x_test, budget, workdir):
    target, task = meta["target"], meta["task"]
    path = workdir / f"{meta['name']}-{budget:g}"
    shutil.rmtree(path, ignore_errors=True)
    predictor = TabularPredictor(label=target, problem_type=task, eval_metric=METRIC[task],
                                 path=str(path), verbosity=0)  # fmt: skip
    predictor.fit(train, time_limit=budget, num_cpus=1, num_gpus=0)
    info = {"best_model": predictor.model_best}
    if task == "regression":
        return predictor.predict(x_test).to_numpy(), info
    proba = predictor.predict_proba(x_test)
    return align_proba(proba.to_numpy(), list(proba.columns), meta["classes"]), info


if __name__ == "__main__":
    run("autogluon", fit_predict, {"autogluon.tabular": version("autogluon.tabular")})
