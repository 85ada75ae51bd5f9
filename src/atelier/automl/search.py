"""The budgeted search: a fixed portfolio first, then FLAML's CFO on the most promising families.

Every trial is a k-fold cross-validation that keeps its out-of-fold predictions (for ensembling)
and its fold models (the final model bags them, so nothing is refitted). The sequence of trials
depends only on the seed and on the trials' scores and work units (never on the wall clock), so
two runs with the same seed run a prefix of the same sequence; the clock only decides where the
sequence is cut (deadline, abandoned trial, boosting stopped at the deadline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flaml import CFO

from atelier.automl import learners
from atelier.automl.metrics import Metric

SEARCHED_FAMILIES = 3
_SCHEDULE = (0, 1, 0, 2, 0, 1)  # positions in the current family ranking: the best gets half


class Stopped(Exception):
    """should_stop() said so: the search ends with what it has."""


@dataclass
class Trial:
    id: int
    learner: str
    params: dict
    loss: float
    score: float
    oof: np.ndarray
    models: list[tuple[object, np.ndarray | None]]
    fit_seconds: float
    predict_seconds: float
    finished_at: float
    work: float


@dataclass
class SearchData:
    x: np.ndarray
    y: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    task: str
    n_classes: int
    metric: Metric
    cat_mask: np.ndarray
    seed: int
    covered: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.covered = np.sort(np.concatenate([va for _, va in self.folds]))


@dataclass
class Clock:
    started: float
    search_end: float
    should_stop: Callable[[], bool] | None = None
    stopped: bool = False
    fold_seconds: dict[str, float] = field(default_factory=dict)  # last measured, per family

    def now(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            raise Stopped

    def remaining(self) -> float:
        return self.search_end - self.now()


def run_trial(
    data: SearchData, clock: Clock, trial_id: int, family: str, params: dict
) -> Trial | None:
    """Cross-validate one configuration; None when it would not finish before the deadline."""
    n = len(data.y)
    shape = (n, data.n_classes) if data.task != "regression" else (n,)
    oof = np.zeros(shape)
    models, fit_s, pred_s, work = [], 0.0, 0.0, 0.0
    deadline = clock.started + clock.search_end
    for k, (tr, va) in enumerate(data.folds):
        clock.check()
        if clock.remaining() <= clock.fold_seconds.get(family, 0.0):
            return None  # not even one more fold fits
        est = learners.build(family, params, data.task, data.cat_mask, data.seed + k)
        y_tr = data.y[tr]
        class_index = None
        if data.task != "regression":
            class_index = np.unique(y_tr)
            y_tr = np.searchsorted(class_index, y_tr)  # a fold may miss a rare class
            y_va = np.searchsorted(class_index, data.y[va]).clip(0, len(class_index) - 1)
        else:
            y_va = data.y[va]
        t0 = time.monotonic()
        learners.fit_fold(family, est, data.x[tr], y_tr, data.x[va], y_va, data.cat_mask, deadline)
        t1 = time.monotonic()
        oof[va] = learners.predict_fold(est, data.x[va], data.task, class_index, data.n_classes)
        fit_s += t1 - t0
        pred_s += time.monotonic() - t1
        work += learners.work_units(family, est, len(tr))
        models.append((est, class_index))
        clock.fold_seconds[family] = (fit_s + pred_s) / (k + 1)
        folds_left = len(data.folds) - k - 1
        if folds_left and (fit_s + pred_s) / (k + 1) * folds_left > clock.remaining():
            return None  # would not fit: abandon rather than overrun
    loss = data.metric.loss(data.y[data.covered], oof[data.covered])
    return Trial(trial_id, family, params, loss, data.metric.to_score(loss), oof, models,
                 fit_s, pred_s, clock.now(), work)  # fmt: skip


def _plain(params: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def search(
    data: SearchData,
    clock: Clock,
    *,
    max_trials: int | None,
    on_trial: Callable[[Trial | None, str, dict], None],
) -> list[Trial]:
    """The portfolio, then the cost-aware search, until the plan, clock or caller ends it."""
    trials: list[Trial] = []
    next_id = 0

    def attempt(family: str, params: dict) -> Trial | None:
        nonlocal next_id
        trial = run_trial(data, clock, next_id, family, params)
        next_id += 1
        if trial is not None:
            trials.append(trial)
        on_trial(trial, family, params)
        return trial

    def room() -> bool:
        return clock.remaining() > 0 and (max_trials is None or next_id < max_trials)

    try:
        for family, params in learners.portfolio(data.task, data.x.shape[1]):
            if not room():
                return trials
            attempt(family, params)
        best: dict[str, Trial] = {}
        for t in trials:
            if t.learner not in best or t.loss < best[t.learner].loss:
                best[t.learner] = t
        ranked = sorted(best, key=lambda f: (best[f].loss, f))[:SEARCHED_FAMILIES]
        searchers = {}
        for i, family in enumerate(ranked):
            spec = learners.FAMILIES[family]
            searchers[family] = CFO(
                metric="loss", mode="min", space=spec.space,
                low_cost_partial_config=spec.low_cost or None,
                points_to_evaluate=[best[family].params], evaluated_rewards=[best[family].loss],
                seed=data.seed * 101 + i, cost_attr="work",
            )  # fmt: skip
        step = 0
        while room() and searchers:
            ranked = sorted(searchers, key=lambda f: (best[f].loss, f))
            family = ranked[_SCHEDULE[step % len(_SCHEDULE)] % len(ranked)]
            step += 1
            searcher, key = searchers[family], str(next_id)
            params = searcher.suggest(key)
            if params is None:
                del searchers[family]
                continue
            trial = attempt(family, _plain(params))
            if trial is None:  # time is only getting shorter: this family is done
                del searchers[family]
                continue
            result = {"loss": trial.loss, "work": trial.work, "config": params}
            searcher.on_trial_complete(key, result)
            if trial.loss < best[family].loss:
                best[family] = trial
    except Stopped:
        pass
    return trials
