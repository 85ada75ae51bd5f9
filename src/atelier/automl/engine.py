"""The AutoML entry point: `train(table, config)` from a raw table to a fitted, evaluated model.

Pure library: no database, no HTTP. Raises ValueError for a bad request (target, metric, task,
config) and NoModelTrained when the budget or the caller stopped it before any trial finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from atelier.automl import calibration
from atelier.automl import ensemble as ensemble_selection
from atelier.automl.learners import N_JOBS
from atelier.automl.metrics import Metric, get_metric, holdout_report, log_loss
from atelier.automl.model import AutomlModel, missing_draws
from atelier.automl.prepare import (
    ColumnPreparer,
    detect_task,
    encode_target,
    plan_columns,
    to_polars,
)
from atelier.automl.search import Clock, SearchData, Stopped, Trial, run_trial, search
from atelier.automl.summaries import feature_importance, leaderboard

SEARCH_SHARE = 0.85  # of the budget; the rest covers ensembling, the holdout and a margin
REFIT_SHARE = 0.15  # at most this much of the budget is kept from the search for the refit
REFIT_END = 0.92  # of the budget: the refit ends by then (feature importance takes the rest)
MIN_ROWS = 20


class NoModelTrained(RuntimeError):
    """The budget or should_stop() ended training before a single trial finished."""


@dataclass(frozen=True)
class TrainConfig:
    target: str
    task: Literal["binary", "multiclass", "regression"] | None = None  # None: detected
    metric: str | None = None  # None: the task's default
    budget_seconds: float = 60.0
    seed: int = 0
    exclude: tuple[str, ...] = ()  # columns the user leaves out
    holdout_fraction: float = 0.2  # never seen by the search; gives the honest test metrics
    # After the holdout metrics, refit the ensemble's members on every row (holdout included)
    # while the budget allows; the holdout metrics stay those of the model before the refit.
    refit: bool = True
    max_trials: int | None = None  # a cap on the trial sequence (None: the budget decides)


@dataclass(frozen=True)
class Progress:
    trials: int
    best_score: float | None  # in the metric's own direction
    elapsed_seconds: float
    budget_seconds: float
    message: str
    leaderboard: list[dict]


@dataclass
class TrainResult:
    task: str
    metric: str
    classes: list | None
    model: AutomlModel
    leaderboard: list[dict]
    ensemble: dict[int, float]
    cv_score: float
    holdout_metrics: dict[str, float]
    holdout_predictions: dict[str, Any]
    score_over_time: list[tuple[float, float]]
    dropped_columns: list[dict]
    feature_importance: dict[str, dict[str, float]]
    preprocessing: dict[str, Any]
    elapsed_seconds: float
    library_versions: dict[str, str] = field(default_factory=dict)
    # Multiclass: the temperature and the log loss before and after it, out of fold and on the
    # holdout (see calibration.py); empty for binary and regression.
    calibration: dict[str, float] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    names = ["scikit-learn", "lightgbm", "xgboost-cpu", "flaml", "numpy", "polars"]
    return {name: version(name) for name in names}


def _folds(y: np.ndarray, task: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(y)
    k = 5 if n <= 5_000 else 3 if n <= 50_000 else 1
    classify = task != "regression"
    if classify and np.bincount(y).min() < 2:
        classify = False
    idx = np.arange(n)
    if k == 1:  # big data: one seeded validation split
        tr, va = train_test_split(idx, test_size=0.2, random_state=seed,
                                  stratify=y if classify else None)  # fmt: skip
        return [(np.sort(tr), np.sort(va))]
    if classify:
        k = max(2, min(k, int(np.bincount(y)[np.bincount(y) > 0].min()), k))
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, y))
    return list(KFold(k, shuffle=True, random_state=seed).split(idx))


def _members(
    ranked: list[Trial], weights: dict[int, float], refits: dict[int, Trial]
) -> list[tuple[Any, np.ndarray | None, float]]:
    """The ensemble's fold models with their weights (a refitted trial's refit models)."""
    return [
        (est, class_index, weights[t.id] / len(models))
        for t in ranked
        if t.id in weights
        for models in [refits[t.id].models if t.id in refits else t.models]
        for est, class_index in models
    ]


def _rows_in_order(n: int, *parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One matrix from row blocks already prepared, each at its original row positions."""
    first = parts[0][1]
    out = np.empty((n, first.shape[1]), dtype=first.dtype)
    for positions, rows in parts:
        out[positions] = rows
    return out


