#!/usr/bin/env bash
# Creates one virtual environment per peer system under bench/automl/.venvs/, so that no peer's
# pins ever constrain Atelier's own environment (/work/main/.venv is never touched).
#
#   nice -n 19 bash bench/automl/setup_envs.sh [flaml mljar autogluon lightgbm data]
#
# data:      builds the data sets (scikit-learn, palmerpenguins, vega_datasets, statsmodels)
# lightgbm:  a default LightGBM baseline
# flaml:     FLAML as users install it, with the [automl] extra (pulls xgboost<3 and its CUDA NCCL)
# mljar:     mljar-supervised
# autogluon: AutoGluon-Tabular with its LightGBM/CatBoost/XGBoost model extras only (no torch)
# Installed versions are written to bench/automl/.venvs/<name>/versions.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
uv="${UV:-$root/.tools/bin/uv}"
command -v "$uv" >/dev/null 2>&1 || uv="$(command -v uv)"
python="${BENCH_PYTHON:-/root/.pyenv/versions/3.11.7/bin/python3.11}"
venvs="$here/.venvs"
common=(pandas pyarrow scikit-learn)

declare -A pkgs=(
  [data]="palmerpenguins vega_datasets statsmodels"
  [lightgbm]="lightgbm"
  [flaml]="flaml[automl]"
  [mljar]="mljar-supervised"
  [autogluon]="autogluon.tabular[lightgbm,catboost,xgboost]"
)

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(data lightgbm flaml mljar autogluon)
status=0
for name in "${targets[@]}"; do
  [ -n "${pkgs[$name]+x}" ] || { echo "unknown environment: $name" >&2; exit 2; }
  env="$venvs/$name"
  echo "== $name: ${pkgs[$name]}"
  "$uv" venv -q --allow-existing -p "$python" "$env"
  # shellcheck disable=SC2086
  if ! "$uv" pip install -q -p "$env/bin/python" ${pkgs[$name]} "${common[@]}"; then
    echo "!! $name failed to install" >&2
    status=1
    continue
  fi
  "$uv" pip list -p "$env/bin/python" --format freeze >"$env/versions.txt"
  size="$(du -sh "$env" | cut -f1)"
  cuda="$(grep -ciE '^(nvidia-|torch|triton)' "$env/versions.txt" || true)"
  echo "   $(wc -l <"$env/versions.txt") packages, $size, CUDA/torch packages: $cuda"
done
exit $status
