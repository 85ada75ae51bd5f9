"""Quick comparison: Atelier's AutoML engine against FLAML at the same budget and holdout split.

    .venv/bin/python bench/automl/quick_flaml.py [budget_seconds]

Both see the same 80 % of each set (the engine's own seeded, stratified split) and are scored
on the same 20 % holdout. One thread each (the engine's default; FLAML with n_jobs=1).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl
from flaml import AutoML
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.model_selection import train_test_split

from atelier.automl.engine import TrainConfig, train
from atelier.automl.metrics import get_metric, holdout_report

SEED = 0


def _synthetic_categorical(n: int = 3000) -> pl.DataFrame:
    rng = np.random.default_rng(SEED)
    city = rng.choice([f"city_{i}" for i in range(30)], n)
    device = rng.choice(["ios", "android", "web"], n, p=[0.3, 0.5, 0.2])
    effect = {f"city_{i}": rng.normal() for i in range(30)}
    amount = rng.lognormal(3, 1, n)
    logit = np.array([effect[c] for c in city]) + (device == "ios") * 0.8 + np.log(amount) - 3
    bought = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pl.DataFrame({"city": city, "device": device, "amount": amount, "bought": bought})


def _sets() -> list[tuple[str, pl.DataFrame, str, str]]:
    def frame(loader) -> pl.DataFrame:
        return pl.from_pandas(loader(as_frame=True).frame)

    return [
        ("breast_cancer", frame(load_breast_cancer), "target", "binary"),
        ("wine", frame(load_wine), "target", "multiclass"),
        ("diabetes", frame(load_diabetes), "target", "regression"),
        ("synthetic_cat", _synthetic_categorical(), "bought", "binary"),
    ]


def _flaml(df: pl.DataFrame, target: str, task: str, budget: float) -> tuple[dict, float]:
    y = df[target].to_numpy()
    stratify = None if task == "regression" else y
    tr, te = train_test_split(np.arange(df.height), test_size=0.2, random_state=SEED,
                              stratify=stratify)  # fmt: skip
    tr, te = np.sort(tr), np.sort(te)
    x = df.drop(target).to_pandas()
    for name in x.columns:
        if x[name].dtype == object:
            x[name] = x[name].astype("category")
    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[task]
    automl = AutoML()
    started = time.monotonic()
    automl.fit(x.iloc[tr], y[tr], task="regression" if task == "regression" else "classification",
               metric=metric, time_budget=budget, n_jobs=1, seed=SEED, verbose=0)  # fmt: skip
    if task == "regression":
        pred = automl.predict(x.iloc[te])
        truth = y[te].astype(float)
    else:
        classes = sorted(np.unique(y).tolist())
        pred = automl.predict_proba(x.iloc[te])
        order = [list(automl.classes_).index(c) for c in classes]
        pred = pred[:, order]
        truth = np.searchsorted(classes, y[te])
    report = holdout_report(task, truth, pred)
    return report, time.monotonic() - started


def main(budget: float) -> None:
    rows = []
    for name, df, target, task in _sets():
        result = train(df, TrainConfig(target=target, budget_seconds=budget, seed=SEED))
        flaml_report, flaml_wall = _flaml(df, target, task, budget)
        metric = get_metric(task, None)
        key = "roc_auc" if metric.name == "roc_auc" else metric.name
        extra = "r2" if task == "regression" else "accuracy"
        rows.append((name, key, result.holdout_metrics[key], flaml_report[key],
                     extra, result.holdout_metrics[extra], flaml_report[extra],
                     result.elapsed_seconds, flaml_wall))  # fmt: skip
    print(f"budget {budget:.0f} s, 20 % holdout, seed {SEED}, one thread each")
    header = (
        "set",
        "metric",
        "atelier",
        "flaml",
        "metric2",
        "atelier",
        "flaml",
        "wall_a",
        "wall_f",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r[0], r[1], f"{r[2]:.4f}", f"{r[3]:.4f}", r[4], f"{r[5]:.4f}", f"{r[6]:.4f}",
                 f"{r[7]:.1f}", f"{r[8]:.1f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
