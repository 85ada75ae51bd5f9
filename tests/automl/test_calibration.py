"""Temperature scaling of the ensemble's probabilities: the fit, a real training run, and model
files saved with and without a temperature."""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from atelier.automl import artifacts, calibration
from atelier.automl.engine import TrainConfig, train
from atelier.automl.learners import predict_fold
from atelier.automl.metrics import log_loss

pytestmark = pytest.mark.backend_independent

KINDS = np.array(["ash", "beech", "cedar"])


def _trees(n: int, seed: int) -> pl.DataFrame:
    """Three overlapping classes: two informative columns, a noise column and a categorical."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 2.5]])
    x = centres[y] + rng.normal(size=(n, 2))
    return pl.DataFrame(
        {
            "x1": x[:, 0],
            "x2": x[:, 1],
            "noise": rng.normal(size=n),
            "shade": rng.choice(["light", "dark"], n),
            "kind": KINDS[y],
        }
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw(proba: np.ndarray, seed: int) -> np.ndarray:
    """One class per row, drawn from the row's probabilities."""
    u = np.random.default_rng(seed).random((len(proba), 1))
    return (u > np.cumsum(proba, axis=1)).sum(axis=1).clip(0, proba.shape[1] - 1)


def _encoded(labels) -> np.ndarray:
    return np.searchsorted(KINDS, np.asarray(labels))


@pytest.fixture(scope="module")
def trained():
    # max_trials fixes the trial sequence, so the run is the same on a slow machine.
    config = TrainConfig(target="kind", budget_seconds=30, max_trials=5, seed=0)
    return train(_trees(400, seed=1), config)


def test_underconfident_probabilities_are_sharpened():
    rng = np.random.default_rng(0)
    truth = _softmax(rng.normal(scale=3.0, size=(5000, 4)))
    y = _draw(truth, seed=1)
    soft = calibration.apply_temperature(truth, 2.0)  # what an under-confident model gives
    temperature = calibration.fit_temperature(soft, y)
    assert temperature == pytest.approx(0.5, abs=0.05)
    scaled = calibration.apply_temperature(soft, temperature)
    assert log_loss(y, scaled) < log_loss(y, soft)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    assert (scaled.argmax(axis=1) == soft.argmax(axis=1)).all()


def test_calibrated_probabilities_keep_a_temperature_near_one():
    rng = np.random.default_rng(2)
    truth = _softmax(rng.normal(scale=2.0, size=(5000, 3)))
    assert calibration.fit_temperature(truth, _draw(truth, seed=3)) == pytest.approx(1.0, abs=0.1)


def test_a_small_set_without_mistakes_is_not_made_overconfident():
    """With no mistake out of fold the free fit would send T to 0; the prior holds it back."""
    proba = np.tile([0.9, 0.05, 0.05], (60, 1))
    y = np.zeros(60, dtype=int)
    temperature = calibration.fit_temperature(proba, y)
    assert 0.5 < temperature < 1.0
    assert log_loss(y, calibration.apply_temperature(proba, temperature)) < log_loss(y, proba)


def test_binary_temperature_keeps_the_roc_auc():
    rng = np.random.default_rng(4)
    p1 = rng.random(500)
    proba = np.column_stack([1 - p1, p1])
    y = (rng.random(500) < p1).astype(int)
    for temperature in (0.3, 0.8, 2.5):
        scaled = calibration.apply_temperature(proba, temperature)
        assert roc_auc_score(y, scaled[:, 1]) == pytest.approx(roc_auc_score(y, p1), abs=1e-12)


def test_training_fits_a_temperature_that_keeps_or_lowers_the_log_loss(trained):
    calibrated = trained.calibration
    temperature = trained.model.temperature
    assert isinstance(temperature, float)
    assert calibrated["temperature"] == temperature
    assert calibration.MIN_TEMPERATURE <= temperature <= calibration.MAX_TEMPERATURE
    assert temperature != 1.0
    assert calibrated["oof_log_loss"] <= calibrated["oof_log_loss_uncalibrated"]
    assert calibrated["holdout_log_loss"] <= calibrated["holdout_log_loss_uncalibrated"]
    # The holdout report is made of the calibrated probabilities.
    holdout = trained.holdout_predictions
    y_hold = _encoded(holdout["y_true"])
    proba = np.asarray(holdout["probabilities"])
    assert trained.holdout_metrics["log_loss"] == pytest.approx(log_loss(y_hold, proba))
    assert calibrated["holdout_log_loss"] == trained.holdout_metrics["log_loss"]
    # The ensemble's cross-validated log loss is the calibrated one.
    assert trained.cv_score == pytest.approx(calibrated["oof_log_loss"])

    fresh = _trees(300, seed=9)
    rows, y = fresh.drop("kind"), _encoded(fresh["kind"])
    uncalibrated = copy.copy(trained.model)
    uncalibrated.temperature = 1.0
    scaled, plain = trained.model.predict_proba(rows), uncalibrated.predict_proba(rows)
    assert log_loss(y, scaled) <= log_loss(y, plain)
    np.testing.assert_allclose(scaled, calibration.apply_temperature(plain, temperature))
    assert (trained.model.predict(rows) == uncalibrated.predict(rows)).all()


def test_the_temperature_is_saved_and_loaded(tmp_path, trained):
    artifacts.save(tmp_path, trained.model, target="kind", metric=trained.metric)
    model, _ = artifacts.load(tmp_path)
    assert model.temperature == trained.model.temperature
    rows = _trees(50, seed=5).drop("kind")
    np.testing.assert_allclose(model.predict_proba(rows), trained.model.predict_proba(rows))


def test_a_model_saved_before_calibration_loads_and_predicts_as_before(tmp_path, trained):
    """Files written before the attribute existed have no "temperature" in the model's state."""
    old = copy.copy(trained.model)
    del old.__dict__["temperature"]
    artifacts.save(tmp_path, old, target="kind")
    model, _ = artifacts.load(tmp_path)
    assert "temperature" not in vars(model)
    assert model.temperature == 1.0
    rows = _trees(50, seed=6).drop("kind")
    x = model.preparer.transform(rows)
    # What predict_proba computed before calibration: the weighted members, renormalised.
    blend = sum(
        weight * predict_fold(est, x, "multiclass", class_index, 3)
        for est, class_index, weight in model.members
    )
    expected = blend / blend.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(rows), expected)
    assert model.predict(rows).tolist() == KINDS[expected.argmax(axis=1)].tolist()
