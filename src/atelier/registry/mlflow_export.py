"""A model version as an MLflow pyfunc model, for teams that serve or compare models with MLflow.

The export is a standard MLflow model folder (`MLmodel`, requirements, the version's files under
`data/`) whose `python_function` flavor names a loader module, `atelier.registry.pyfunc`, instead
of a pickled Python object: MLflow's usual route (`python_model=`) would cloudpickle code into
the folder, and whoever loads it would run that pickle (P6). Loading the export therefore needs
Atelier installed (its `ml` extra, written into the requirements), and reads the model through
the same skops allow-list as Atelier itself. The MLflow signature comes from `signature.json`,
so MLflow checks inputs before the model sees them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from atelier import __version__
from atelier.automl import artifacts
from atelier.core.errors import ServiceUnavailable
from atelier.registry import folders
from atelier.registry.pyfunc import FORMATS, UnsupportedVersion

LOADER_MODULE = "atelier.registry.pyfunc"
DATA_NAME = "atelier_version"  # the version's files land in <export>/data/atelier_version/
# Polars dtype names (Atelier models), `number` (estimators), ONNX element types (graphs).
_INTEGERS = {f"{kind}{bits}" for kind in ("Int", "UInt", "int", "uint") for bits in (8, 16, 32, 64)}
_FLOATS = {"Float16", "Float32", "Float64", "Decimal", "number", "float16", "float", "double"}
_TEXT = {"String", "Utf8", "Categorical", "Enum", "string"}
_BOOLEANS = {"Boolean", "bool"}
_TIMES = {"Date", "Datetime"}


def export_pyfunc(version_dir: Path, out_dir: Path) -> Path:
    """Write the version folder as an MLflow pyfunc model at `out_dir` (created; it must not
    exist or be empty) and return it. `UnsupportedVersion` for a format it cannot serve,
    `artifacts.UntrustedModel` for a model file outside the allow-list, `ServiceUnavailable`
    where the MLflow client is not installed."""
    try:
        import mlflow.pyfunc
    except ImportError:
        raise ServiceUnavailable(
            "Exporting to MLflow needs the MLflow client: install Atelier with the `mlflow` "
            "extra (pip install 'atelier[mlflow]')"
        ) from None

    about = folders.read_json(version_dir, folders.VERSION_FILE)
    if about.get("format") not in FORMATS:
        raise UnsupportedVersion(
            f"Only versions of format {' or '.join(FORMATS)} export to MLflow, not "
            f"{about.get('format')!r}"
        )
    signature = folders.read_json(version_dir, folders.SIGNATURE_FILE)
    _check_model(version_dir, about["format"], signature)
    with tempfile.TemporaryDirectory(prefix="mlflow-export-") as work:
        staged = Path(work) / DATA_NAME
        staged.mkdir()
        # Only the files a version holds, and never a link: what MLflow copies is what we chose.
        for name in sorted(folders.KNOWN_FILES):
            source = version_dir / name
            if source.is_file() and not source.is_symlink():
                shutil.copyfile(source, staged / name)
        mlflow.pyfunc.save_model(
            str(out_dir),
            loader_module=LOADER_MODULE,
            data_path=str(staged),
            signature=model_signature(signature),
            pip_requirements=[f"atelier[ml]=={__version__}"],
            metadata={"atelier": {k: about.get(k) for k in ("format", "name", "version")}},
            # MLflow would otherwise copy the uv project of the current directory (Atelier's
            # own pyproject.toml and uv.lock, when run from a checkout) into the export.
            uv_project_path=work,
        )
    return out_dir


def _check_model(version_dir: Path, kind: str, signature: dict[str, Any]) -> None:
    """Refuse now what the loader would refuse later (the loader checks again: the exported
    folder may change on its way)."""
    name = folders.ONNX_FILE if kind == "onnx" else folders.SKOPS_FILE
    if not (version_dir / name).is_file():
        raise UnsupportedVersion(f"{version_dir} has no {name}")
    if kind != "onnx":
        refused = artifacts.untrusted_types(version_dir / name)
        if refused:
            raise artifacts.UntrustedModel(refused)
        return
    inputs = signature.get("inputs") or []
    matrix = [i["name"] for i in inputs if len(i.get("shape") or []) == 2 and i["shape"][1] != 1]
    if matrix:
        raise UnsupportedVersion(
            f"The graph takes a whole matrix as input {matrix[0]!r}, not named columns; MLflow's "
            "column signature cannot describe it"
        )


def model_signature(signature: dict[str, Any]) -> Any:
    """The MLflow `ModelSignature` of an Atelier signature: every input column with its type,
    and the outputs (`prediction`, `proba_<class>`)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec(_mlflow_type(c["type"]), c["name"]) for c in signature.get("inputs") or []]
    if not inputs:
        raise UnsupportedVersion("The version's signature names no input columns")
    outputs = _outputs(signature)
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs) if outputs else None)


def _outputs(signature: dict[str, Any]) -> list[Any] | None:
    """What `pyfunc.VersionPredictor.predict` answers; None where the label's type is unknown
    (a graph that names no classes)."""
    from mlflow.types import ColSpec

    classes = signature.get("classes")
    if signature.get("task") == "regression":
        return [ColSpec("double", "prediction")]
    if not classes:
        return None
    outputs = [ColSpec(_label_type(classes), "prediction")]
    # An Atelier model or an estimator lists its `proba_<class>` outputs; a graph has an output
    # named like probabilities.
    if any("prob" in str(o.get("name", "")).lower() for o in signature.get("outputs") or []):
        outputs += [ColSpec("double", f"proba_{c}") for c in classes]
    return outputs


def _mlflow_type(type_name: str) -> str:
    """MLflow's column type for a signature's input type."""
    base = str(type_name).split("(", 1)[0]
    if base in _INTEGERS:
        return "long"
    if base in _FLOATS:
        return "double"
    if base in _BOOLEANS:
        return "boolean"
    if base in _TIMES:
        return "datetime"
    if base in _TEXT:
        return "string"
    raise UnsupportedVersion(f"The input type {type_name!r} has no MLflow column type")


def _label_type(classes: list | None) -> str:
    if not classes:
        return "double"
    if all(isinstance(c, bool) for c in classes):
        return "boolean"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "long"
    if all(isinstance(c, float) for c in classes):
        return "double"
    return "string"
