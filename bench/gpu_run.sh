#!/usr/bin/env bash
# The one command for the GPU machine: install the carried wheels, then run bench.gpu_run.
#
#   bash bench/gpu_run.sh OUT_DIR [gpu_run options]    # on the GPU machine, from the repository root
#   bash bench/gpu_run.sh --download-wheels             # beforehand, where pip reaches PyPI: fills .whl/
#
# Wheels: every .whl in ${MV3D_WHEELS:-.whl} (bench/gpu_wheels.txt lists them) is installed with
# --no-index --no-deps into a private folder put first on PYTHONPATH; nothing else of the machine changes.
# The log goes to OUT_DIR/gpu_run.log next to gpu_run.json and gpu_run.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
wheels=${MV3D_WHEELS:-.whl}

if [ "${1:-}" = "--download-wheels" ]; then
    mkdir -p "$wheels"
    grep -v '^#' bench/gpu_wheels.txt | grep . | while read -r req; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
            -d "$wheels" "$req" || exit 1
    done
    ls -l "$wheels"
    exit 0
fi

if [ $# -lt 1 ]; then
    echo "usage: bash bench/gpu_run.sh OUT_DIR [--dry-run] [--parts a,b] [--budget-s S]" >&2
    exit 2
fi
out=$1
shift
mkdir -p "$out" || exit 2
if compgen -G "$wheels/*.whl" >/dev/null; then
    site=${TMPDIR:-/tmp}/mv3d-gpu-site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$wheels"/*.whl || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m bench.gpu_run "$out" "$@" 2>&1 | tee "$out/gpu_run.log"
