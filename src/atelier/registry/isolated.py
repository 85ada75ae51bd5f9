"""Reading an uploaded skops file in a short-lived child process, never in the API process.

`prepare_skops` runs `python -m atelier.registry.isolated` on the file. The child checks the
schema against the allow-list (`automl.skops_allowlist`), builds the model only once the whole
file has passed, reads its signature and, where it can, converts it to ONNX (`model.onnx` in the
version folder). It answers with a small JSON file and nothing else: the API process unpickles
nothing from a child that may have been handed a hostile file, and reads no more than
`MAX_ANSWER_BYTES` of it. A child that runs past its time limit is killed; one that dies (a
crash in a native library reading the file, or memory past its address-space limit) leaves a
refused upload, not a broken server.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path
from typing import Any

from atelier.core.errors import InvalidInput

TIMEOUT_SECONDS = 300.0
# The child's address space (RLIMIT_AS): numpy, scikit-learn, LightGBM, XGBoost and
# onnxruntime map about 0.7 GiB of it on import (VmPeak), so this leaves the model a few GiB; a
# file that inflates past them (a forest declared with billions of nodes) fails in the child.
MEMORY_LIMIT_BYTES = 6 * 1024**3
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_ANSWER = "answer.json"
_REQUEST = "request.json"


async def prepare_skops(
    source: Path,
    folder: Path,
    *,
    onnx_export: bool,
    limit_seconds: float = TIMEOUT_SECONDS,
    limit_bytes: int = MEMORY_LIMIT_BYTES,
) -> dict[str, Any]:
    """`{"format", "signature", "onnx_export", "onnx_note"}` for the skops file `source`, read in
    a child process that writes `model.onnx` into `folder` when the model converts.
    InvalidInput when the file is refused, cannot be read, or takes over `limit_seconds` or
    an address space over `limit_bytes`."""
    answer, request = folder.parent / _ANSWER, folder.parent / _REQUEST
    asked = {"model": str(source), "folder": str(folder), "answer": str(answer)}
    asked |= {"onnx_export": onnx_export, "limit_bytes": limit_bytes}
    await asyncio.to_thread(request.write_text, json.dumps(asked))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atelier.registry.isolated",
        str(request),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,  # stderr goes to the server's: a traceback is logged
    )
    try:
        code = await asyncio.wait_for(child.wait(), limit_seconds)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise InvalidInput(
            f"Reading the model file took longer than {limit_seconds:g} seconds; it was not kept"
        ) from None
    finally:
        if child.returncode is None:  # cancelled (the client went away): leave no child behind
            child.kill()
    return await asyncio.to_thread(_read_answer, answer, code)


def _read_answer(answer: Path, code: int) -> dict[str, Any]:
    if code != 0 or not answer.is_file():
        raise InvalidInput(f"The skops file could not be read (the reader exited with {code})")
    if answer.stat().st_size > MAX_ANSWER_BYTES:
        raise InvalidInput("The model's signature is too large")
    result = json.loads(answer.read_text())
    if "refused" in result:
        raise InvalidInput(result["refused"], **result.get("extra", {}))
    return {
        "format": str(result["format"]),
        "signature": dict(result["signature"]),
        "onnx_export": bool(result["onnx_export"]),
        "onnx_note": None if result["onnx_note"] is None else str(result["onnx_note"]),
    }


# ---- the child ------------------------------------------------------------------------------


def _prepare(source: Path, folder: Path, *, onnx_export: bool) -> dict[str, Any]:
    from atelier.registry import folders, formats

    model, model_format, signature = formats.read_skops(source)
    exported, note = False, "ONNX export is turned off (ATELIER_REGISTRY__ONNX_EXPORT)"
    if onnx_export:
        if model_format == formats.ATELIER:
            from atelier.registry.onnx_export import export

            result = export(model)
        else:
            from atelier.registry.onnx_upload import export_estimator

            result = export_estimator(model, signature)
        if result.onnx is not None:
            (folder / folders.ONNX_FILE).write_bytes(result.onnx)
            exported = True
        note = result.reason
    return {
        "format": model_format,
        "signature": signature,
        "onnx_export": exported,
        "onnx_note": note,
    }


def main(argv: list[str]) -> int:
    """The child: read the request, bound its own address space, answer in its answer file."""
    request = json.loads(Path(argv[1]).read_text())
    limit = int(request["limit_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = _prepare(
            Path(request["model"]), Path(request["folder"]), onnx_export=request["onnx_export"]
        )
    except InvalidInput as exc:
        result = {"refused": exc.detail, "extra": exc.extra}
    Path(request["answer"]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
