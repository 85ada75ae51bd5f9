"""`atelier automl train|predict`: AutoML on files, offline, with no server or database.

`train` reads any data file Atelier takes (CSV/TSV, JSON, JSON Lines, Parquet, .xlsx), searches
within the budget with a progress bar, prints the leaderboard and writes a model folder (see
`automl.artifacts`); `predict` applies a model folder to a CSV or Parquet file and writes one
row per input row, in order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(help="Train and apply AutoML models on files (no server needed).")
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # a long path stays on one line


def _read(path: Path) -> Any:
    """The file as an Arrow table, or exit 2 with what is wrong with it."""
    from atelier.core.errors import AtelierError
    from atelier.datasets import formats
    from atelier.settings import DatasetsSettings

    if not path.is_file():
        errors.print(f"No such file: {path}", markup=False)
        raise typer.Exit(2)
    limits = DatasetsSettings()
    try:
        return formats.read_table(
            path,
            formats.Limits(
                max_rows=limits.max_rows,
                max_columns=limits.max_columns,
                max_xlsx_uncompressed_bytes=limits.max_xlsx_uncompressed_bytes,
            ),
        ).table
    except AtelierError as exc:
        errors.print(f"{path}: {exc.detail}", markup=False)
        raise typer.Exit(2) from None


@app.command("train")
def train(
    data: Annotated[
        Path, typer.Argument(help="A CSV/TSV, JSON, JSON Lines, Parquet or .xlsx file.")
    ],
    target: Annotated[str, typer.Option(help="The column to predict.")],
    out: Annotated[Path, typer.Option(help="The model folder to write.")],
    budget: Annotated[int, typer.Option(min=10, max=86400, help="Seconds for the search.")] = 60,
    metric: Annotated[str | None, typer.Option(help="Default: by task.")] = None,
    task: Annotated[str | None, typer.Option(help="binary, multiclass or regression.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="A column to leave out.")] = None,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Search models for TARGET within the budget, then write the best to OUT."""
    from atelier.automl import artifacts
    from atelier.automl.engine import NoModelTrained, TrainConfig
    from atelier.automl.engine import train as search
    from atelier.automl.report import build_report, render_html

    if task is not None and task not in ("binary", "multiclass", "regression"):
        errors.print("--task is binary, multiclass or regression", markup=False)
        raise typer.Exit(2)
    table = _read(data)
    config = TrainConfig(
        target=target,
        task=task,  # type: ignore[arg-type]
        metric=metric,
        budget_seconds=float(budget),
        seed=seed,
        exclude=tuple(exclude or ()),
    )
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("searching", total=float(budget), status="starting")

        def on_progress(update: Any) -> None:
            best = "–" if update.best_score is None else f"{update.best_score:.4f}"
            progress.update(
                bar,
                completed=min(update.elapsed_seconds, float(budget)),
                status=f"{update.trials} trials · best {best}",
            )

        try:
            result = search(table, config, on_progress=on_progress)
        except ValueError as exc:
            errors.print(f"Cannot train: {exc}", markup=False)
            raise typer.Exit(2) from None
        except NoModelTrained as exc:
            errors.print(f"No model: {exc}", markup=False)
            raise typer.Exit(1) from None
        progress.update(bar, completed=float(budget), status="done")
    _print_leaderboard(result)
    run = {
        "id": None,
        "dataset_name": data.name,
        "dataset_version": None,
        "target": target,
        "budget_seconds": float(budget),
        "seed": seed,
    }
    report = build_report(run, {"rows": table.num_rows, "columns": table.num_columns}, result)
    artifacts.save(
        out,
        result.model,
        target=target,
        metric=result.metric,
        report=report,
        report_html=render_html(report),
    )
    holdout = ", ".join(
        f"{name} {value:.4f}"
        for name, value in result.holdout_metrics.items()
        if value is not None and math.isfinite(value)
    )
    console.print(f"Holdout: {holdout}", markup=False)
    console.print(f"Model, signature and report written to {out}", markup=False)


def _print_leaderboard(result: Any, shown: int = 10) -> None:
    table = Table(title=f"Leaderboard ({result.task}, {result.metric})")
    for column in ("rank", "model", "learner", f"cv {result.metric}", "fit s", "weight"):
        table.add_column(column, justify="right" if column != "learner" else "left")
    for entry in result.leaderboard[:shown]:
        score = entry.get("cv_score")
        table.add_row(
            str(entry.get("rank", "")),
            str(entry.get("id", "")),
            str(entry.get("learner", "")),
            "–" if score is None or not math.isfinite(score) else f"{score:.4f}",
            f"{entry.get('fit_seconds') or 0:.2f}",
            f"{entry.get('in_ensemble') or 0:.2f}" if entry.get("in_ensemble") else "",
        )
    console.print(table)


@app.command("predict")
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model folder from `automl train`.")],
    data: Annotated[Path, typer.Argument(help="A CSV or Parquet file with a header row.")],
    out: Annotated[Path, typer.Option(help="The CSV file of predictions to write.")],
    proba: Annotated[bool, typer.Option(help="Add one proba_<class> column per class.")] = False,
) -> None:
    """Predict for every row of DATA, in order: a `prediction` column (a class or a number)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from atelier.automl import artifacts

    try:
        model, _ = artifacts.load(model_dir)
    except (FileNotFoundError, artifacts.UntrustedModel) as exc:
        errors.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    table = _read(data)
    try:
        columns: dict[str, Any] = {"prediction": model.predict(table)}
        if proba:
            if model.task == "regression":
                errors.print("--proba is for classification models", markup=False)
                raise typer.Exit(2)
            probabilities = model.predict_proba(table)
            for index, label in enumerate(model.classes):
                columns[f"proba_{label}"] = probabilities[:, index]
    except ValueError as exc:
        errors.print(f"Cannot predict: {exc}", markup=False)
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    pa_csv.write_csv(pa.table(columns), out)
    console.print(f"{table.num_rows} predictions written to {out}", markup=False)
