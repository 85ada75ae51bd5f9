"""The fitted AutoML model: the column preparer and the weighted fold models of the ensemble.

Made only of scikit-learn compatible estimators, numpy arrays and plain Python values, so that
skops can save it with an allow-list of types (no lambdas, closures or custom pickling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atelier.automl.learners import predict_fold
from atelier.automl.prepare import ColumnPreparer


class AutomlModel:
    """predict / predict_proba on raw frames (polars, pyarrow or pandas)."""

    def __init__(
        self,
        preparer: ColumnPreparer,
        members: list[tuple[Any, np.ndarray | None, float]],
        task: str,
        classes: list | None,
        input_schema: list[dict],
    ):
        self.preparer = preparer
        self.members = members  # (fold estimator, its class indices, weight), weights sum to 1
        self.task = task
        self.classes = classes
        self.input_schema = input_schema

    def _predict_matrix(self, x: np.ndarray) -> np.ndarray:
        n_classes = len(self.classes) if self.classes else 0
        out = None
        for est, class_index, weight in self.members:
            pred = weight * predict_fold(est, x, self.task, class_index, n_classes)
            out = pred if out is None else out + pred
        return out

    def predict_proba(self, frame: Any) -> np.ndarray:
        """Class probabilities, columns ordered like `classes`."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classification models")
        proba = self._predict_matrix(self.preparer.transform(frame))
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, frame: Any) -> np.ndarray:
        """Class labels as in the training data, or numbers for regression."""
        x = self.preparer.transform(frame)
        pred = self._predict_matrix(x)
        if self.task == "regression":
            return pred
        return np.asarray(self.classes)[np.argmax(pred, axis=1)]
