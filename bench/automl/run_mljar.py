"""mljar-supervised: AutoML(mode="Perform", total_time_limit=budget, n_jobs=1,
eval_metric = the primary metric, explain_level=0). Runs under bench/automl/.venvs/mljar.

"Perform" is mljar's mode for production-quality models in bounded time; its default mode
("Explain") spends the budget on explanations, and "Compete" plans for hours."""

from __future__ import annotations

import shutil
from importlib.metadata import version

from common import SEED, THREADS, align_proba, run
from supervised.automl import AutoML

METRIC = {"binary": "auc", "multiclass": "logloss", "regression": "rmse"}


def fit_predict(meta, train, x_test, budget, workdir):
    target, task = meta["target"], meta["task"]
    path = workdir / f"{meta['name']}-{budget:g}"
    shutil.rmtree(path, ignore_errors=True)
    automl = AutoML(results_path=str(path), mode="Perform", total_time_limit=int(budget),
                    eval_metric=METRIC[task], n_jobs=THREADS, random_state=SEED,
                    explain_level=0, verbose=0,
                    ml_task={"binary": "binary_classification",
                             "multiclass": "multiclass_classification",
                             "regression": "regression"}[task])  # fmt: skip
    y = train[target]
    if task != "regression":
        y = y.astype(str)  # mljar names probability columns after string labels
    automl.fit(train.drop(columns=[target]), y)
    if task == "regression":
        return automl.predict(x_test), {}
    proba = automl.predict_proba(x_test)
    classes = [str(c) for c in sorted(y.unique())]
    model_classes = getattr(automl, "_classes", None) or classes
    return align_proba(proba, list(model_classes), meta["classes"]), {}


if __name__ == "__main__":
    run("mljar", fit_predict, {"mljar-supervised": version("mljar-supervised")})
