#!/usr/bin/env bash
# v2 with mirror averaging as its sampler (MODEL_CARD.md, "v2 with mirror averaging"): the same weights,
# half of the 16 draws made for the input and the orbit mirrored left-right and flipped back
# (the pipeline's `mirror_average`), judged by v2's rules:
#
#   SH3D=DIR [TEST=1] [V2=DIR NOCAM=DIR] bash recipes/default_model/mirror_v2.sh [WORK_DIR]  # runs/v2m
#
# 1. the candidate and its no-camera twin: v2 (V2: train_v2.sh's stage-4 model folder; by default v2 as
#    shipped until 2026-12-05, read from git at V2_REV) and its twin (NOCAM; by default the committed
#    recipes/default_model/no_camera_model), each with `default_mirror_average: true` and its matte
#    calibration dropped (a changed sampler changes the raw matte the calibration reads);
# 2. each matte calibrated again on validation by calibrate_matte.py's rule, then validation with hull
#    meshes (the mesh method stays v2's), compared object by object with v2's committed run of the same
#    command (docs/eval_default_v2/validation_hull_enclosed_iou/); the candidate ships only if its
#    validation PSNR and mask IoU are both higher than v2's;
# 3. TEST=1 (only after step 2's rule is met): the test split, once, views and meshes.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-runs/v2m}
: "${SH3D:?set SH3D to the folder of the sweethome3d-furniture .sh3f catalogues}"
SPLIT=recipes/default_model/sweethome3d_split.json
V2_REV=${V2_REV:-14af398}  # v2 as shipped until 2026-12-05 (the same weights, without mirror averaging)
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} HF_HUB_OFFLINE=1
# one thread per process: torch's CPU sums depend on the thread count, and v2's runs used one
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# shellcheck source=recipes/default_model/recipe_lib.sh
source recipes/default_model/recipe_lib.sh
ours=$WORK/model nocam=$WORK/no_camera_model
V2_VAL=docs/eval_default_v2/validation_hull_enclosed_iou

# 1. the two model folders (once: a rerun keeps their calibration)
mirrored() {  # FROM OUT: a copy of a model folder with mirror averaging on and no matte calibration
  local tmp=$2.partial
  rm -rf "$tmp" && cp -r "$1" "$tmp" && rm -rf "$tmp/unet_no_ema"
  python - "$tmp/mv3d_model.json" <<'EOF'
import dataclasses, sys
from render.common import atomic_write_json
from video_prior.components import read_info_file
info = dataclasses.replace(read_info_file(sys.argv[1]).uncalibrated(), default_mirror_average=True)
atomic_write_json(sys.argv[1], info.to_dict())
EOF
  mv "$tmp" "$2"
}
if [[ ! -d $ours ]]; then
  if [[ -z ${V2:-} ]]; then
    mkdir -p "$WORK/v2"
    git archive "$V2_REV" mv3d/default_model | tar -x -C "$WORK/v2"
    V2=$WORK/v2/mv3d/default_model
  fi
  mirrored "$V2" "$ours"
fi
[[ -d $nocam ]] || mirrored "${NOCAM:-recipes/default_model/no_camera_model}" "$nocam"

# 2. calibration (views only) and validation with meshes, as every v2 stage's, against v2's committed run
calibrate_and_validate v2m "$ours" "$nocam" --reconstruct --reconstruct-method hull
val=$WORK/eval/v2m_validation
python -m recipes.default_model.paired "$V2_VAL/0/metrics.json+$V2_VAL/1/metrics.json" \
  "$val/0/metrics.json+$val/1/metrics.json"

# 3. the test split, once, only for a candidate that met the rule in step 2
if [[ ${TEST:-} == 1 ]]; then
  test_once "$ours" "$nocam"
fi
