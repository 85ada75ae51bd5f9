"""Metrics of the AutoML engine: names, directions, defaults and the holdout report.

Every metric takes the encoded truth (class indices 0..K-1, or numbers) and the prediction as the
engine keeps it: a probability matrix (n, K) for classification, a vector for regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

Task = str  # "binary" | "multiclass" | "regression"

_EPS = 1e-15


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    score: Callable[[np.ndarray, np.ndarray], float]

    def loss(self, y: np.ndarray, pred: np.ndarray) -> float:
        """The score turned into something to minimise."""
        value = self.score(y, pred)
        return -value if self.greater_is_better else value

    def to_score(self, loss: float) -> float:
        return -loss if self.greater_is_better else loss


def _labels(proba: np.ndarray) -> np.ndarray:
    return np.argmax(proba, axis=1)


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log probability of the true class, clipped at 1e-15 like scikit-learn's."""
    clipped = np.clip(proba[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.mean(np.log(clipped)))


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return 0.5
    return float(skm.roc_auc_score(y, proba[:, 1]))


def _roc_auc_ovr(y: np.ndarray, proba: np.ndarray) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return 0.5
    # One-vs-rest macro over the classes present in y (a fold may miss a rare class).
    scores = [skm.roc_auc_score(y == k, proba[:, k]) for k in present]
    return float(np.mean(scores))


def _accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(_labels(proba) == y))


def _balanced_accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.balanced_accuracy_score(y, _labels(proba)))


def _f1(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.f1_score(y, _labels(proba), zero_division=0))


def _f1_macro(y: np.ndarray, proba: np.ndarray) -> float:
    return float(skm.f1_score(y, _labels(proba), average="macro", zero_division=0))


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


def _mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(y - pred)))


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(skm.r2_score(y, pred))


METRICS: dict[Task, dict[str, Metric]] = {
    "binary": {
        "roc_auc": Metric("roc_auc", True, _roc_auc),
        "log_loss": Metric("log_loss", False, log_loss),
        "accuracy": Metric("accuracy", True, _accuracy),
        "balanced_accuracy": Metric("balanced_accuracy", True, _balanced_accuracy),
        "f1": Metric("f1", True, _f1),
    },
    "multiclass": {
        "log_loss": Metric("log_loss", False, log_loss),
        "accuracy": Metric("accuracy", True, _accuracy),
        "balanced_accuracy": Metric("balanced_accuracy", True, _balanced_accuracy),
        "f1_macro": Metric("f1_macro", True, _f1_macro),
        "roc_auc_ovr": Metric("roc_auc_ovr", True, _roc_auc_ovr),
    },
    "regression": {
        "rmse": Metric("rmse", False, _rmse),
        "mae": Metric("mae", False, _mae),
        "r2": Metric("r2", True, _r2),
    },
}

DEFAULT_METRIC: dict[Task, str] = {
    "binary": "roc_auc",
    "multiclass": "log_loss",
    "regression": "rmse",
}


def get_metric(task: Task, name: str | None) -> Metric:
    """The metric called `name` for `task` (its default when None); ValueError when unknown."""
    name = name or DEFAULT_METRIC[task]
    known = METRICS[task]
    if name not in known:
        raise ValueError(
            f"metric {name!r} does not apply to a {task} task; use one of {', '.join(known)}"
        )
    return known[name]


def holdout_report(task: Task, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The fixed set of metrics shown for the holdout, whatever metric was optimised."""
    if task == "regression":
        return {"rmse": _rmse(y, pred), "mae": _mae(y, pred), "r2": _r2(y, pred)}
    auc = _roc_auc(y, pred) if task == "binary" else _roc_auc_ovr(y, pred)
    return {
        "accuracy": _accuracy(y, pred),
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "log_loss": log_loss(y, pred),
        "roc_auc": auc,
        "f1_macro": _f1_macro(y, pred),
    }
