"""What a training run tells people: the leaderboard rows and the feature importances."""

from __future__ import annotations

import time

import numpy as np

from atelier.automl.metrics import Metric
from atelier.automl.model import AutomlModel
from atelier.automl.search import Trial


def leaderboard(
    trials: list[Trial],
    metric: Metric,
    weights: dict[int, float],
    *,
    ensemble_loss: float | None = None,
    now: float | None = None,
) -> list[dict]:
    """JSON-able rows, best first; the ensemble is one row among them when given."""
    rows = [
        {
            "id": t.id,
            "learner": t.learner,
            "params": t.params,
            "cv_score": t.score,
            "fit_seconds": round(t.fit_seconds, 3),
            "finished_at_seconds": round(t.finished_at, 3),
            "in_ensemble": weights.get(t.id, 0),
            "_loss": t.loss,
        }
        for t in trials
    ]
    if ensemble_loss is not None:
        members = {str(k): v for k, v in weights.items()}
        chosen = [t for t in trials if t.id in weights]
        rows.append(
            {
                "id": "ensemble",
                "learner": "ensemble",
                "params": {"members": members},
                "cv_score": metric.to_score(ensemble_loss),
                "fit_seconds": round(sum(t.fit_seconds for t in chosen), 3),
                "finished_at_seconds": round(now or 0.0, 3),
                "in_ensemble": 0,
                "_loss": ensemble_loss - 1e-12,  # a tie goes to the ensemble, which is the model
            }
        )
    rows.sort(key=lambda r: (r["_loss"], str(r["id"])))
    for rank, row in enumerate(rows, 1):
        del row["_loss"]
        row["rank"] = rank
    return [{"rank": r.pop("rank"), **r} for r in rows]


def _gain(model: AutomlModel) -> dict[str, float]:
    names = model.preparer.feature_names_
    total = np.zeros(len(names))
    for est, _, weight in model.members:
        if hasattr(est, "booster_"):
            raw = est.booster_.feature_importance(importance_type="gain")
        elif hasattr(est, "get_booster"):
            score = est.get_booster().get_score(importance_type="total_gain")
            raw = np.array([score.get(f"f{i}", 0.0) for i in range(len(names))])
        elif hasattr(est, "feature_importances_"):
            raw = est.feature_importances_
        else:
            continue
        raw = np.asarray(raw, dtype=np.float64)
        if raw.sum() > 0:
            total += weight * raw / raw.sum()
    if total.sum() == 0:
        return {}
    total /= total.sum()
    return {name: round(float(v), 6) for name, v in zip(names, total, strict=True)}


def _permutation(
    model: AutomlModel, x: np.ndarray, y: np.ndarray, metric: Metric, seed: int, deadline: float
) -> dict[str, float]:
    """Loss increase when a raw column (all its derived features) is shuffled on the holdout."""
    if len(y) == 0:
        return {}
    rng = np.random.default_rng(seed)
    base = metric.loss(y, model._predict_matrix(x))
    sources = np.asarray(model.preparer.source_columns_)
    out: dict[str, float] = {}
    for name in dict.fromkeys(sources.tolist()):
        start = time.monotonic()
        shuffled = x.copy()
        cols = np.flatnonzero(sources == name)
        shuffled[:, cols] = x[rng.permutation(len(x))][:, cols]
        out[name] = round(metric.loss(y, model._predict_matrix(shuffled)) - base, 6)
        if time.monotonic() + (time.monotonic() - start) > deadline:
            break  # keep the budget: the columns not reached are left out
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def feature_importance(
    model: AutomlModel, x: np.ndarray, y: np.ndarray, metric: Metric, *, seed: int, deadline: float
) -> dict[str, dict[str, float]]:
    permutation = {}
    if time.monotonic() < deadline:
        permutation = _permutation(model, x, y, metric, seed, deadline)
    return {"gain": _gain(model), "permutation": permutation}
