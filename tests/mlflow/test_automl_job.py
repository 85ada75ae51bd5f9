"""An AutoML run through the API with ATELIER_MLFLOW_TRACKING_URI set: the `automl.train` job
logs it to the live MLflow server; a dead server costs the copy there, never the run."""

import pytest
from mlflow.tracking import MlflowClient

from tests.automl.test_runs_api import homes_csv


@pytest.fixture
def settings(make_settings, mlflow_server):
    return make_settings(jobs={"executor": "inline"}, mlflow_tracking_uri=mlflow_server.url)


async def run_homes(client, who) -> dict:
    dataset = await client.post(
        "/api/v1/datasets",
        data={"name": "Homes"},
        files={"file": ("homes.csv", homes_csv(300), "text/csv")},
        headers=who.headers,
    )
    assert dataset.status_code == 201, dataset.text
    response = await client.post(
        "/api/v1/automl/runs",
        json={
            "dataset_id": dataset.json()["dataset"]["id"],
            "target": "sold_fast",
            "budget_seconds": 10,
        },
        headers=who.headers,
    )
    assert response.status_code == 202, response.text
    return response.json()


async def test_a_finished_run_is_logged_to_mlflow(client, alice, mlflow_server):
    answer = await run_homes(client, alice)
    job = answer["job"]
    assert job["status"] == "succeeded", job["error"]
    mlflow_run_id = job["result"]["mlflow_run_id"]
    logged = MlflowClient(tracking_uri=mlflow_server.url).get_run(mlflow_run_id)
    assert logged.data.tags["atelier.run_id"] == answer["run"]["id"]
    assert logged.data.params["target"] == "sold_fast"
    assert logged.data.metrics["holdout_roc_auc"] == pytest.approx(
        answer["run"]["results"]["holdout_metrics"]["roc_auc"]
    )
