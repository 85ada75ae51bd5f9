"""The fitted AutoML model: the column preparer and the weighted fold models of the ensemble.

Made only of scikit-learn compatible estimators, numpy arrays and plain Python values, so that
skops can save it with an allow-list of types (no lambdas, closures or custom pickling).

A value missing where the training data had (almost) none: the fold models never learned what
a missing value means there, and route it down whichever branch their few examples chose (a
penguin with every measurement missing came out 99 % Adelie, the species of the one such row
in training, while it lived on an island of mostly Gentoo). Such a row is predicted as the
average over typical values of what is missing (`missing_draws`: quantiles of each column's
training values, paired across columns at random), which is the prediction given what is
known, if the missing values are independent of the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atelier.automl.calibration import apply_temperature
from atelier.automl.learners import predict_fold
from atelier.automl.prepare import ColumnPreparer

# A column counts as never missing in training below this share of rows (and MIN_MISSING rows).
RARELY_MISSING = 0.01
MIN_MISSING = 5
DRAWS = 16
# Rows with such holes cost DRAWS predictions each, but a batch no more than EXTRA_ROWS more
# rows, or this many times its rows if more (fewer draws per row then: a client that left out
# a column entirely).
MAX_EXTRA_WORK = 4
EXTRA_ROWS = 1024


def missing_draws(x: np.ndarray, *, seed: int, draws: int = DRAWS) -> tuple[np.ndarray, np.ndarray]:
    """The columns of the prepared training matrix `x` that are (almost) never missing, and
    `draws` rows of values for them: each column's quantiles, shuffled apart."""
    missing = np.isnan(x).sum(axis=0)
    columns = np.flatnonzero(missing < max(MIN_MISSING, RARELY_MISSING * len(x)))
    rng = np.random.default_rng(seed)
    levels = (np.arange(draws) + 0.5) / draws
    table = np.full((draws, len(columns)), np.nan)
    for j, column in enumerate(columns):
        values = x[:, column][~np.isnan(x[:, column])]
        if len(values):  # actual values (categories stay codes), not interpolations
            table[:, j] = rng.permutation(np.quantile(values, levels, method="inverted_cdf"))
    return columns, table


class AutomlModel:
    """predict / predict_proba on raw frames (polars, pyarrow or pandas)."""

    # Class level, so that a model saved before calibration existed loads with T = 1 (skops
    # restores the instance's __dict__, which then has no "temperature"); likewise a model
    # saved before `missing_draws` predicts every row as its fold models do.
    temperature: float = 1.0
    fill_columns: np.ndarray | None = None
    fill_draws: np.ndarray | None = None

    def __init__(
        self,
        preparer: ColumnPreparer,
        members: list[tuple[Any, np.ndarray | None, float]],
        task: str,
        classes: list | None,
        input_schema: list[dict],
        *,
        temperature: float = 1.0,
        fill: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.preparer = preparer
        self.members = members  # (fold estimator, its class indices, weight), weights sum to 1
        self.task = task
        self.classes = classes
        self.input_schema = input_schema
        self.temperature = float(temperature)  # see calibration.py; 1.0 for regression
        if fill is not None:  # from `missing_draws`
            self.fill_columns, self.fill_draws = fill

    def _blend(self, x: np.ndarray, *, average_missing: bool = True) -> np.ndarray:
        """The members' weighted average, before calibration; rows missing a value the
        training data never missed are averaged over the fill draws."""
        out = self._members(x)
        if not average_missing or self.fill_columns is None or not len(self.fill_columns):
            return out
        holes = np.isnan(x[:, self.fill_columns])
        rows = np.flatnonzero(holes.any(axis=1))
        if not len(rows):
            return out
        allowed = max(EXTRA_ROWS, MAX_EXTRA_WORK * len(x)) // len(rows)
        k = max(2, min(len(self.fill_draws), allowed))
        filled = np.repeat(x[rows][:, self.fill_columns], k, axis=0)  # each row k times
        draws = np.tile(self.fill_draws[:k], (len(rows), 1))
        gaps = np.isnan(filled)
        filled[gaps] = draws[gaps]
        copies = np.repeat(x[rows], k, axis=0)
        copies[:, self.fill_columns] = filled
        pred = self._members(copies)
        out[rows] = pred.reshape(len(rows), k, *pred.shape[1:]).mean(axis=1)
        return out

    def _members(self, x: np.ndarray) -> np.ndarray:
        n_classes = len(self.classes) if self.classes else 0
        out = None
        for est, class_index, weight in self.members:
            pred = weight * predict_fold(est, x, self.task, class_index, n_classes)
            out = pred if out is None else out + pred
        return out

    def _calibrated(self, blend: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return blend
        return apply_temperature(blend, self.temperature)

    def _predict_matrix(self, x: np.ndarray, *, average_missing: bool = True) -> np.ndarray:
        """Calibrated class probabilities (rows sum to 1), or regression values."""
        return self._calibrated(self._blend(x, average_missing=average_missing))

    def predict_proba(self, frame: Any, *, average_missing: bool = True) -> np.ndarray:
        """Class probabilities, columns ordered like `classes`. `average_missing=False`: every
        row as the fold models alone predict it (what the ONNX export computes)."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classification models")
        x = self.preparer.transform(frame)
        return self._predict_matrix(x, average_missing=average_missing)

    def predict(self, frame: Any, *, average_missing: bool = True) -> np.ndarray:
        """Class labels as in the training data, or numbers for regression."""
        x = self.preparer.transform(frame)
        pred = self._predict_matrix(x, average_missing=average_missing)
        if self.task == "regression":
            return pred
        return np.asarray(self.classes)[np.argmax(pred, axis=1)]
