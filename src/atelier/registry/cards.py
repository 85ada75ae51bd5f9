"""A model card (Markdown) for a version, written from its signature and lineage.

It says what a reader needs before trusting the model: what it predicts from what, how it
was trained and evaluated, what was left out of the data and why, and what it cannot know.
Only facts Atelier holds go in; nothing is invented for an uploaded model it knows little of.
"""

from __future__ import annotations

from typing import Any


def model_card(
    *,
    name: str,
    number: int,
    format: str,
    signature: dict[str, Any],
    lineage: dict[str, Any],
    description: str | None = None,
    onnx_note: str | None = None,
) -> str:
    task = signature.get("task") or "unknown"
    lines = [f"# {_md(name)} — version {number}", ""]
    if description:
        lines += [_md(description), ""]
    lines += [
        "## Model details",
        "",
        f"- Task: {task}",
        f"- Format: {format}"
        + (" (Atelier AutoML ensemble, skops)" if format == "atelier" else ""),
        f"- Source: {lineage.get('source', 'unknown')}",
        f"- Created: {lineage.get('created_at', 'unknown')}"
        f" by {lineage.get('created_by') or 'unknown'}",
        f"- Atelier version: {lineage.get('atelier_version', 'unknown')}",
    ]
    if signature.get("target"):
        lines.append(f"- Predicts: `{_md(signature['target'])}`")
    if signature.get("classes"):
        lines.append(f"- Classes: {', '.join(f'`{_md(c)}`' for c in signature['classes'])}")
    if onnx_note:
        lines.append(f"- ONNX export: {_md(onnx_note)}")
    predicts = f"`{_md(signature['target'])}`" if signature.get("target") else "its output"
    lines += ["", "## Intended use", ""]
    lines += [
        f"Predicting {predicts} "
        "for rows shaped like the training data (the inputs below). It has not been checked for "
        "fairness, robustness or data outside the training range: review the evaluation and "
        "the dropped columns before relying on it.",
        "",
    ]
    dataset = lineage.get("dataset")
    if dataset:
        lines += [
            "## Training data",
            "",
            f"- Dataset: {_md(dataset.get('name'))} (`{dataset.get('id')}`), "
            f"version {dataset.get('version')}",
            f"- Rows: {dataset.get('rows', 'unknown')},"
            f" columns: {dataset.get('columns', 'unknown')}",
        ]
        if lineage.get("run_id"):
            lines.append(f"- AutoML run: `{lineage['run_id']}`")
        lines.append("")
    metrics = lineage.get("metrics") or {}
    if metrics:
        lines += ["## Evaluation", ""]
        if metrics.get("cv_score") is not None:
            lines.append(
                f"- Cross-validated {metrics.get('metric', 'score')}: {_num(metrics['cv_score'])}"
            )
        holdout = metrics.get("holdout") or {}
        if holdout:
            lines += [
                "- On a holdout the search never saw:",
                "",
                "| metric | value |",
                "|---|---|",
            ]
            lines += [f"| {_md(k)} | {_num(v)} |" for k, v in sorted(holdout.items())]
        lines.append("")
    ensemble = (lineage.get("parameters") or {}).get("ensemble") or []
    if ensemble:
        lines += ["## Ensemble", "", "| learner | weight | parameters |", "|---|---|---|"]
        for member in ensemble:
            params = ", ".join(f"{k}={v}" for k, v in sorted((member.get("params") or {}).items()))
            lines.append(
                f"| {_md(member.get('learner'))} | {_num(member.get('weight'))} | {_md(params)} |"
            )
        lines.append("")
    inputs = signature.get("inputs") or []
    if inputs:
        lines += ["## Inputs", "", "| column | type | categories |", "|---|---|---|"]
        for column in inputs:
            categories = column.get("categories") or []
            shown = ", ".join(_md(c) for c in categories[:10]) + (
                " …" if len(categories) > 10 else ""
            )
            lines.append(f"| {_md(column.get('name'))} | {_md(column.get('type'))} | {shown} |")
        lines.append("")
    dropped = lineage.get("dropped_columns") or []
    if dropped:
        lines += ["## Columns left out", "", "| column | why |", "|---|---|"]
        lines += [
            f"| {_md(d.get('column', d.get('name')))} | {_md(d.get('reason'))} |" for d in dropped
        ]
        lines.append("")
    lines += ["## Limitations", ""]
    lines += [
        "- Every input column above must be sent; a value may be missing.",
        "- Categories not seen in training (or past the most frequent ones kept) share one "
        "'other' group.",
    ]
    if not metrics:
        lines.append(
            "- Atelier has no evaluation of this model: it was uploaded, not trained here."
        )
    libraries = lineage.get("library_versions") or {}
    if libraries:
        lines += ["", "## Libraries", ""]
        lines += [f"- {_md(k)} {_md(v)}" for k, v in sorted(libraries.items())]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md(value: Any) -> str:
    """Text from data, made safe inside a Markdown table or line."""
    return str(value).replace("|", "\\|").replace("\n", " ").replace("`", "'")
