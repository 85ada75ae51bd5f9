"""An AutoML run logged to a real MLflow tracking server, read back with MLflow's own client."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from atelier import __version__
from atelier.automl import artifacts
from atelier.automl.tracking import MAX_PARAM_LENGTH, MODEL_ARTIFACT_PATH, TrackingFailed, log_run
from tests.conftest import free_port

pytestmark = [pytest.mark.backend_independent, pytest.mark.live]


def _log(server_url: str, trained, experiment: str, **changes) -> str:
    arguments = {
        "experiment": experiment,
        "run": trained.run,
        "results": trained.results,
        "leaderboard": trained.leaderboard,
        "report": trained.report,
        "report_html": trained.report_html,
        "model_dir": trained.model_dir,
    }
    return log_run(server_url, **(arguments | changes))


@pytest.fixture(scope="module")
def logged(mlflow_server, trained):
    """The run logged once; the tests below read it back."""
    run_id = _log(mlflow_server.url, trained, "atelier/tracking")
    return MlflowClient(tracking_uri=mlflow_server.url), run_id


def test_the_run_carries_the_request_and_the_chosen_ensemble_as_parameters(logged, trained):
    client, run_id = logged
    run = client.get_run(run_id)
    params = run.data.params
    assert run.info.status == "FINISHED"
    assert run.info.run_name == trained.run["id"]
    assert {k: params[k] for k in ("dataset_name", "dataset_version", "target", "task")} == {
        "dataset_name": "Shoppers",
        "dataset_version": "3",
        "target": "bought",
        "task": "binary",
    }
    assert params["metric"] == trained.result.metric
    assert params["seed"] == "0"
    assert float(params["budget_seconds"]) == 4
    ensemble = trained.result.ensemble
    assert params["ensemble.size"] == str(len(ensemble))
    rows = {row["id"]: row for row in trained.leaderboard}
    for trial_id, weight in ensemble.items():
        prefix = f"ensemble.trial_{trial_id}"
        assert params[f"{prefix}.learner"] == rows[trial_id]["learner"]
        assert float(params[f"{prefix}.weight"]) == pytest.approx(weight)
        for name, value in rows[trial_id]["params"].items():
            assert params[f"{prefix}.params.{name}"] == (
                value if isinstance(value, str) else json.dumps(value)
            )
    assert run.data.tags["atelier.run_id"] == trained.run["id"]
    assert run.data.tags["atelier.version"] == __version__
    assert (
        run.data.tags["atelier.library.scikit-learn"]
        == (trained.result.library_versions["scikit-learn"])
    )


def test_every_trial_is_a_step_of_the_metric_history(logged, trained):
    client, run_id = logged
    metric = trained.result.metric
    trials = sorted(
        (r for r in trained.leaderboard if r["id"] != "ensemble"), key=lambda r: r["id"]
    )
    assert len(trials) >= 3, "the budget should allow several trials"
    history = client.get_metric_history(run_id, f"trial_cv_{metric}")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [r["id"] for r in trials]
    assert {m.step: m.value for m in history} == pytest.approx(
        {r["id"]: r["cv_score"] for r in trials}
    )
    best = sorted(client.get_metric_history(run_id, f"best_cv_{metric}"), key=lambda m: m.step)
    assert len(best) == len(trained.result.score_over_time)
    assert [m.value for m in best] == pytest.approx([s for _, s in trained.result.score_over_time])
    timestamps = [m.timestamp for m in best]
    assert timestamps == sorted(timestamps)


def test_the_final_scores_are_the_runs_results(logged, trained):
    client, run_id = logged
    metrics = client.get_run(run_id).data.metrics
    assert metrics[f"cv_{trained.result.metric}"] == pytest.approx(trained.result.cv_score)
    for name, value in trained.result.holdout_metrics.items():
        assert metrics[f"holdout_{name}"] == pytest.approx(value)
    assert metrics["trials"] == len(trained.leaderboard) - 1  # less the ensemble's row


def test_the_report_and_the_model_folder_are_artifacts(logged, trained, tmp_path):
    client, run_id = logged
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "report.html",
        "report.json",
        MODEL_ARTIFACT_PATH,
    }
    html = client.download_artifacts(run_id, "report.html", str(tmp_path))
    assert Path(html).read_text() == trained.report_html
    report = client.download_artifacts(run_id, "report.json", str(tmp_path))
    assert json.loads(Path(report).read_text()) == trained.report
    folder = client.download_artifacts(run_id, MODEL_ARTIFACT_PATH, str(tmp_path))
    model, signature = artifacts.load(Path(folder))
    assert signature["target"] == "bought"
    rows = trained.rows
    assert np.allclose(model.predict_proba(rows), trained.result.model.predict_proba(rows))


def test_logging_a_run_again_replaces_what_the_earlier_attempt_logged(mlflow_server, trained):
    """A re-run after a lost worker searches again: MLflow keeps only the latest attempt."""
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = trained.run | {"id": "aml_rerun"}
    first = _log(mlflow_server.url, trained, "atelier/reruns", run=run, model_dir=None)
    second = _log(mlflow_server.url, trained, "atelier/reruns", run=run, model_dir=None)
    assert first != second
    experiment = client.get_experiment_by_name("atelier/reruns")
    found = client.search_runs([experiment.experiment_id], "tags.`atelier.run_id` = 'aml_rerun'")
    assert [r.info.run_id for r in found] == [second]
    assert client.get_run(first).info.lifecycle_stage == "deleted"


def test_long_and_odd_names_and_values_are_cut_to_mlflows_limits(mlflow_server):
    leaderboard = [
        {
            "id": 0,
            "learner": "odd",
            "cv_score": 0.5,
            "fit_seconds": 0.1,
            "finished_at_seconds": 0.2,
            "params": {"path/with:colon é": "x" * 10_000},
        },
    ]
    run = {
        "id": "aml_limits",
        "dataset_name": "d" * 7000,
        "dataset_version": 1,
        "target": "y",
        "task": "regression",
        "metric": "rmse",
        "budget_seconds": 1,
        "seed": 0,
    }
    results = {"ensemble": {"0": 1.0}, "cv_score": 0.5, "holdout_metrics": {"rmse": float("nan")}}
    run_id = log_run(
        mlflow_server.url,
        experiment="atelier/limits",
        run=run,
        results=results,
        leaderboard=leaderboard,
        report=None,
        report_html=None,
        model_dir=None,
    )
    client = MlflowClient(tracking_uri=mlflow_server.url)
    logged = client.get_run(run_id)
    value = logged.data.params["ensemble.trial_0.params.path_with_colon é"]
    assert len(value) == MAX_PARAM_LENGTH
    assert value.endswith("…")
    assert len(logged.data.params["dataset_name"]) == MAX_PARAM_LENGTH
    assert "holdout_rmse" not in logged.data.metrics  # NaN is not a score
    assert client.list_artifacts(run_id) == []


def test_a_deleted_experiment_is_a_clear_failure(mlflow_server, trained):
    client = MlflowClient(tracking_uri=mlflow_server.url)
    client.delete_experiment(client.create_experiment("atelier/deleted"))
    with pytest.raises(TrackingFailed, match="was deleted"):
        _log(mlflow_server.url, trained, "atelier/deleted", model_dir=None)


def test_a_dead_server_fails_within_seconds_not_minutes(trained, monkeypatch):
    """MLflow's own defaults would retry for about four minutes; a worker must not wait that."""
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    dead = f"http://atelier:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(TrackingFailed, match=r"aml_mlflowtest.*127\.0\.0\.1") as failed:
        _log(dead, trained, "atelier/dead")
    assert time.monotonic() - started < 30
    assert failed.value.mlflow_run_id is None
    assert "s3cret" not in str(failed.value)  # the message goes to the logs


@pytest.mark.parametrize("uri", ["", "file:///tmp/mlruns", "sqlite:///mlflow.db", "databricks"])
def test_only_an_http_tracking_server_is_accepted(trained, uri):
    with pytest.raises(TrackingFailed, match="http"):
        _log(uri, trained, "atelier/any")
