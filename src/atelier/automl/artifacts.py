"""A trained model on disk: saved with skops, loaded only through an exact allow-list.

A model folder holds `model.skops` (the fitted `AutomlModel`), `signature.json` (the task, the
target, the input columns with their types and categories, the classes), and the run's report
as `report.json` and `report.html` when there is one. Pickle is never used: the file's schema is
read as data and checked against `skops_allowlist` (exact types, no callables, no attribute that
shadows a method) before skops builds a single object from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atelier.automl import skops_allowlist
from atelier.automl.jsonable import plain

MODEL_FILE = "model.skops"
SIGNATURE_FILE = "signature.json"
SIGNATURE_VERSION = 1


class UntrustedModel(ValueError):
    """A model file holding types, functions or attributes outside the allow-list; nothing of
    it was loaded."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        super().__init__(
            "The model file holds types, functions or attributes that are not allowed: "
            + ", ".join(types[:10])
            + (" ..." if len(types) > 10 else "")
        )


def signature_of(model: Any, *, target: str, metric: str | None = None) -> dict[str, Any]:
    return {
        "version": SIGNATURE_VERSION,
        "task": model.task,
        "target": target,
        "metric": metric,
        "inputs": model.input_schema,
        "classes": plain(model.classes),
        "outputs": (
            [{"name": "prediction", "type": "number"}]
            if model.task == "regression"
            else [{"name": "prediction", "type": "label"}]
            + [{"name": f"proba_{c}", "type": "number"} for c in model.classes or []]
        ),
    }


def save(
    folder: Path,
    model: Any,
    *,
    target: str,
    metric: str | None = None,
    report: dict[str, Any] | None = None,
    report_html: str | None = None,
) -> Path:
    """Write the model folder (created if needed); returns the model file's path."""
    import skops.io as sio

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_FILE
    sio.dump(model, path)
    signature = signature_of(model, target=target, metric=metric)
    (folder / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2, ensure_ascii=False))
    if report is not None:
        (folder / "report.json").write_text(json.dumps(report, ensure_ascii=False))
    if report_html is not None:
        (folder / "report.html").write_text(report_html)
    return path


def untrusted_types(path: Path) -> list[str]:
    """What in a skops file is outside the allow-list (`skops_allowlist.refusals`), reading the
    file as data only; empty when it may be loaded."""
    return skops_allowlist.check_file(path)


def load_checked(path: Path) -> Any:
    """The object in a skops file, built only once the whole schema has passed the allow-list;
    UntrustedModel otherwise. skops' own audit must agree: any type it would need trusted
    beyond the list is refused too."""
    import skops.io as sio

    refused = untrusted_types(path)
    if refused:
        raise UntrustedModel(refused)
    needed = sio.get_untrusted_types(file=path)  # builds the node tree only, no object
    beyond = sorted(set(needed) - skops_allowlist.allowed_names())
    if beyond:
        raise UntrustedModel(beyond)
    return sio.load(path, trusted=needed)


def load(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The model and its signature; UntrustedModel if the file holds anything not allowed."""
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {MODEL_FILE} in {folder}: is this a model folder?")
    model = load_checked(path)
    signature_path = folder / SIGNATURE_FILE
    signature = json.loads(signature_path.read_text()) if signature_path.is_file() else {}
    return model, signature
