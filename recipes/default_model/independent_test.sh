#!/usr/bin/env bash
# The shipped default model on a second held-out set, once (MODEL_CARD.md, "A second held-out set"):
# Sweet Home 3D's own default catalogue (independent_set.json, fixed by independent_set.py before any
# model was scored on it), by the test split's protocol: 64 px, 21 views at elevation 10, seed 0, the
# model's own sampler and mesh method, against copying the input and the committed no-camera twin.
#
#   JAR=DIR/usr/share/sweethome3d/sweethome3d.jar bash recipes/default_model/independent_test.sh [WORK_DIR]  # runs/independent
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-runs/independent}
: "${JAR:?set JAR to sweethome3d.jar of the Debian package sweethome3d}"
SH3D=$JAR SPLIT=recipes/default_model/independent_set.json
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} HF_HUB_OFFLINE=1
# one thread per process, as every scored run of the default model
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# shellcheck source=recipes/default_model/recipe_lib.sh
source recipes/default_model/recipe_lib.sh
eval_halves test "$WORK/eval" mv3d/default_model recipes/default_model/no_camera_model --reconstruct
python -m recipes.default_model.table "$WORK/eval/0/metrics.json+$WORK/eval/1/metrics.json"
