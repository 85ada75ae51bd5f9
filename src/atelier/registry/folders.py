"""A model version's folder: what it holds, and moving it in and out of its zip.

    version.json      {"format": "atelier" | "skops" | "onnx", "name": ..., "version": n}
    model.skops       the fitted model (formats atelier and skops), or
    model.onnx        the graph (format onnx), or an AutoML model's ONNX export
    signature.json    input columns and types, allowed categories, task, output classes
    lineage.json      where it came from: run, dataset version, parameters, metrics, libraries
    MODEL_CARD.md     the same for people
    report.json, report.html   an AutoML run's report

The zip is flat and written by Atelier; reading one back still takes only these names and
bounds what it unpacks, so a doctored zip cannot write elsewhere or fill the disk.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from atelier.core.errors import InvalidInput

VERSION_FILE = "version.json"
SKOPS_FILE = "model.skops"
ONNX_FILE = "model.onnx"
SIGNATURE_FILE = "signature.json"
LINEAGE_FILE = "lineage.json"
CARD_FILE = "MODEL_CARD.md"
REPORT_FILES = ("report.json", "report.html")
KNOWN_FILES = frozenset(
    {VERSION_FILE, SKOPS_FILE, ONNX_FILE, SIGNATURE_FILE, LINEAGE_FILE, CARD_FILE, *REPORT_FILES}
)


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def zip_folder(folder: Path, archive: Path) -> Path:
    """The folder's known files, flat, in a stable order (the same folder zips the same way)."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.iterdir()):
            if path.name in KNOWN_FILES:
                zipped.write(path, path.name)
    return archive


def unzip_folder(archive: Path, folder: Path, *, max_bytes: int) -> Path:
    """Unpack a model folder's zip (only its known, flat names; at most `max_bytes` in all)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if m.filename in KNOWN_FILES]
            if sum(m.file_size for m in members) > max_bytes:
                raise InvalidInput(f"The model folder unpacks to more than {max_bytes} bytes")
            for member in members:
                with zipped.open(member) as source, (folder / member.filename).open("wb") as out:
                    copied = 0
                    while chunk := source.read(1 << 20):
                        copied += len(chunk)
                        if copied > member.file_size:  # a size the directory lied about
                            raise InvalidInput("The model folder's zip is inconsistent")
                        out.write(chunk)
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"The model folder's zip is broken: {exc}") from None
    return folder
