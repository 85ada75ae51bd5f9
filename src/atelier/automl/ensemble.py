"""Greedy ensemble selection with replacement (Caruana et al., 2004) on out-of-fold predictions."""

from __future__ import annotations

import time

import numpy as np

from atelier.automl.metrics import Metric

MAX_CANDIDATES = 20
ITERATIONS = 40
MAX_ROWS = 20_000


def select(
    oofs: list[np.ndarray], y: np.ndarray, metric: Metric, *, seed: int, deadline: float
) -> tuple[dict[int, float], float]:
    """Weights by candidate index (summing to 1) and the ensemble's out-of-fold loss.

    Candidates come best first; the first iteration picks the best single model, so the result
    is never worse on these predictions than the best trial.
    """
    if len(y) > MAX_ROWS:  # selection is many metric evaluations: a seeded sample is enough
        rows = np.sort(np.random.default_rng(seed).choice(len(y), MAX_ROWS, replace=False))
        oofs, y = [o[rows] for o in oofs], y[rows]
    oofs = oofs[:MAX_CANDIDATES]
    counts = np.zeros(len(oofs), dtype=np.int64)
    total = np.zeros_like(oofs[0])
    best_loss, best_counts = np.inf, counts.copy()
    for it in range(1, ITERATIONS + 1):
        losses = [metric.loss(y, (total + o) / it) for o in oofs]
        pick = int(np.argmin(losses))  # ties go to the better-ranked candidate
        counts[pick] += 1
        total = total + oofs[pick]
        if losses[pick] < best_loss - 1e-12:
            best_loss, best_counts = losses[pick], counts.copy()
        if time.monotonic() > deadline:
            break
    weights = best_counts / best_counts.sum()
    return {i: float(w) for i, w in enumerate(weights) if w > 0}, float(best_loss)
