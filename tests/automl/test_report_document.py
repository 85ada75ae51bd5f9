"""The AutoML report: its JSON document and its HTML page, from a search result's fields."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from atelier.automl.report import build_report, render_html

pytestmark = pytest.mark.backend_independent

RUN = {
    "id": "run_x",
    "dataset_name": "Homes <b>2024</b>",
    "dataset_version": 2,
    "target": "sold",
    "budget_seconds": 30.0,
    "seed": 0,
}
HOSTILE = '<script>alert("x")</script>'


def result(task: str, y_true, y_pred, proba=None, classes=None):
    leaderboard = [
        {
            "rank": 1,
            "id": "ensemble",
            "learner": "ensemble",
            "params": {},
            "cv_score": 0.91,
            "fit_seconds": 0.1,
            "finished_at_seconds": 20.0,
            "in_ensemble": 0,
        },
        {
            "rank": 2,
            "id": "t1",
            "learner": "lightgbm",
            "params": {"num_leaves": 31},
            "cv_score": 0.9,
            "fit_seconds": 1.5,
            "finished_at_seconds": 5.0,
            "in_ensemble": 0.75,
        },
        {
            "rank": 3,
            "id": "t2",
            "learner": "linear",
            "params": {"C": 1.0},
            "cv_score": float("nan"),
            "fit_seconds": 0.2,
            "finished_at_seconds": 1.0,
            "in_ensemble": 0.25,
        },
    ]
    return SimpleNamespace(
        task=task,
        metric="roc_auc" if task != "regression" else "rmse",
        classes=classes,
        leaderboard=leaderboard,
        ensemble={"t1": 0.75, "t2": 0.25},
        cv_score=np.float64(0.91),
        holdout_metrics={"roc_auc": np.float64(0.93), "log_loss": float("inf")},
        holdout_predictions={"y_true": y_true, "y_pred": y_pred, "probabilities": proba},
        dropped_columns=[{"name": HOSTILE, "reason": "identifier"}],
        preprocessing={"categorical": ["city"]},
        feature_importance={
            "gain": {HOSTILE: 12.0, "surface": np.float32(30.5)},
            "permutation": {"surface": 0.2, "city": -0.01},
        },
        score_over_time=[(1.0, 0.85), (5.0, 0.9), (20.0, 0.91)],
        elapsed_seconds=28.7,
        library_versions={"lightgbm": "4.7.0"},
        calibration={"temperature": 0.8} if task == "multiclass" else {},
    )


def binary_result():
    rng = np.random.default_rng(0)
    y_true = np.array(["no", "yes"] * 50)
    score = np.clip((y_true == "yes") * 0.6 + rng.uniform(0, 0.5, 100), 0, 1)
    proba = np.column_stack([1 - score, score])
    y_pred = np.where(score > 0.5, "yes", "no")
    return result("binary", y_true, y_pred, proba, classes=["no", "yes"])


def test_a_classification_report_holds_its_diagnostics_and_is_plain_json():
    report = build_report(RUN, {"rows": 500, "columns": 7}, binary_result())
    text = json.dumps(report, allow_nan=False)  # NaN and infinity became null
    assert json.loads(text)["holdout_metrics"]["log_loss"] is None
    assert report["data"] == {"rows": 500, "columns": 7, "holdout_rows": 100}
    matrix = report["diagnostics"]["confusion_matrix"]
    assert matrix["labels"] == ["no", "yes"]
    assert sum(map(sum, matrix["counts"])) == 100
    (roc,) = report["diagnostics"]["roc"]
    assert roc["class"] == "yes"
    assert 0.8 < roc["auc"] <= 1.0
    assert roc["points"][0] == [0.0, 0.0]
    assert roc["points"][-1] == [1.0, 1.0]
    assert report["diagnostics"]["precision_recall"][0]["points"]
    assert [m["id"] for m in report["ensemble"]] == ["t1", "t2"]
    assert report["ensemble"][0]["params"] == {"num_leaves": 31}
    assert report["feature_importance"]["gain"][0]["feature"] == "surface"


def test_the_html_page_draws_the_charts_and_escapes_what_comes_from_the_data():
    page = render_html(build_report(RUN, {"rows": 500, "columns": 7}, binary_result()))
    assert page.startswith("<!doctype html>")
    assert HOSTILE not in page
    assert "&lt;script&gt;" in page
    assert "Homes &lt;b&gt;2024&lt;/b&gt;" in page
    assert page.count("<svg") >= 5  # confusion, ROC, PR, two importances, score over time
    assert "http://" not in page  # no external asset
    assert "https://" not in page
    assert "<script" not in page


def test_a_regression_report_has_residuals_and_predicted_against_actual():
    rng = np.random.default_rng(1)
    y_true = rng.normal(100, 20, 1000)
    y_pred = y_true + rng.normal(0, 5, 1000)
    report = build_report(RUN, {"rows": 5000, "columns": 4}, result("regression", y_true, y_pred))
    diagnostics = report["diagnostics"]
    assert len(diagnostics["predicted_vs_actual"]) <= 400  # thinned for the page
    assert diagnostics["residual_summary"]["std"] == pytest.approx(5, rel=0.2)
    page = render_html(report)
    assert "Predicted against actual" in page
    assert "Residuals" in page


def test_a_multiclass_report_draws_one_curve_per_class():
    rng = np.random.default_rng(2)
    classes = ["a", "b", "c"]
    y_true = np.array(rng.choice(classes, 90))
    proba = rng.dirichlet([1, 1, 1], 90)
    y_pred = np.array(classes)[proba.argmax(axis=1)]
    report = build_report(
        RUN,
        {"rows": 90, "columns": 3},
        result("multiclass", y_true, y_pred, proba, classes=classes),
    )
    assert [c["class"] for c in report["diagnostics"]["roc"]] == classes
    assert len(report["diagnostics"]["confusion_matrix"]["counts"]) == 3
    assert report["calibration"] == {"temperature": 0.8}