def _refit(
    picked: list[Trial],
    weights: dict[int, float],
    x_all: np.ndarray,
    y_all: np.ndarray,
    data: SearchData,
    clock: Clock,
    rows: float,
) -> dict[int, Trial]:
    """The picked trials cross-validated again on every row, heaviest weight first, each only
    if it should end before `clock`'s end (a booster cut short by the deadline would be worse
    than the fold models it replaces). Same folds scheme, seeds and early stopping as the
    search: the same configuration, seeing a quarter more data."""
    every_row = SearchData(x_all, y_all, _folds(y_all, data.task, data.seed), data.task,
                           data.n_classes, data.metric, data.cat_mask, data.seed)  # fmt: skip
    done: dict[int, Trial] = {}
    try:
        for t in sorted(picked, key=lambda t: (-weights[t.id], t.id)):
            if (t.fit_seconds + t.predict_seconds) * rows * 1.2 > clock.remaining():
                continue
            refit = run_trial(every_row, clock, t.id, t.learner, t.params)
            if refit is not None:
                done[t.id] = refit
    except Stopped:
        pass
    return done


def _calibrate(
    oofs: list[np.ndarray],
    picks: dict[int, float],
    y: np.ndarray,
    metric: Metric,
    ensemble_loss: float,
    seed: int,
) -> tuple[float, float, dict[str, float]]:
    """The ensemble's temperature, fitted on its out-of-fold probabilities; its OOF loss in the
    optimised metric; and the OOF log loss before and after.

    T = 1 (and the loss unchanged) when scaling would not lower the log loss, or would worsen the
    optimised metric: one-vs-rest ROC AUC over several classes can move when rows renormalise.
    """
    blend = calibration.apply_temperature(sum(w * oofs[i] for i, w in picks.items()), 1.0)
    temperature = calibration.fit_temperature(blend, y, seed=seed)
    calibrated = calibration.apply_temperature(blend, temperature)
    if temperature != 1.0 and metric.loss(y, calibrated) > metric.loss(y, blend):
        temperature, calibrated = 1.0, blend
    if temperature != 1.0:
        ensemble_loss = metric.loss(y, calibrated)
    info = {"temperature": temperature, "oof_log_loss_uncalibrated": log_loss(y, blend),
            "oof_log_loss": log_loss(y, calibrated)}  # fmt: skip
    return temperature, ensemble_loss, info


def _validate(df: pl.DataFrame, config: TrainConfig) -> None:
    if config.target not in df.columns:
        raise ValueError(f"target column {config.target!r} is not in the table")
    unknown = [c for c in config.exclude if c not in df.columns]
    if unknown:
        raise ValueError(f"excluded columns not in the table: {', '.join(unknown)}")
    if config.task not in (None, "binary", "multiclass", "regression"):
        raise ValueError(f"unknown task {config.task!r}")
    if not config.budget_seconds > 0:
        raise ValueError("budget_seconds must be positive")
    if not 0.0 <= config.holdout_fraction <= 0.5:
        raise ValueError("holdout_fraction must be between 0 and 0.5")


