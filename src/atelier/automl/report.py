"""The report of an AutoML run: a structured JSON document, and the same as one HTML page.

`build_report` turns a search's result into the document programs (and the assistant) read:
data summary, leaderboard, the chosen ensemble with its members' parameters, cross-validated
and holdout metrics, the diagnostic curves computed from the holdout predictions (confusion
matrix, ROC and precision-recall curves for classification; residuals and predicted against
actual for regression), feature importance, the score over time and the dropped columns.
`render_html` draws it with no external asset: plots are inline SVG, every name from the data
is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from atelier.automl.jsonable import plain

MAX_CURVE_POINTS = 200
MAX_SCATTER_POINTS = 400
MAX_CURVE_CLASSES = 10
MAX_FEATURES_SHOWN = 20


def build_report(run: dict[str, Any], data: dict[str, Any], result: Any) -> dict[str, Any]:
    """The report document. `run`: id, dataset_name, dataset_version, target, budget_seconds,
    seed; `data`: rows and columns of the dataset version; `result`: an engine TrainResult."""
    task = result.task
    predictions = result.holdout_predictions
    y_true = np.asarray(predictions["y_true"])
    y_pred = np.asarray(predictions["y_pred"])
    report: dict[str, Any] = {
        "version": 1,
        "run": run,
        "data": {**data, "holdout_rows": len(y_true)},
        "task": task,
        "metric": result.metric,
        "classes": plain(result.classes),
        "cv_score": plain(result.cv_score),
        "holdout_metrics": plain(result.holdout_metrics),
        "leaderboard": plain(result.leaderboard),
        "ensemble": _ensemble(result),
        # Multiclass: the temperature applied to the ensemble's probabilities, and the log loss
        # before and after it (out of fold, and on the holdout).
        "calibration": plain(result.calibration),
        "dropped_columns": plain(result.dropped_columns),
        "preprocessing": plain(result.preprocessing),
        "feature_importance": {
            kind: _top(values) for kind, values in (result.feature_importance or {}).items()
        },
        "score_over_time": [[plain(t), plain(s)] for t, s in result.score_over_time],
        "elapsed_seconds": plain(result.elapsed_seconds),
        "library_versions": plain(result.library_versions),
    }
    if task == "regression":
        report["diagnostics"] = _regression(y_true.astype(float), y_pred.astype(float))
    else:
        proba = predictions.get("probabilities", predictions.get("proba"))
        report["diagnostics"] = _classification(
            y_true,
            y_pred,
            None if proba is None else np.asarray(proba, dtype=float),
            list(result.classes),
        )
    return report


def _ensemble(result: Any) -> list[dict[str, Any]]:
    by_id = {str(entry.get("id")): entry for entry in result.leaderboard}
    members = []
    for trial_id, weight in sorted(result.ensemble.items(), key=lambda kv: -kv[1]):
        entry = by_id.get(str(trial_id), {})
        members.append(
            {
                "id": str(trial_id),
                "weight": plain(weight),
                "learner": entry.get("learner"),
                "params": plain(entry.get("params", {})),
                "cv_score": plain(entry.get("cv_score")),
            }
        )
    return members


def _top(values: dict[str, float]) -> list[dict[str, Any]]:
    ordered = sorted(values.items(), key=lambda kv: (-abs(_num(kv[1])), kv[0]))
    return [{"feature": k, "importance": plain(v)} for k, v in ordered[:MAX_FEATURES_SHOWN]]


# ---- diagnostics ------------------------------------------------------------------------------


def _classification(
    y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None, classes: list[Any]
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

    labels = [str(c) for c in classes]
    truth = np.array([str(v) for v in y_true])
    guess = np.array([str(v) for v in y_pred])
    matrix = confusion_matrix(truth, guess, labels=labels)
    diagnostics: dict[str, Any] = {
        "confusion_matrix": {"labels": labels, "counts": matrix.tolist()},
        "roc": [],
        "precision_recall": [],
    }
    if proba is None or proba.ndim != 2 or proba.shape[1] != len(labels):
        return diagnostics
    # Binary: the curves of the positive (second) class; more classes: one against the rest.
    shown = [1] if len(labels) == 2 else list(range(min(len(labels), MAX_CURVE_CLASSES)))
    for index in shown:
        positive = truth == labels[index]
        if positive.all() or not positive.any():
            continue
        scores = proba[:, index]
        fpr, tpr, _ = roc_curve(positive, scores)
        precision, recall, _ = precision_recall_curve(positive, scores)
        diagnostics["roc"].append(
            {
                "class": labels[index],
                "auc": plain(roc_auc_score(positive, scores)),
                "points": _thin(list(zip(fpr, tpr, strict=True))),
            }
        )
        diagnostics["precision_recall"].append(
            {
                "class": labels[index],
                "points": _thin(list(zip(recall[::-1], precision[::-1], strict=True))),
            }
        )
    return diagnostics


def _regression(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    residuals = y_true - y_pred
    step = max(1, math.ceil(len(y_true) / MAX_SCATTER_POINTS))
    order = np.argsort(y_true, kind="stable")[::step]
    return {
        "predicted_vs_actual": [[plain(y_true[i]), plain(y_pred[i])] for i in order],
        "residuals": [[plain(y_pred[i]), plain(residuals[i])] for i in order],
        "residual_summary": {
            "mean": plain(residuals.mean()) if len(residuals) else None,
            "std": plain(residuals.std()) if len(residuals) else None,
            "max_abs": plain(np.abs(residuals).max()) if len(residuals) else None,
        },
    }


def _thin(points: Sequence[tuple[float, float]]) -> list[list[float | None]]:
    step = max(1, math.ceil(len(points) / MAX_CURVE_POINTS))
    kept = list(points[::step])
    if points and kept[-1] != points[-1]:
        kept.append(points[-1])
    return [[plain(x), plain(y)] for x, y in kept]


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


# ---- HTML -------------------------------------------------------------------------------------

_env = Environment(
    loader=PackageLoader("atelier.automl", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    charts: dict[str, Any] = {
        "score_over_time": line_chart(
            [("best", report["score_over_time"])], x_label="seconds", y_label=report["metric"]
        ),
        "importance": {
            kind: bar_chart([(i["feature"], _num(i["importance"])) for i in items])
            for kind, items in report["feature_importance"].items()
            if items
        },
    }
    diagnostics = report.get("diagnostics", {})
    if report["task"] == "regression":
        charts["predicted_vs_actual"] = scatter_chart(
            diagnostics.get("predicted_vs_actual", []),
            x_label="actual",
            y_label="predicted",
            diagonal=True,
        )
        charts["residuals"] = scatter_chart(
            diagnostics.get("residuals", []), x_label="predicted", y_label="residual"
        )
    else:
        matrix = diagnostics.get("confusion_matrix")
        if matrix:
            charts["confusion"] = heatmap(matrix["labels"], matrix["counts"])
        charts["roc"] = line_chart(
            [(c["class"], c["points"]) for c in diagnostics.get("roc", [])],
            x_label="false positive rate",
            y_label="true positive rate",
            unit_square=True,
            diagonal=True,
        )
        charts["pr"] = line_chart(
            [(c["class"], c["points"]) for c in diagnostics.get("precision_recall", [])],
            x_label="recall",
            y_label="precision",
            unit_square=True,
        )
    return _env.get_template("report.html").render(report=report, charts=charts)


# ---- SVG ---------------------------------------------------------------------------------------

WIDTH, HEIGHT, PAD = 480, 300, 44
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


def _scale(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low, high = min(finite, default=0.0), max(finite, default=1.0)
    if high <= low:
        high = low + 1.0
    return low, high


def _frame(x_label: str, y_label: str, xs: tuple[float, float], ys: tuple[float, float]) -> str:
    x0, y0, x1, y1 = PAD, HEIGHT - PAD, WIDTH - 12, 12
    middle = (y0 + y1) / 2
    return (
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#9ca3af"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#9ca3af"/>'
        f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 12 {middle})">{escape(y_label)}</text>'
        f'<text x="{x0}" y="{y0 + 14}" text-anchor="middle">{_tick(xs[0])}</text>'
        f'<text x="{x1}" y="{y0 + 14}" text-anchor="end">{_tick(xs[1])}</text>'
        f'<text x="{x0 - 4}" y="{y0}" text-anchor="end">{_tick(ys[0])}</text>'
        f'<text x="{x0 - 4}" y="{y1 + 8}" text-anchor="end">{_tick(ys[1])}</text>'
    )


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _project(
    x: float, y: float, xs: tuple[float, float], ys: tuple[float, float]
) -> tuple[float, float]:
    x0, y0, x1, y1 = PAD, HEIGHT - PAD, WIDTH - 12, 12
    px = x0 + (x - xs[0]) / (xs[1] - xs[0]) * (x1 - x0)
    py = y0 - (y - ys[0]) / (ys[1] - ys[0]) * (y0 - y1)
    return round(px, 1), round(py, 1)


def _svg(body: str, label: str, *, width: float = WIDTH, height: float = HEIGHT) -> Markup:
    """The chart as markup. Every text that comes from the data (names, labels) went through
    `escape` on its way into `body`; the rest is numbers and fixed strings."""
    return Markup(  # noqa: S704 - see above
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        f'class="chart">{body}</svg>'
    )


def _dashed(a: tuple[float, float], b: tuple[float, float]) -> str:
    return (
        f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#d1d5db" '
        'stroke-dasharray="4"/>'
    )


def line_chart(
    series: list[tuple[str, list[list[float | None]]]],
    *,
    x_label: str,
    y_label: str,
    unit_square: bool = False,
    diagonal: bool = False,
) -> Markup:
    points = [(x, y) for _, pts in series for x, y in pts if x is not None and y is not None]
    if not points:
        return Markup("")
    xs = (0.0, 1.0) if unit_square else _scale([p[0] for p in points])
    ys = (0.0, 1.0) if unit_square else _scale([p[1] for p in points])
    body = _frame(x_label, y_label, xs, ys)
    if diagonal:
        body += _dashed(_project(xs[0], ys[0], xs, ys), _project(xs[1], ys[1], xs, ys))
    for index, (name, pts) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        projected = [_project(x, y, xs, ys) for x, y in pts if x is not None and y is not None]
        path = " ".join(f"{px},{py}" for px, py in projected)
        body += f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
        if len(series) > 1:
            body += (
                f'<text x="{WIDTH - 16}" y="{24 + 14 * index}" text-anchor="end" '
                f'fill="{color}">{escape(str(name))}</text>'
            )
    return _svg(body, f"{y_label} against {x_label}")


def scatter_chart(
    points: list[list[float | None]], *, x_label: str, y_label: str, diagonal: bool = False
) -> Markup:
    pts = [(x, y) for x, y in points if x is not None and y is not None]
    if not pts:
        return Markup("")
    if diagonal:
        xs = ys = _scale([p[0] for p in pts] + [p[1] for p in pts])
    else:
        xs, ys = _scale([p[0] for p in pts]), _scale([p[1] for p in pts])
    body = _frame(x_label, y_label, xs, ys)
    if diagonal:
        body += _dashed(_project(xs[0], ys[0], xs, ys), _project(xs[1], ys[1], xs, ys))
    elif ys[0] < 0 < ys[1]:
        body += _dashed(_project(xs[0], 0, xs, ys), _project(xs[1], 0, xs, ys))
    for x, y in pts:
        px, py = _project(x, y, xs, ys)
        body += f'<circle cx="{px}" cy="{py}" r="2.5" fill="{COLORS[0]}" fill-opacity="0.6"/>'
    return _svg(body, f"{y_label} against {x_label}")


def bar_chart(items: list[tuple[str, float]]) -> Markup:
    if not items:
        return Markup("")
    height = 22 * len(items) + 16
    top = max((abs(v) for _, v in items), default=1.0) or 1.0
    body = ""
    for index, (name, value) in enumerate(items):
        y = 8 + 22 * index
        width = abs(value) / top * (WIDTH - 220)
        body += (
            f'<text x="176" y="{y + 14}" text-anchor="end">{escape(_short(name))}</text>'
            f'<rect x="182" y="{y + 3}" width="{width:.1f}" height="14" fill="{COLORS[0]}"/>'
            f'<text x="{186 + width:.1f}" y="{y + 14}">{_tick(value)}</text>'
        )
    return _svg(body, "feature importance", height=height)


def heatmap(labels: list[str], counts: list[list[int]]) -> Markup:
    n = len(labels)
    if n == 0:
        return Markup("")
    cell = max(18, min(48, 300 // n))
    left, top = 120, 24
    size_x, size_y = left + cell * n + 8, top + cell * n + 40
    peak = max((v for row in counts for v in row), default=1) or 1
    body = ""
    for i, row in enumerate(counts):
        body += (
            f'<text x="{left - 6}" y="{top + cell * i + cell / 2 + 4}" '
            f'text-anchor="end">{escape(_short(labels[i]))}</text>'
        )
        for j, value in enumerate(row):
            shade = 0.08 + 0.85 * value / peak
            x, y = left + cell * j, top + cell * i
            body += (
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{COLORS[0]}" '
                f'fill-opacity="{shade:.2f}"/><text x="{x + cell / 2}" y="{y + cell / 2 + 4}" '
                f'text-anchor="middle">{value}</text>'
            )
    for j, label in enumerate(labels):
        body += (
            f'<text x="{left + cell * j + cell / 2}" y="{top + cell * n + 16}" '
            f'text-anchor="middle">{escape(_short(label, 8))}</text>'
        )
    return _svg(body, "confusion matrix", width=size_x, height=size_y)


def _short(text: str, limit: int = 24) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
