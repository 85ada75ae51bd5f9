"""What an uploaded model file is, decided from its bytes, and what it may be read as.

Two formats are accepted: ONNX (a protobuf graph, run by onnxruntime, which executes no Python)
and skops (a zip of data that `skops.io` rebuilds only once its schema has passed Atelier's
exact allow-list, `automl.skops_allowlist`, and only in a child process, `registry.isolated`).
Pickle and everything built on it (joblib, cloudpickle, PyTorch's zip of pickles) runs arbitrary
code when loaded, so such a file is recognised and refused without ever being deserialized.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.core.errors import InvalidInput, UnsupportedMediaType

ONNX, SKOPS, ATELIER = "onnx", "skops", "atelier"
ATELIER_MODEL_TYPE = "atelier.automl.model.AutomlModel"
_PICKLE_NAMES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".bin", ".sav")
# Leading bytes of the compressors joblib writes a pickle through (zlib, gzip, bz2, xz, lzma,
# lz4) and of joblib's own old compressed header.
_COMPRESSED = (
    b"\x78\x01",
    b"\x78\x5e",
    b"\x78\x9c",
    b"\x78\xda",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"\x5d\x00\x00",
    b"\x04\x22\x4d\x18",
    b"ZF0x",
)
PICKLE_REFUSED = (
    "Pickle-based files (pickle, joblib, cloudpickle, PyTorch checkpoints) are refused: loading "
    "one runs whatever code it holds. Save the model with skops (skops.io.dump) or convert it "
    "to ONNX (skl2onnx, onnxmltools), then upload that."
)


class PickleRefused(UnsupportedMediaType):
    """A pickle-based model file; refused unread."""

    slug = "pickle-refused"
    title = "Pickle files are not accepted"


@dataclass(frozen=True)
class Detected:
    format: str  # ONNX or SKOPS (an Atelier model is a skops file holding an AutomlModel)
    details: dict[str, Any]


def detect(path: Path) -> Detected:
    """ONNX or skops, from the content; PickleRefused, or UnsupportedMediaType for anything else."""
    with path.open("rb") as file:
        head = file.read(_HEAD)
    if not head:
        raise InvalidInput("The model file is empty")
    if zipfile.is_zipfile(path):
        return _from_zip(path)
    if _looks_like_pickle(head):
        raise PickleRefused(PICKLE_REFUSED)
    if head[:1] == b"\x08":  # ModelProto's first field, ir_version, as protobuf writes it
        return Detected(ONNX, {})
    raise UnsupportedMediaType(
        "Not a model file Atelier reads: upload an ONNX model (.onnx) or a skops file (.skops)"
    )


_HEAD = 256
_GLOBAL = re.compile(r"[A-Za-z_][\w.]* [A-Za-z_][\w.]*")


def _looks_like_pickle(head: bytes) -> bool:
    protocol_2_plus = head[:1] == b"\x80" and 2 <= head[1] <= 5 if len(head) > 1 else False
    # Protocols 0 and 1 open with MARK, GLOBAL, an empty list or dict (the usual first opcodes);
    # a text file may too, so the opening bytes must also decode as pickle opcodes.
    old_protocol = head[:1] in (b"(", b"c", b"}", b"]") and _decodes_as_pickle(head)
    return protocol_2_plus or old_protocol or head.startswith(_COMPRESSED)


def _decodes_as_pickle(head: bytes) -> bool:
    """Whether `head` reads as the start of a pickle: its opcodes are only decoded (pickletools
    builds nothing and imports nothing), up to the end of `head`."""
    stream = io.BytesIO(head)
    decoded = 0
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            if opcode.name in ("GLOBAL", "INST") and not _GLOBAL.fullmatch(str(arg)):
                return False  # "module name" of a real pickle; text gives anything
            decoded += 1
    except ValueError:  # a bad opcode or argument, or an opcode cut off by the end of `head`
        cut_off = len(head) == _HEAD and stream.tell() == len(head)
        return cut_off and decoded >= 2
    return decoded >= 2


def _from_zip(path: Path) -> Detected:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "schema.json" in names:
                schema = json.loads(archive.read("schema.json"))
                if not isinstance(schema, dict) or "__loader__" not in schema:
                    raise InvalidInput("The zip holds a schema.json that is not a skops schema")
                return Detected(SKOPS, {"skops_protocol": schema.get("protocol")})
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise InvalidInput(f"The zip file is broken: {exc}") from None
    if any(name.lower().endswith(_PICKLE_NAMES) or "pickle" in name.lower() for name in names):
        raise PickleRefused(PICKLE_REFUSED + " (the zip holds a pickle)")
    raise UnsupportedMediaType(
        "A zip that is not a skops file: upload the .skops file (or an .onnx model) itself"
    )


def read_skops(path: Path) -> tuple[Any, str, dict[str, Any]]:
    """The model in a skops file, built only once its whole schema has passed the allow-list
    (`artifacts.load_checked`, which reads the schema once); its format (ATELIER for an AutoML
    model, else SKOPS) and signature (inputs, task, classes) as far as the estimator tells.
    Runs in `registry.isolated`'s child process, never in the API process: loading is where a
    file that got past the list would do harm."""
    from atelier.automl import artifacts

    try:
        model = artifacts.load_checked(path)
    except artifacts.UntrustedModel as exc:
        raise InvalidInput(
            str(exc) + ". Atelier loads only listed scikit-learn, LightGBM and XGBoost "
            "estimators, and no functions; the file was not loaded",
            untrusted_types=exc.types[:50],
        ) from None
    except (zipfile.BadZipFile, KeyError, RecursionError) as exc:  # no readable schema.json
        raise InvalidInput(f"The skops file is broken: {exc}") from None
    except Exception as exc:  # a file skops cannot rebuild, whatever the library raises
        raise InvalidInput(f"The skops file could not be read: {exc}") from None
    if f"{type(model).__module__}.{type(model).__qualname__}" == ATELIER_MODEL_TYPE:
        return model, ATELIER, artifacts.signature_of(model, target=None)
    return model, SKOPS, estimator_signature(model)


def estimator_signature(model: Any) -> dict[str, Any]:
    """What a scikit-learn compatible estimator says of its inputs and outputs."""
    from sklearn.base import is_classifier, is_regressor

    from atelier.automl.artifacts import SIGNATURE_VERSION
    from atelier.automl.jsonable import plain

    if not callable(getattr(model, "predict", None)):
        raise InvalidInput(f"A {type(model).__name__} cannot predict: upload a fitted estimator")
    names = getattr(model, "feature_names_in_", None)
    count = getattr(model, "n_features_in_", None)
    if names is None and count is None:
        raise InvalidInput(f"The {type(model).__name__} in the file is not fitted")
    names = [str(n) for n in names] if names is not None else [f"x{i}" for i in range(count)]
    classes = plain(list(model.classes_)) if hasattr(model, "classes_") else None
    if is_classifier(model) and classes is not None:
        task = "binary" if len(classes) == 2 else "multiclass"
    elif is_regressor(model):
        task = "regression"
    else:
        task = None
    outputs = [{"name": "prediction", "type": "number" if task == "regression" else "label"}]
    if classes and callable(getattr(model, "predict_proba", None)):
        outputs += [{"name": f"proba_{c}", "type": "number"} for c in classes]
    return {
        "version": SIGNATURE_VERSION,
        "task": task,
        "target": None,
        "metric": None,
        "estimator": f"{type(model).__module__}.{type(model).__qualname__}",
        "inputs": [{"name": n, "type": "number"} for n in names],
        "classes": classes,
        "outputs": outputs,
    }
