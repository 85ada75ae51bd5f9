"""Atelier's AutoML: atelier.automl.engine.train(table, TrainConfig(target, task,
budget_seconds=budget, seed=0)) with the engine's defaults (one thread per model, its own
20 % internal holdout), then model.predict / predict_proba on the test set.
Runs under Atelier's own environment, /work/main/.venv."""

from __future__ import annotations

from importlib.metadata import version

import polars as pl
from common import SEED, align_proba, run

from atelier.automl.engine import TrainConfig, train


def fit_predict(meta, train_df, x_test, budget, workdir):
    target, task = meta["target"], meta["task"]
    table = pl.from_pandas(train_df)
    result = train(table, TrainConfig(target=target, task=task, budget_seconds=budget, seed=SEED))
    info = {"trials": len(result.leaderboard), "engine_elapsed": round(result.elapsed_seconds, 3),
            "ensemble_members": len(result.ensemble)}  # fmt: skip
    test = pl.from_pandas(x_test)
    if task == "regression":
        return result.model.predict(test), info
    proba = result.model.predict_proba(test)
    return align_proba(proba, list(result.classes), meta["classes"]), info


if __name__ == "__main__":
    run("atelier", fit_predict, {"atelier": version("atelier"), "lightgbm": version("lightgbm"),
                                 "flaml": version("flaml")})  # fmt: skip
