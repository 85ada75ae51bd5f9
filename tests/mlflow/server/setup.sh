#!/usr/bin/env bash
# Creates tests/mlflow/server/.venv: the MLflow tracking server that tests/mlflow start on
# loopback, in a virtual environment of its own so that the full `mlflow` package and its pins
# never enter Atelier's environment (/work/main/.venv is never touched).
#
#   bash tests/mlflow/server/setup.sh
#
# Exact pins come from requirements.txt. Idempotent: when the environment already holds exactly
# that file (a stamp keeps its sha256), it returns at once; otherwise it syncs, so a changed pin
# or an interrupted install is repaired. Uses uv (on the PATH or in .tools/), or falls back to
# `python -m venv` + pip. Never downloads an interpreter: only package registries are reachable.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$here/.venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ -x "$venv/bin/mlflow" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "MLflow server environment up to date: $venv"
  exit 0
fi

python="${MLFLOW_SERVER_PYTHON:-$(command -v python3.11 || command -v python3)}"
uv="${UV:-$(command -v uv || true)}"
[ -n "$uv" ] || uv="$root/.tools/bin/uv"
started=$SECONDS
rm -f "$stamp"  # written last: a stamp always means a complete install
if [ -x "$uv" ]; then
  export UV_PYTHON_DOWNLOADS=never
  "$uv" venv -q --allow-existing -p "$python" "$venv"
  # Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set, each server start would
  # otherwise compile MLflow's modules again.
  "$uv" pip sync -q --compile-bytecode -p "$venv/bin/python" "$requirements"
else
  echo "uv not found; installing with pip (slower)" >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$requirements"
fi
"$venv/bin/mlflow" --version
echo "$want" >"$stamp"
echo "MLflow server environment ready in $((SECONDS - started)) s: $venv"