def train(
    table: pa.Table | pl.DataFrame,
    config: TrainConfig,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Search, ensemble and evaluate within `config.budget_seconds` (plus at most 10 %)."""
    started = time.monotonic()
    # OpenMP/BLAS pools (HistGradientBoosting, numpy) would otherwise take every core and stall
    # when the machine is shared; the limit is lifted when training returns.
    with threadpool_limits(limits=N_JOBS):
        return _train(table, config, started, on_progress, should_stop)


def _train(
    table: pa.Table | pl.DataFrame,
    config: TrainConfig,
    started: float,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    budget = float(config.budget_seconds)
    df = to_polars(table)
    _validate(df, config)
    n_all = df.height
    df = df.filter(pl.col(config.target).is_not_null())
    task = config.task or detect_task(df[config.target])
    metric = get_metric(task, config.metric)
    y_all, classes = encode_target(df[config.target], task)
    if df.height < MIN_ROWS:
        raise ValueError(f"only {df.height} rows with a target; at least {MIN_ROWS} are needed")
    stratify = y_all if classes and np.bincount(y_all).min() >= 2 else None
    idx = np.arange(df.height)
    if config.holdout_fraction > 0:
        fit_idx, hold_idx = train_test_split(
            idx, test_size=config.holdout_fraction, random_state=config.seed, stratify=stratify
        )
        fit_idx, hold_idx = np.sort(fit_idx), np.sort(hold_idx)
    else:
        fit_idx, hold_idx = idx, idx[:0]
    fit_df, hold_df = df[fit_idx], df[hold_idx]
    plan = plan_columns(fit_df, config.target, config.exclude, task)
    preparer = ColumnPreparer(plan.numeric, plan.boolean, plan.datetime, plan.categorical)
    preparer.fit(fit_df)
    x_fit = preparer.transform(fit_df)
    y_fit, y_hold = y_all[fit_idx], y_all[hold_idx]
    n_classes = len(classes) if classes else 0
    data = SearchData(x_fit, y_fit, _folds(y_fit, task, config.seed), task, n_classes, metric,
                      preparer.categorical_mask_, config.seed)  # fmt: skip
    clock = Clock(started, SEARCH_SHARE * budget, should_stop)
    # A refit's cost relative to the search's fits (rows grow by the holdout); 0: no refit.
    refit_rows = df.height / len(fit_idx) if config.refit and len(hold_idx) else 0.0
    score_over_time: list[tuple[float, float]] = []
    trials: list[Trial] = []

    def on_trial(trial: Trial | None, family: str, params: dict) -> None:
        if trial is not None:
            trials.append(trial)
            best = (
                max(t.score for t in trials)
                if metric.greater_is_better
                else min(t.score for t in trials)
            )
            score_over_time.append((round(trial.finished_at, 3), best))
            message = f"{family} trial {trial.id}: {metric.name} {trial.score:.4f}"
        else:
            message = f"{family} trial abandoned: would not finish within the budget"
        # The holdout and the ensembling must fit too: leave room for predicting every fold model.
        if trials:
            share = len(hold_idx) / max(len(fit_idx), 1)
            top = sorted(trials, key=lambda t: t.loss)[: ensemble_selection.MAX_CANDIDATES]
            final = (
                sum(t.predict_seconds * len(data.folds) * share for t in top) * 2 + 0.02 * budget
            )
            if refit_rows:  # room to refit the best few on every row (what most ensembles use)
                final += min(
                    REFIT_SHARE * budget,
                    sum(t.fit_seconds + t.predict_seconds for t in top[:3]) * refit_rows,
                )
            clock.search_end = min(SEARCH_SHARE * budget, 0.97 * budget - final)
        if on_progress is not None:
            best = score_over_time[-1][1] if trials else None
            board = leaderboard(trials, metric, {})
            on_progress(Progress(len(trials), best, clock.now(), budget, message, board))

    search(data, clock, max_trials=config.max_trials, on_trial=on_trial)
    if not trials:
        raise NoModelTrained("no trial finished within the budget; give it more time")
    ranked = sorted(trials, key=lambda t: (t.loss, t.id))
    oofs = [t.oof[data.covered] for t in ranked]
    y_covered = y_fit[data.covered]
    picks, ens_loss = ensemble_selection.select(
        oofs, y_covered, metric, seed=config.seed, deadline=started + 0.95 * budget
    )
    temperature, calibration_info = 1.0, {}
    # Multiclass only: on binary sets the temperature lowered the holdout log loss but not the
    # test sets' (median +0.6 % over 8 runs), and it cannot change ROC AUC, their default metric.
    if task == "multiclass":
        temperature, ens_loss, calibration_info = _calibrate(
            oofs, picks, y_covered, metric, ens_loss, config.seed
        )
    weights = {ranked[i].id: w for i, w in picks.items()}
    members = _members(ranked, weights, {})
    schema = [
        {"name": name, "type": str(fit_df[name].dtype)}
        | ({"categories": preparer.categories_[name]} if name in preparer.categories_ else {})
        for name in preparer.input_columns()
    ]
    fill = missing_draws(x_fit, seed=config.seed)
    model = AutomlModel(
        preparer, members, task, classes, schema, temperature=temperature, fill=fill
    )
    x_hold = preparer.transform(hold_df)
    holdout_metrics, predictions = {}, {}
    if len(hold_idx):
        blend = model._blend(x_hold)
        pred = model._calibrated(blend)  # the probabilities predict_proba gives
        holdout_metrics = holdout_report(task, y_hold, pred)
        if classes:
            raw = calibration.apply_temperature(blend, 1.0)
            calibration_info["holdout_log_loss_uncalibrated"] = log_loss(y_hold, raw)
            calibration_info["holdout_log_loss"] = holdout_metrics["log_loss"]
        holdout_metrics[metric.name] = metric.score(y_hold, pred)
        if classes:
            labels = np.asarray(classes)
            predictions = {"y_true": labels[y_hold].tolist(),
                           "y_pred": labels[np.argmax(pred, axis=1)].tolist(),
                           "probabilities": pred.tolist()}  # fmt: skip
        else:
            predictions = {"y_true": y_hold.tolist(), "y_pred": pred.tolist()}
    refitted: list[int] = []
    final_model = model
    if refit_rows and not clock.stopped:
        refits = _refit(
            [t for t in ranked if t.id in weights], weights,
            _rows_in_order(df.height, (fit_idx, x_fit), (hold_idx, x_hold)), y_all, data,
            Clock(started, REFIT_END * budget, should_stop, fold_seconds=dict(clock.fold_seconds)),
            refit_rows,
        )  # fmt: skip
        refitted = sorted(refits)
        if refits:
            final_model = AutomlModel(preparer, _members(ranked, weights, refits), task, classes,
                                      schema, temperature=temperature, fill=fill)  # fmt: skip
    # Importance from the model the holdout has not seen (permuting rows it was fitted on
    # would measure memory, not reliance).
    importance = feature_importance(
        model, x_hold, y_hold, metric, seed=config.seed,
        deadline=started + (0.0 if clock.stopped else budget),
    )  # fmt: skip
    board = leaderboard(trials, metric, weights, ensemble_loss=ens_loss, now=clock.now())
    return TrainResult(
        task=task,
        metric=metric.name,
        classes=classes,
        model=final_model,
        leaderboard=board,
        ensemble=weights,
        cv_score=metric.to_score(ens_loss),
        holdout_metrics=holdout_metrics,
        holdout_predictions=predictions,
        score_over_time=score_over_time,
        dropped_columns=plan.dropped,
        feature_importance=importance,
        preprocessing={
            "rows": n_all,
            "rows_dropped_missing_target": n_all - df.height,
            "rows_search": len(fit_idx),
            "rows_holdout": len(hold_idx),
            # Trials whose fold models were refitted on every row after the holdout metrics.
            "refitted_trials": refitted,
            "folds": len(data.folds),
            "numeric": plan.numeric,
            "boolean": plan.boolean,
            "datetime": dict(preparer.datetime_parts_),
            "categorical": {k: len(v) for k, v in preparer.categories_.items()},
            "features": preparer.feature_names_,
            "stopped_by_caller": clock.stopped,
        },
        elapsed_seconds=time.monotonic() - started,
        library_versions=_versions(),
        calibration=calibration_info,
    )
