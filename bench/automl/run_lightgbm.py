"""Default LightGBM (no tuning, no budget): LGBMClassifier/LGBMRegressor, string columns as
pandas `category`, n_jobs=1. Runs under bench/automl/.venvs/lightgbm."""

from __future__ import annotations

from importlib.metadata import version

import lightgbm as lgb
from common import SEED, THREADS, align_proba, run, with_categories


def fit_predict(meta, train, x_test, budget, workdir):
    target, cats = meta["target"], meta["categorical"]
    x = with_categories(train.drop(columns=[target]), train, cats)
    x_test = with_categories(x_test, train, cats)
    if meta["task"] == "regression":
        model = lgb.LGBMRegressor(n_jobs=THREADS, random_state=SEED, verbose=-1)
        model.fit(x, train[target])
        return model.predict(x_test), {}
    model = lgb.LGBMClassifier(n_jobs=THREADS, random_state=SEED, verbose=-1)
    model.fit(x, train[target])
    return align_proba(model.predict_proba(x_test), list(model.classes_), meta["classes"]), {}


if __name__ == "__main__":
    run("lightgbm", fit_predict, {"lightgbm": version("lightgbm")})
