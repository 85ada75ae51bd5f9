"""An AutoML run mirrored to an MLflow tracking server, for teams that already read MLflow.

`log_run` writes one MLflow run per Atelier run: the request and the chosen ensemble as
parameters, every trial's score as a metric history (step = trial number), the final scores,
the report (`report.html`, `report.json`) and the model folder as artifacts. Atelier stays the
source of truth: a server that is down or refuses the run raises `TrackingFailed`, which the
caller logs while keeping its own run.

Talking to the server goes through `MlflowClient` with an explicit tracking URI, never MLflow's
process-wide one, so that several runs may log from one process to different servers. MLflow's
HTTP client reads its timeout and retry policy from environment variables at every request;
its defaults (120 s per request, 7 retries with exponential backoff) would keep a worker waiting
minutes on a dead server, so `log_run` sets shorter ones in its process unless the operator
already set them (`CLIENT_DEFAULTS`, which also stops MLflow printing run links to stdout, where
a worker's JSON logs go). A re-run of the same Atelier run (after a lost worker) replaces the
MLflow run it logged before instead of adding a second one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import atelier

# MLflow's own variable names; the values bound a dead server to seconds, not minutes: a refused
# connection fails after ~3 s (three attempts), an unanswering host after ~35 s.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# MLflow's limits (mlflow.utils.validation): longer values are cut, marked with an ellipsis.
MAX_KEY_LENGTH = 250
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_EXPERIMENT_NAME = 500
RUN_ID_TAG = "atelier.run_id"
VERSION_TAG = "atelier.version"
MODEL_ARTIFACT_PATH = "atelier-model"
_KEY_CHARACTERS = re.compile(r"[^\w.\- ]")  # MLflow also allows / and :, which we keep out
_RUN_ID = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
_USERINFO = re.compile(r"//[^/@\s]+@")


class TrackingFailed(RuntimeError):
    """The run could not be logged to MLflow (server down, refused, misconfigured). The Atelier
    run is not affected; `mlflow_run_id` names the partly logged MLflow run, if one was made."""

    def __init__(self, message: str, *, mlflow_run_id: str | None = None) -> None:
        super().__init__(message)
        self.mlflow_run_id = mlflow_run_id


def log_run(
    tracking_uri: str,
    *,
    experiment: str,
    run: dict[str, Any],
    results: dict[str, Any],
    leaderboard: list[dict[str, Any]],
    report: dict[str, Any] | None,
    report_html: str | None,
    model_dir: Path | None,
) -> str:
    """Log a finished AutoML run; returns the MLflow run id.

    `run`: id, dataset_name, dataset_version, target, task, metric, budget_seconds, seed (and
    optionally exclude); `results`: `automl.jobs.results_of(...)`; `leaderboard`: the engine's
    rows (plain JSON); `model_dir`: the folder `automl.artifacts.save` wrote."""
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingFailed(
            "An MLflow tracking URI is set but the MLflow client is not installed: "
            "install Atelier with the `mlflow` extra (pip install 'atelier[mlflow]')"
        ) from None
    import requests

    _check(tracking_uri, experiment, run)
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    client = MlflowClient(tracking_uri=tracking_uri)
    mlflow_run_id = None
    try:
        experiment_id = _experiment_id(client, experiment)
        _delete_earlier(client, experiment_id, run["id"])
        now_ms = int(time.time() * 1000)
        started_ms = now_ms - int(1000 * float(results.get("elapsed_seconds") or 0))
        created = client.create_run(
            experiment_id,
            start_time=started_ms,
            tags=_tags(run, results),
            run_name=str(run["id"]),
        )
        mlflow_run_id = created.info.run_id
        client.log_batch(
            mlflow_run_id,
            metrics=_metrics(run, results, leaderboard, started_ms, now_ms),
            params=_params(run, results, leaderboard),
            synchronous=True,
        )
        if report is not None:
            client.log_dict(mlflow_run_id, report, "report.json")
        if report_html is not None:
            client.log_text(mlflow_run_id, report_html, "report.html")
        if model_dir is not None:
            client.log_artifacts(mlflow_run_id, str(model_dir), MODEL_ARTIFACT_PATH)
        client.set_terminated(mlflow_run_id, "FINISHED", end_time=int(time.time() * 1000))
    except (MlflowException, requests.RequestException, OSError) as exc:
        if mlflow_run_id is not None:
            # Best effort: the server may be the reason we are here.
            with contextlib.suppress(MlflowException, requests.RequestException):
                client.set_terminated(mlflow_run_id, "FAILED")
        message = f"Logging AutoML run {run['id']} to MLflow at {tracking_uri} failed: {exc}"
        raise TrackingFailed(_redacted(message), mlflow_run_id=mlflow_run_id) from exc
    return mlflow_run_id


def _check(tracking_uri: str, experiment: str, run: dict[str, Any]) -> None:
    if not re.match(r"^https?://[^/\s]+", tracking_uri or ""):
        raise TrackingFailed(
            _redacted(
                f"The MLflow tracking URI must be an http(s) URL of a tracking server, "
                f"not {tracking_uri!r}"
            )
        )
    if not experiment or len(experiment) > MAX_EXPERIMENT_NAME:
        raise TrackingFailed(
            f"An MLflow experiment name has 1 to {MAX_EXPERIMENT_NAME} characters, "
            f"got {len(experiment or '')}"
        )
    if not _RUN_ID.match(str(run.get("id", ""))):
        raise TrackingFailed(f"Not an Atelier run id: {run.get('id')!r}")


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingFailed(
                f"The MLflow experiment {name!r} was deleted; restore it in MLflow or "
                f"permanently delete it"
            )
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={"atelier.created_by": "atelier"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id  # another worker made it


def _delete_earlier(client: Any, experiment_id: str, run_id: str) -> None:
    """A re-run replaces what an earlier attempt logged: its results may differ."""
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'")
    for found in earlier:
        client.delete_run(found.info.run_id)


def _tags(run: dict[str, Any], results: dict[str, Any]) -> dict[str, str]:
    tags = {
        RUN_ID_TAG: str(run["id"]),
        VERSION_TAG: atelier.__version__,
        "mlflow.source.name": "atelier",
        "mlflow.source.type": "JOB",
    }
    for library, version in sorted((results.get("library_versions") or {}).items()):
        tags[f"atelier.library.{library}"] = str(version)
    return {_key(k): _cut(v, MAX_TAG_LENGTH) for k, v in tags.items()}


def _params(
    run: dict[str, Any], results: dict[str, Any], leaderboard: list[dict[str, Any]]
) -> list[Any]:
    from mlflow.entities import Param

    values: dict[str, Any] = {
        "dataset_name": run.get("dataset_name"),
        "dataset_version": run.get("dataset_version"),
        "target": run.get("target"),
        "task": run.get("task"),
        "metric": run.get("metric"),
        "budget_seconds": run.get("budget_seconds"),
        "seed": run.get("seed"),
    }
    if run.get("exclude"):
        values["exclude"] = run["exclude"]
    rows = {str(row.get("id")): row for row in leaderboard}
    ensemble = results.get("ensemble") or {}
    values["ensemble.size"] = len(ensemble)
    for trial_id, weight in sorted(ensemble.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        row = rows.get(str(trial_id), {})
        prefix = f"ensemble.trial_{trial_id}"
        values[f"{prefix}.weight"] = weight
        values[f"{prefix}.learner"] = row.get("learner")
        values.update(_flat(row.get("params") or {}, f"{prefix}.params"))
    params: dict[str, str] = {}
    for key, value in values.items():
        if value is not None:
            params.setdefault(_key(key), _cut(_text(value), MAX_PARAM_LENGTH))
    return [Param(k, v) for k, v in params.items()]


def _metrics(
    run: dict[str, Any],
    results: dict[str, Any],
    leaderboard: list[dict[str, Any]],
    started_ms: int,
    now_ms: int,
) -> list[Any]:
    """Each trial's score and fit time (step = trial number, time = when it finished), the best
    score so far after each trial, then the final scores at the last step."""
    from mlflow.entities import Metric

    metric = _key(str(run.get("metric") or "score"))
    metrics: list[Metric] = []

    def add(key: str, value: Any, timestamp: int, step: int) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(value):  # NaN or infinity: no score to chart
            metrics.append(Metric(_key(key), float(value), timestamp, step))

    trials = [row for row in leaderboard if isinstance(row.get("id"), int)]
    for row in sorted(trials, key=lambda r: r["id"]):
        at = started_ms + int(1000 * float(row.get("finished_at_seconds") or 0))
        add(f"trial_cv_{metric}", row.get("cv_score"), at, row["id"])
        add("trial_fit_seconds", row.get("fit_seconds"), at, row["id"])
    for step, (seconds, best) in enumerate(results.get("score_over_time") or []):
        add(f"best_cv_{metric}", best, started_ms + int(1000 * float(seconds)), step)
    last = len(trials)
    add(f"cv_{metric}", results.get("cv_score"), now_ms, last)
    for name, value in sorted((results.get("holdout_metrics") or {}).items()):
        add(f"holdout_{name}", value, now_ms, last)
    add("trials", len(trials), now_ms, last)
    add("elapsed_seconds", results.get("elapsed_seconds"), now_ms, last)
    return metrics


def _flat(value: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}"
        if isinstance(item, dict) and item:
            out.update(_flat(item, name))
        else:
            out[name] = item
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _key(name: str) -> str:
    """A name MLflow accepts as a param, metric or tag key."""
    cleaned = _KEY_CHARACTERS.sub("_", name).strip().lstrip(".")
    return cleaned[:MAX_KEY_LENGTH] or "_"


def _redacted(message: str) -> str:
    """The message without the password of a URI that carries one (`https://user:pw@host`):
    it goes to the logs."""
    return _USERINFO.sub("//***@", message)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
