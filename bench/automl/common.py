"""Shared by every runner (each runs under its own system's interpreter): load a set, score the
test predictions the same way for everyone, print the one JSON result line.

Needs only numpy, pandas, pyarrow and scikit-learn, which every benchmark environment has.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

SEED = 0
THREADS = 1  # per model, for every system; run.py also sets OMP_NUM_THREADS=1 and friends


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, help="bench/automl/data/<name>")
    parser.add_argument("--budget", type=float, required=True, help="seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch space for models")
    return parser.parse_args()


def load(data: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    meta = json.loads((data / "meta.json").read_text())
    return meta, pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "test.parquet")


def with_categories(frame: pd.DataFrame, train: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """String columns as pandas `category`, with the categories seen in training."""
    frame = frame.copy()
    for col in columns:
        cats = sorted(train[col].dropna().astype(str).unique().tolist())
        frame[col] = pd.Categorical(frame[col].astype(object), categories=cats)
    return frame


def align_proba(proba: np.ndarray, model_classes: list, classes: list) -> np.ndarray:
    """Reorder probability columns from the model's class order to meta's sorted class order."""
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 1:  # a binary classifier's positive-class column
        proba = np.column_stack([1 - proba, proba])
    index = {str(c): i for i, c in enumerate(model_classes)}
    out = np.column_stack([proba[:, index[str(c)]] for c in classes])
    return out / out.sum(axis=1, keepdims=True)


def score(meta: dict, y_true: pd.Series, pred: np.ndarray) -> dict[str, float]:
    if meta["task"] == "regression":
        y = y_true.to_numpy(dtype=float)
        pred = np.asarray(pred, dtype=float)
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
                "r2": float(skm.r2_score(y, pred))}  # fmt: skip
    classes = meta["classes"]
    codes = {str(c): i for i, c in enumerate(classes)}
    y = np.array([codes[str(v)] for v in y_true])
    labels = np.argmax(pred, axis=1)
    out = {
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, labels)),
        "accuracy": float(skm.accuracy_score(y, labels)),
        "log_loss": float(skm.log_loss(y, np.clip(pred, 1e-15, 1), labels=range(len(classes)))),
    }
    if meta["task"] == "binary":
        out["roc_auc"] = float(skm.roc_auc_score(y, pred[:, 1]))
    return out


def run(system: str, fit_predict: Callable[[dict, pd.DataFrame, pd.DataFrame, float, Path], Any],
        versions: dict[str, str]) -> None:  # fmt: skip
    """fit_predict(meta, train, test_features, budget, workdir) -> (predictions, extra info).

    Predictions: class probabilities in meta's class order, or regression values. The wall
    time covers fit + predict only (not the interpreter start or the imports)."""
    args = parse_args()
    result: dict[str, Any] = {"system": system, "set": args.data.name, "budget": args.budget,
                              "versions": versions, "threads_per_model": THREADS,
                              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip
    try:
        meta, train, test = load(args.data)
        workdir = args.workdir or Path(tempfile.gettempdir()) / f"bench-{system}"
        workdir.mkdir(parents=True, exist_ok=True)
        x_test = test.drop(columns=[meta["target"]])
        started = time.monotonic()
        pred, info = fit_predict(meta, train, x_test, args.budget, workdir)
        result["wall_seconds"] = round(time.monotonic() - started, 3)
        result["metrics"] = score(meta, test[meta["target"]], pred)
        result["info"] = info
        result["error"] = None
    except Exception as exc:  # a failure is a result too
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
    sys.stdout.flush()
    print(json.dumps(result), flush=True)
