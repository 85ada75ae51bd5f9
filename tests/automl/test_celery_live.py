"""An AutoML run the way a deployment runs it: `atelier api` and `atelier worker` (Celery, on a
Redis server of the test's own), the dataset uploaded over HTTP, the report read back."""

import httpx
import pytest

from tests.automl.test_runs_api import homes_csv
from tests.jobs.live import sign_up, wait_for

pytestmark = pytest.mark.live


def test_a_run_goes_through_celery_and_its_report_is_served(stack):
    stack.worker()
    url = stack.api.url
    headers = sign_up(url)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        upload = http.post(
            "/api/v1/datasets", files={"file": ("homes.csv", homes_csv(), "text/csv")}
        )
        assert upload.status_code == 201, upload.text
        started = http.post(
            "/api/v1/automl/runs",
            json={
                "dataset_id": upload.json()["dataset"]["id"],
                "target": "sold_fast",
                "budget_seconds": 10,
            },
        )
        assert started.status_code == 202, started.text
        run_id, job = started.json()["run"]["id"], started.json()["job"]
        assert job["queue"] == "ml"
        done = wait_for(url, headers, job["id"], "succeeded", "failed", within=90)
        assert done["status"] == "succeeded", done["error"]
        run = http.get(f"/api/v1/automl/runs/{run_id}").json()["run"]
        assert run["task"] == "binary"
        assert run["results"]["holdout_metrics"]["roc_auc"] > 0.75
        page = http.get(f"/api/v1/automl/runs/{run_id}/report")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.text.count("<svg") >= 4
        assert "script-src" not in page.headers["content-security-policy"]
        document = http.get(f"/api/v1/automl/runs/{run_id}/report?format=json").json()
        assert document["diagnostics"]["roc"][0]["auc"] > 0.75
