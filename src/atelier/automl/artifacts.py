"""A trained model on disk: saved with skops, loaded only from an allow-list of types.

A model folder holds `model.skops` (the fitted `AutomlModel`), `signature.json` (the task, the
target, the input columns with their types and categories, the classes), and the run's report
as `report.json` and `report.html` when there is one. Pickle is never used: skops reads the file
as data and builds only objects of the allowed modules; anything else is refused before a
single object is made.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from atelier.automl.jsonable import plain

MODEL_FILE = "model.skops"
SIGNATURE_FILE = "signature.json"
SIGNATURE_VERSION = 1
# What a model file may contain: the libraries AutoML trains with, and Atelier's own model.
TRUSTED_PREFIXES = (
    "atelier.automl.",
    "sklearn.",
    "lightgbm.",
    "xgboost.",
    "scipy.sparse.",
    "numpy.random.",
)
TRUSTED_TYPES = frozenset(
    {"collections.OrderedDict", "collections.defaultdict", "numpy.dtype", "functools.partial"}
)
# Functions a model may refer to (scikit-learn's own, e.g. HistGradientBoosting's input check
# inside a FunctionTransformer). Any other function is refused even where skops would trust it
# (a numpy ufunc): a transformer holding a function runs it at prediction time.
TRUSTED_FUNCTION_PREFIX = "sklearn."


class UntrustedModel(ValueError):
    """A model file holding types outside the allow-list; nothing of it was loaded."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        super().__init__(
            "The model file holds types that are not allowed: "
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
    """The types and functions in a skops file outside the allow-list, reading the file as data
    only: what skops itself does not trust and Atelier does not allow, and every function that
    is not scikit-learn's, even where skops would trust it."""
    import skops.io as sio

    untrusted = {t for t in sio.get_untrusted_types(file=path) if not _trusted(t)}
    functions = {f for f in _functions_in(path) if not f.startswith(TRUSTED_FUNCTION_PREFIX)}
    return sorted(untrusted | functions)


def _functions_in(path: Path) -> set[str]:
    """Every function (`module.name`) the file's schema refers to."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("__loader__") == "FunctionNode":
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def load(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The model and its signature; UntrustedModel if the file holds a disallowed type."""
    import skops.io as sio

    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No {MODEL_FILE} in {folder}: is this a model folder?")
    refused = untrusted_types(path)
    if refused:
        raise UntrustedModel(refused)
    trusted = sio.get_untrusted_types(file=path)
    model = sio.load(path, trusted=trusted)
    signature_path = folder / SIGNATURE_FILE
    signature = json.loads(signature_path.read_text()) if signature_path.is_file() else {}
    return model, signature


def _trusted(type_name: str) -> bool:
    return type_name in TRUSTED_TYPES or type_name.startswith(TRUSTED_PREFIXES)
