#!/usr/bin/env bash
# GPU check: the CUDA paths of pand (gpu-marked tests, Stage NSD / PSC throughput, student latency) in one run,
# written to <out>/gpu_check.json and <out>/gpu_check.md. The measuring is bench/gpu_check.py; this script only
# prepares the environment and bounds the run in time.
#
#   bench/gpu_check.sh [--out DIR] [--stages tests,nsd,psc,latency,trt] [--budget-s S]   # on a CUDA GPU machine
#   bench/gpu_check.sh --dry-run [--out DIR]      # toy sizes on the CPU, in the current environment (~1 min)
#   bench/gpu_check.sh --dry-run --stages trt     # lists the TensorRT device checks (bench/trt_check.py)
#   make gpu-check                                # the same as the first line
#
# On a GPU machine with torch (CUDA) preinstalled and no package index, the script:
#   1. creates $PAND_GPU_VENV (default .venv-gpu) with --system-site-packages, so the preinstalled torch is used;
#   2. installs every wheel in $PAND_WHEELS (default bench/wheels) with --no-index --no-deps, then pand itself
#      (pip install --no-deps -e ./runtime -e .; when that cannot build offline, PYTHONPATH with the import names
#      pand_runtime -> runtime/ and pand_export -> export/ linked in $VENV/pand-src), and prints `pip check`;
#   3. runs bench/gpu_check.py under `timeout` ($PAND_GPU_CHECK_TIMEOUT, default 480 s; the Python side keeps to
#      its own --budget-s, 420 s by default, and rewrites the report after every stage).
#
# Filling bench/wheels/ on a Linux x86_64 machine that has a registry, with the GPU machine's Python version:
#   python3.12 -m pip wheel -w bench/wheels -r bench/gpu_check_wheels.txt   # wheels of it all (sdists built)
#   rm -f bench/wheels/torch-* bench/wheels/torchvision-* bench/wheels/triton-* bench/wheels/nvidia_*
#   (resolving dependencies pulls a torch; it goes, the machine's own torch is used). When the GPU machine lacks
#   torchvision, add the torchvision wheel built for ITS torch version and CUDA, from
#   https://download.pytorch.org/whl/<cuXYZ>/ (torch 2.11 -> torchvision 0.26). Whatever `pip check` still names
#   in a run's log goes into the same folder.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  esac
done

if [[ "$DRY_RUN" == 1 ]]; then
  # The current environment (the project's .venv when there is one); no installs, no GPU needed.
  PY="${PYTHON:-}"
  if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
  fi
  exec "$PY" bench/gpu_check.py "$@"
fi

BASE_PY="${PYTHON:-python3}"
VENV="${PAND_GPU_VENV:-.venv-gpu}"
WHEELS="${PAND_WHEELS:-bench/wheels}"
TIMEOUT_S="${PAND_GPU_CHECK_TIMEOUT:-480}"

"$BASE_PY" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"' || {
  echo "gpu_check: $BASE_PY needs a preinstalled torch that sees a CUDA GPU (or use --dry-run)" >&2; exit 2; }

if [[ ! -x "$VENV/bin/python" ]]; then
  # A venv without pip when ensurepip is missing (Debian without python3-venv): the base pip installs into it.
  "$BASE_PY" -m venv --system-site-packages "$VENV" || {
    rm -rf "$VENV"; "$BASE_PY" -m venv --system-site-packages --without-pip "$VENV"; }
fi
PY="$VENV/bin/python"
if "$PY" -m pip --version >/dev/null 2>&1; then
  PIP=("$PY" -m pip --disable-pip-version-check)
else
  PIP=("$BASE_PY" -m pip --disable-pip-version-check --python "$PY")
fi

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if (( ${#wheels[@]} )); then
  echo "gpu_check: installing ${#wheels[@]} wheel(s) from $WHEELS (--no-index --no-deps)"
  "${PIP[@]}" install --quiet --no-index --no-deps "${wheels[@]}"
else
  echo "gpu_check: no wheels in $WHEELS; relying on what $BASE_PY already has"
fi
if ! "${PIP[@]}" install --quiet --no-index --no-deps --no-build-isolation -e ./runtime -e .; then
  # the folders runtime/ and export/ are the import packages pand_runtime and pand_export
  SRC="$(cd "$VENV" && pwd)/pand-src"; mkdir -p "$SRC"
  ln -sfn "$REPO/runtime" "$SRC/pand_runtime"; ln -sfn "$REPO/export" "$SRC/pand_export"
  echo "gpu_check: editable install failed (no setuptools offline?); using PYTHONPATH=$REPO:$SRC"
  export PYTHONPATH="$REPO:$SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "gpu_check: pip check (what is still missing goes into $WHEELS):"
"${PIP[@]}" check || true

exec timeout --signal=TERM --kill-after=20 "$TIMEOUT_S" "$PY" bench/gpu_check.py "$@"
