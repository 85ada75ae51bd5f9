"""A real MLflow tracking server on loopback, and one small AutoML model shared by the tests.

The server runs from its own virtual environment (tests/mlflow/server/.venv, made by
`tests/mlflow/server/setup.sh`), so the full `mlflow` package never enters Atelier's. Without it
the tests skip, except in CI (`CI` set), where a missing server is a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from atelier.automl import artifacts
from atelier.automl.engine import TrainConfig, TrainResult, train
from atelier.automl.jobs import results_of
from atelier.automl.jsonable import plain
from atelier.automl.report import build_report, render_html
from atelier.registry import folders
from tests.conftest import free_port

SERVER_DIR = Path(__file__).parent / "server"
MLFLOW = SERVER_DIR / ".venv" / "bin" / "mlflow"
START_TIMEOUT = 120  # seconds; it answers in ~6 s on an idle two-core machine


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    artifacts: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    if not MLFLOW.exists():
        message = f"{MLFLOW} is missing: run `bash tests/mlflow/server/setup.sh`"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the MLflow tests")
        pytest.skip(message)
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log_path = root / "server.log"
    # Only what the server needs of ours: no tracking URI or MLflow settings of the test process;
    # no background job runner (it starts extra consumer processes MLflow's GenAI features use).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    command = [
        str(MLFLOW),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    with log_path.open("wb") as log:
        # A session of its own: the server starts uvicorn as a child, and the whole group goes.
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log_path, root / "artifacts")
    try:
        _wait_until_up(server)
        yield server
    finally:
        _stop(process)


def _wait_until_up(server: MlflowServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow server did not answer within {START_TIMEOUT} s:\n{server.log()}")


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---- one trained model --------------------------------------------------------------------------


@dataclass
class Trained:
    """A finished AutoML run as `automl.jobs.train` has it before storing: what `log_run` and
    the registry receive."""

    frame: pl.DataFrame  # the training table, target included
    result: TrainResult
    run: dict[str, Any]
    results: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    report: dict[str, Any]
    report_html: str
    model_dir: Path

    @property
    def rows(self) -> pl.DataFrame:
        return self.frame.drop(self.run["target"])


def shoppers(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """Who buys: a float, an integer, a text and a boolean column, and a yes/no target."""
    rng = np.random.default_rng(seed)
    visits = rng.integers(0, 8, size=n)
    minutes = rng.gamma(2.0, 3.0, size=n)
    channel = rng.choice(["ads", "search", "mail"], size=n)
    member = rng.random(size=n) < 0.3
    score = 0.4 * visits + 0.2 * minutes + 1.5 * member + (channel == "mail") - 3.0
    bought = np.where(score + rng.normal(scale=0.8, size=n) > 0, "yes", "no")
    return pl.DataFrame(
        {
            "visits": visits,
            "minutes": minutes,
            "channel": channel,
            "member": member,
            "bought": bought,
        }
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    frame = shoppers()
    config = TrainConfig(target="bought", budget_seconds=4, seed=0)
    result = train(frame, config)
    run = {
        "id": "aml_mlflowtest",
        "dataset_name": "Shoppers",
        "dataset_version": 3,
        "target": config.target,
        "task": result.task,
        "metric": result.metric,
        "budget_seconds": config.budget_seconds,
        "seed": config.seed,
    }
    report_run = {
        k: run[k]
        for k in ("id", "dataset_name", "dataset_version", "target", "budget_seconds", "seed")
    }
    report = build_report(report_run, {"rows": frame.height, "columns": frame.width}, result)
    report_html = render_html(report)
    model_dir = tmp_path_factory.mktemp("automl") / "model"
    artifacts.save(
        model_dir,
        result.model,
        target=config.target,
        metric=result.metric,
        report=report,
        report_html=report_html,
    )
    return Trained(
        frame,
        result,
        run,
        results_of(result),
        plain(result.leaderboard),
        report,
        report_html,
        model_dir,
    )


def make_version(
    model_dir: Path, folder: Path, *, format: str, name: str = "shoppers", number: int = 1
) -> Path:
    """A registry version folder around a model folder: version.json, lineage and card too."""
    folder.mkdir(parents=True)
    for path in model_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    folders.write_json(
        folder / folders.VERSION_FILE, {"format": format, "name": name, "version": number}
    )
    folders.write_json(folder / folders.LINEAGE_FILE, {"source": "test"})
    (folder / folders.CARD_FILE).write_text(f"# {name} v{number}\n")
    return folder
