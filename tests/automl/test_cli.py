"""`atelier automl train` and `predict`, run as real subprocesses on files."""

import csv

import pytest
from sklearn.datasets import load_iris

from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.backend_independent
NAMES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("automl-cli")
    iris = load_iris(as_frame=True).frame
    iris["species"] = [NAMES[v] for v in iris.pop("target")]
    iris.to_csv(folder / "iris.csv", index=False)
    iris.drop(columns="species").head(7).to_csv(folder / "new.csv", index=False)
    env = cli_env(folder, f"sqlite+aiosqlite:///{folder / 'unused.db'}")
    result = run_cli(
        "automl",
        "train",
        str(folder / "iris.csv"),
        "--target",
        "species",
        "--budget",
        "10",
        "--out",
        str(folder / "model"),
        env=env,
        cwd=folder,
        timeout=120,
    )
    return folder, env, result


def test_train_shows_a_leaderboard_and_writes_a_model_folder(trained):
    folder, _, result = trained
    assert result.returncode == 0, result.stderr
    assert "Leaderboard (multiclass, log_loss)" in result.stdout
    assert "Holdout: " in result.stdout
    assert sorted(p.name for p in (folder / "model").iterdir()) == [
        "model.skops",
        "report.html",
        "report.json",
        "signature.json",
    ]


def test_predict_writes_one_row_per_input_row_in_order(trained):
    folder, env, _ = trained
    out = folder / "predictions.csv"
    result = run_cli(
        "automl",
        "predict",
        str(folder / "model"),
        str(folder / "new.csv"),
        "--out",
        str(out),
        "--proba",
        env=env,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7
    assert list(rows[0]) == ["prediction", *[f"proba_{n}" for n in NAMES]]
    assert all(row["prediction"] == "setosa" for row in rows)  # the first rows of iris
    assert all(abs(sum(float(row[f"proba_{n}"]) for n in NAMES) - 1) < 1e-6 for row in rows)


def test_bad_requests_are_clear_errors(trained, tmp_path):
    folder, env, _ = trained
    no_target = run_cli(
        "automl",
        "train",
        str(folder / "iris.csv"),
        "--target",
        "colour",
        "--budget",
        "10",
        "--out",
        str(tmp_path / "m"),
        env=env,
        cwd=folder,
    )
    assert no_target.returncode == 2
    assert "colour" in no_target.stderr
    missing = tmp_path / "partial.csv"
    missing.write_text("sepal length (cm),petal width (cm)\n5.1,0.2\n")
    partial = run_cli(
        "automl",
        "predict",
        str(folder / "model"),
        str(missing),
        "--out",
        str(tmp_path / "p.csv"),
        env=env,
        cwd=folder,
    )
    assert partial.returncode == 2
    assert "petal length (cm)" in partial.stderr
    assert not (tmp_path / "p.csv").exists()
    # A path longer than a line: the message is not broken inside it (stderr is no terminal).
    not_a_model_folder = tmp_path / ("not-a-model-" * 8)
    not_a_model_folder.mkdir()
    not_a_model = run_cli(
        "automl",
        "predict",
        str(not_a_model_folder),
        str(missing),
        "--out",
        str(tmp_path / "p.csv"),
        env=env,
        cwd=folder,
    )
    assert not_a_model.returncode == 2
    assert f"No model.skops in {not_a_model_folder}: is this a model folder?" in (
        not_a_model.stderr
    )
