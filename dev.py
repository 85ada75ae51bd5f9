#!/usr/bin/env python3
"""Atelier's two everyday commands, on a fresh machine with nothing but Python 3.11+:

    python3 dev.py up      start Atelier with embedded defaults at http://127.0.0.1:8000
    python3 dev.py test    run the test suite (pytest arguments may follow)

Both install the locked environment first (into .venv, with uv; uv itself is fetched from PyPI
into .tools/ when it is not on the PATH). `python3 dev.py sync` only installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
UV_VERSION = "0.13.9"
BIN = "Scripts" if os.name == "nt" else "bin"
USAGE = "usage: python3 dev.py {up|test|sync} [arguments...]"


def uv() -> str:
    found = shutil.which("uv")
    if found:
        return found
    tools = ROOT / ".tools"
    local = tools / BIN / ("uv.exe" if os.name == "nt" else "uv")
    if not local.exists():
        print(f"Installing uv {UV_VERSION} into {tools} ...", file=sys.stderr)
        venv.create(tools, with_pip=True)
        subprocess.run(
            [str(tools / BIN / "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"],
            check=True,
        )
    return str(local)


def sync(*, dev: bool) -> None:
    command = [uv(), "sync", "--locked", "--python", sys.executable]
    command += ["--extra", "postgres", "--extra", "ml", "--extra", "mlflow"]
    # Bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set, every process
    # (each worker, each CLI call) would otherwise compile every module again (~5 s).
    command += ["--compile-bytecode"]
    command += [] if dev else ["--no-dev", "--inexact"]
    subprocess.run(command, cwd=ROOT, check=True, env=_env())
    # The project's own sources are installed editable: compile them too (Python reads .pyc
    # files even when it may not write them).
    subprocess.run(
        [str(ROOT / ".venv" / BIN / "python"), "-m", "compileall", "-q", "-j", "0", "src"],
        cwd=ROOT,
        check=True,
        env=_env(),
    )


def run(*args: str, cwd: Path | None = None) -> int:
    """Run a program from the project's environment."""
    program = ROOT / ".venv" / BIN / args[0]
    return subprocess.run([str(program), *args[1:]], cwd=cwd, env=_env(), check=False).returncode


def _env() -> dict[str, str]:
    # uv must use this interpreter and never download one (only package registries are reachable
    # on some machines); the project's virtual environment lives in .venv.
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_PROJECT_ENVIRONMENT=str(ROOT / ".venv"))
    env.pop("VIRTUAL_ENV", None)
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"up", "test", "sync"}:
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs under whatever python3 is
        print("Atelier needs Python 3.11 or newer.", file=sys.stderr)
        return 2
    if command == "up":
        sync(dev=False)
        return run("atelier", "up", *rest)
    sync(dev=True)
    if command == "sync":
        return 0
    return run("pytest", *rest, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
