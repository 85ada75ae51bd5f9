"""The fitted AutoML model: the column preparer and the weighted fold models of the ensemble.

Made only of scikit-learn compatible estimators, numpy arrays and plain Python values, so that
skops can save it with an allow-list of types (no lambdas, closures or custom pickling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atelier.automl.calibration import apply_temperature
from atelier.automl.learners import predict_fold
from atelier.automl.prepare import ColumnPreparer


class AutomlModel:
    """predict / predict_proba on raw frames (polars, pyarrow or pandas)."""

    # Class level, so that a model saved before calibration existed loads with T = 1 (skops
    # restores the instance's __dict__, which then has no "temperature").
    temperature: float = 1.0

    def __init__(
        self,
        preparer: ColumnPreparer,
        members: list[tuple[Any, np.ndarray | None, float]],
        task: str,
        classes: list | None,
        input_schema: list[dict],
        *,
        temperature: float = 1.0,
    ):
        self.preparer = preparer
        self.members = members  # (fold estimator, its class indices, weight), weights sum to 1
        self.task = task
        self.classes = classes
        self.input_schema = input_schema
        self.temperature = float(temperature)  # see calibration.py; 1.0 for regression

    def _blend(self, x: np.ndarray) -> np.ndarray:
        """The members' weighted average, before calibration."""
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

    def _predict_matrix(self, x: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (rows sum to 1), or regression values."""
        return self._calibrated(self._blend(x))

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Class probabilities, columns ordered like `classes`."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classification models")
        return self._predict_matrix(self.preparer.transform(frame))

    def predict(self, frame: Any) -> np.ndarray:
        """Class labels as in the training data, or numbers for regression."""
        x = self.preparer.transform(frame)
        pred = self._predict_matrix(x)
        if self.task == "regression":
            return pred
        return np.asarray(self.classes)[np.argmax(pred, axis=1)]
