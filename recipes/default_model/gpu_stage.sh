#!/usr/bin/env bash
# A GPU stage of the default model, as one command on a lent GPU (MODEL_CARD.md, "Compute"):
#
#   bash recipes/default_model/gpu_stage.sh CARRY OUT [TRAIN_SECONDS]      # in the repository root
#
# Two modes, by what the starting points are:
# - continuation (v2's stage 4; CONFIG defaults to configs/v2_stage4_gpu.yaml): both networks continue from
#   models carried in CARRY/init and CARRY/init_no_camera.
# - fresh start (FRESH_CHANNELS=64,128,128 [FRESH_SEED=0], CONFIG=recipes/default_model/configs/v3_gpu.yaml):
#   the starting point is built here by fresh_init.py (a UNet of those widths beside the frozen parts of
#   FRESH_FROM, by default the repository's mv3d/default_model) and its no-camera twin by drop_camera.py;
#   nothing but data and wheels is carried, and init.txt records the fresh UNet's digest (to compare
#   with the one fresh_init.py prints on the CPU for the same seed).
# - deeper warm start (DEEPEN=2 [DEEPEN_SEED=0], CONFIG=recipes/default_model/configs/v3_deep_gpu.yaml): as
#   the fresh start, but the starting point is deepen.py's copy of DEEPEN_FROM (default
#   mv3d/default_model) with that many blocks per level, computing what the shipped model computes.
#
# CARRY, prepared on the CPU machine (the lent machine reaches no registry and receives at most 64 MiB):
#   whl/        diffusers 0.42.1, importlib_metadata 10.2.0, lazy-importer 0.1.0 (the rest is in its image)
#   orbits.tar.xz   renders of the train split (pack_orbits.py pack): v2's stage 4 took seeds 11 and 12
#   init/           continuation only: e.g. runs/v2/stage3/model with float16 weights (device_transfer.py shrink)
#   init_no_camera/ continuation only: the no-camera model's UNet, float16 (shrink --only unet)
# OUT receives ours_<i>.safetensors and no_camera_<i>.safetensors (each network's EMA UNet, float32, in
# shards of at most 15 MB: the machine returns at most 8 files of at most 16 MiB) and meta.tar.gz (their
# UNet configs, the configs and metrics of the runs, the logs, the step-time probe, nvidia-smi). Back on
# the CPU machine: untar meta.tar.gz into OUT, then device_transfer.py join OUT ours --base
# runs/v2/stage3/model --out MODEL (and no_camera with --base runs/v2/stage3_no_camera/model; for a fresh
# or deeper start, --base the starting points fresh_init.py or deepen.py, and drop_camera.py, make there
# from the same seed).
#
# STEPS (environment): the config's max_steps by default (a rerun of the recorded stage); "auto" first
# runs both networks side by side for 40 steps, takes the step time of steps 20 to 40, and sets max_steps
# (and the linear decay over all of them) to 85% of what fits in TRAIN_SECONDS (the third argument, or
# the variable of that name; default 400).
set -euo pipefail
CARRY=$(realpath "$1") OUT=$(realpath -m "$2") BUDGET=${3:-${TRAIN_SECONDS:-400}}
CONFIG=${CONFIG:-recipes/default_model/configs/v2_stage4_gpu.yaml}
W=${WORK:-/tmp/mv3d_gpu_stage}
cd "$(dirname "$0")/../.."
mkdir -p "$W" "$OUT"
log() { echo "[$(date +%T)] $*"; }
if compgen -G "$CARRY/whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" "$CARRY"/whl/*.whl
  export PYTHONPATH=$W/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
nvidia-smi > "$W/nvidia-smi.txt" 2>&1 || true
python3 -c 'import torch, diffusers, numpy; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "diffusers", diffusers.__version__, "numpy", numpy.__version__)' | tee "$W/versions.txt"
log unpack
[[ -d $W/data ]] || python3 -m recipes.default_model.pack_orbits unpack "$CARRY/orbits.tar.xz" "$W/data" > /dev/null
BUILD=()  # a starting point built here: the module and its arguments
if [[ -n ${DEEPEN:-} ]]; then
  BUILD=(deepen --layers-per-block "$DEEPEN" --seed "${DEEPEN_SEED:-0}" --from "${DEEPEN_FROM:-mv3d/default_model}")
elif [[ -n ${FRESH_CHANNELS:-} ]]; then
  BUILD=(fresh_init --channels "$FRESH_CHANNELS" --seed "${FRESH_SEED:-0}" --from "${FRESH_FROM:-mv3d/default_model}")
fi
if (( ${#BUILD[@]} )); then
  [[ -d $W/init ]] || python3 -m "recipes.default_model.${BUILD[0]}" "${BUILD[@]:1}" --out "$W/init" | tee "$W/init.txt"
  [[ -d $W/init_no_camera ]] || python3 -m recipes.default_model.drop_camera "$W/init" "$W/init_no_camera"
else
  [[ -d $W/init ]] || python3 -m recipes.default_model.device_transfer expand "$CARRY/init" "$W/init"
  [[ -d $W/init_no_camera ]] || python3 -m recipes.default_model.device_transfer expand "$CARRY/init_no_camera" \
    "$W/init_no_camera" --fill-from "$W/init"
fi
DATA=("$W"/data/*)

LIMIT=()  # a command prefix for the main runs (a hard stop), empty for the probe
train() {  # CONFIG INIT RUN_DIR [more mv3d train arguments]: resumable, logs to RUN_DIR.log
  local resume=(); [[ -d $3/checkpoints ]] && resume=(--resume)
  "${LIMIT[@]}" python3 -m mv3d train "$1" --init-from "$2" --data "${DATA[@]}" --out "$3" "${resume[@]}" "${@:4}" \
    > "$3.log" 2>&1
}
probe() {  # CONFIG: both networks for $P steps side by side, afresh; true when both logged their steps
  rm -rf "$W/probe_ours" "$W/probe_no_camera"
  train "$1" "$W/init" "$W/probe_ours" --max-steps "$P" &
  train "$1" "$W/init_no_camera" "$W/probe_no_camera" --max-steps "$P" &
  wait
  [[ -f $W/probe_ours/metrics.jsonl && -f $W/probe_no_camera/metrics.jsonl ]]
}
steps=$(python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["max_steps"])' "$CONFIG")
if [[ ${STEPS:-} == auto ]]; then
  P=${PROBE_STEPS:-40}
  log "probe: $P steps of both networks side by side"
  if ! probe "$CONFIG"; then
    # a failure of the mixed-precision path on this machine's stack: show it, then train in float32
    tail -n 5 "$W/probe_ours.log" "$W/probe_no_camera.log" || true
    log "probe failed: retrying in float32"
    python3 -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c["mixed_precision"] = "no"; yaml.safe_dump(c, open(sys.argv[2], "w"), sort_keys=False)' "$CONFIG" "$W/fp32.yaml"
    CONFIG=$W/fp32.yaml
    if ! probe "$CONFIG"; then
      # nothing to train with: bring the logs back, so the next try knows why
      tar czf "$OUT/meta.tar.gz" -C "$W" --ignore-failed-read nvidia-smi.txt versions.txt probe_ours.log \
        probe_no_camera.log 2> /dev/null || true
      log "probe failed in float32 too: logs in $OUT/meta.tar.gz"
      exit 1
    fi
  fi
  steps=$(python3 - "$W" "$BUDGET" "$P" <<'EOF'
import json, sys
work, budget, p = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
per_step, data = [], []
for run in ("probe_ours", "probe_no_camera"):
    rec = {r["step"]: r for r in map(json.loads, open(f"{work}/{run}/metrics.jsonl"))}
    per_step.append((rec[p]["elapsed_s"] - rec[p // 2]["elapsed_s"]) / (p - p // 2))
    # the loader's share of the logged steps: near 1, more loader workers (not a faster GPU) would help
    logged = [r for s, r in rec.items() if s > p // 2 and "data_s" in r]
    data.append(sum(r["data_s"] for r in logged) / max(sum(r["step_s"] for r in logged), 1e-9))
steps = max(10, int(0.85 * budget / max(per_step)) // 10 * 10)  # at least one logged step
print(json.dumps({"step_s": per_step, "data_share": data, "budget_s": budget, "steps": steps}), file=open(f"{work}/probe.json", "w"))
print(steps)
EOF
)
fi
python3 - "$CONFIG" "$steps" "$W/run.yaml" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
cfg["max_steps"] = cfg["lr_cooldown_steps"] = int(sys.argv[2])
yaml.safe_dump(cfg, open(sys.argv[3], "w"), sort_keys=False)
EOF
log "train: $steps steps, both networks side by side"
# a hard stop 60 s past the budget leaves the logs and probe to come back even if a run is slower
LIMIT=(timeout $((BUDGET + 60)))
train "$W/run.yaml" "$W/init" "$W/ours" &
train "$W/run.yaml" "$W/init_no_camera" "$W/no_camera" &
wait
log "collect"
for run in ours no_camera; do
  if [[ -f $W/$run/model/mv3d_model.json ]]; then
    python3 -m recipes.default_model.device_transfer split "$W/$run/model" "$OUT" "$run"
    mv "$OUT/${run}_unet_config.json" "$W/"  # into meta.tar.gz: the machine returns at most 8 files
  fi
done
tar czf "$OUT/meta.tar.gz" -C "$W" --ignore-failed-read nvidia-smi.txt versions.txt init.txt run.yaml probe.json \
  ours_unet_config.json no_camera_unet_config.json ours.log no_camera.log probe_ours.log probe_no_camera.log \
  ours/metrics.jsonl no_camera/metrics.jsonl ours/model/mv3d_model.json no_camera/model/mv3d_model.json \
  2> /dev/null || true
log done
