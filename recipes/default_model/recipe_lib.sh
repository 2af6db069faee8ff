# Shell functions shared by the default model's recipes (train_v2.sh, train_v3.sh); source it after
# setting WORK, SH3D and SPLIT. Every step skips what a previous run of the recipe finished.

eval_halves() {  # SPLIT OUT OURS NOCAM [more mv3d eval arguments]: the split in two halves, in parallel;
  # NOCAM empty: copying the input is the only baseline
  local split=$1 out=$2 ours=$3 nocam=$4 half baselines=(--baselines copy)
  shift 4
  if [[ -n $nocam ]]; then baselines=(--baselines copy,no-camera --no-camera-model "$nocam"); fi
  # the halves interleave the split's list (objects 0, 2, 4, ... and 1, 3, 5, ...)
  mkdir -p "$out"
  for half in 0 1; do
    python -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))[sys.argv[2]][int(sys.argv[3])::2]))' \
      "$SPLIT" "$split" "$half" > "$out/objects_$half.txt"
    mv3d eval --objects "$SH3D" --select "$out/objects_$half.txt" --model "$ours" --seed 0 \
      "${baselines[@]}" --out "$out/$half" "$@" &
  done
  wait
}

calibrated() {  # MODEL_DIR: its info carries a matte calibration (a threshold other than 0.5 or a floor)
  python -c 'import json, sys; i = json.load(open(sys.argv[1])); sys.exit(i.get("alpha_threshold", 0.5) == 0.5 and not i.get("alpha_floor"))' \
    "$1/mv3d_model.json"
}

render_train() {  # SEED OUT [more mv3d render-dataset arguments]: one render of the train split (or of
  # the objects the file SELECT lists)
  local seed=$1 out=$2
  shift 2
  mv3d render-dataset "$SH3D" --select "${SELECT:-$SPLIT:train}" --out "$out" --views 21 --resolution 64 --orbit mixed \
    --elevation-range -5 30 --workers 2 --seed "$seed" "$@"
}

train_resumable() {  # CONFIG INIT RUN_DIR [more mv3d train arguments]: one run on DATA; a rerun resumes it
  local config=$1 init=$2 run=$3 resume=()
  shift 3
  if [[ -d $run/checkpoints ]]; then resume=(--resume); fi
  mv3d train "$config" --init-from "$init" --data "${DATA[@]}" --out "$run" "${resume[@]}" "$@"
}

calibrate_and_validate() {  # NAME OURS NOCAM [more mv3d eval arguments for the validation run]: calibrate
  # both mattes on validation (once), then validate
  local name=$1 ours=$2 nocam=$3
  shift 3
  # once: a calibrated model keeps its threshold on a rerun; the no-camera network only after ours
  if ! calibrated "$ours"; then
    eval_halves validation "$WORK/eval/${name}_validation_raw" "$ours" "$nocam"
    python -m recipes.default_model.calibrate_matte "$WORK/eval/${name}_validation_raw"/{0,1} --method ours --write "$ours"
    if calibrated "$ours"; then
      python -m recipes.default_model.calibrate_matte "$WORK/eval/${name}_validation_raw"/{0,1} --method no-camera --write "$nocam"
    fi
  fi
  eval_halves validation "$WORK/eval/${name}_validation" "$ours" "$nocam" "$@"
  python -m recipes.default_model.table "$WORK/eval/${name}_validation/0/metrics.json+$WORK/eval/${name}_validation/1/metrics.json"
}

choose_mesh() {  # NAME OURS NOCAM: the mesh method by choose_mesh_method.py's rule (MODEL_CARD.md), once
  local name=$1 ours=$2 nocam=$3 method
  if python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("default_mesh_method") is not None)' "$ours/mv3d_model.json"; then
    for method in field hull; do
      eval_halves validation "$WORK/eval/${name}_validation_$method" "$ours" "$nocam" --reconstruct --reconstruct-method "$method"
    done
    python -m recipes.default_model.choose_mesh_method \
      field="$WORK/eval/${name}_validation_field/0/metrics.json+$WORK/eval/${name}_validation_field/1/metrics.json" \
      hull="$WORK/eval/${name}_validation_hull/0/metrics.json+$WORK/eval/${name}_validation_hull/1/metrics.json" --write "$ours"
  fi
}

test_once() {  # OURS NOCAM: the test split, once per shipped model: views and meshes (the model's method)
  eval_halves test "$WORK/eval/test" "$1" "$2" --reconstruct
  python -m recipes.default_model.table "$WORK/eval/test/0/metrics.json+$WORK/eval/test/1/metrics.json"
}

gpu_stage_back() {  # CARRY BACK [VAR=VALUE ...]: gpu_stage.sh's results in BACK; false (with what to run) if not yet
  local carry=$1 back=$2
  shift 2
  [[ -d $back ]] && return 0
  if [[ ${GPU_STAGE:-} == local ]]; then
    env "$@" bash recipes/default_model/gpu_stage.sh "$carry" "$back"
    return 0
  fi
  echo "this step needs a GPU: run '$* bash recipes/default_model/gpu_stage.sh CARRY OUT' there with $carry as"
  echo "CARRY (add diffusers' wheels as CARRY/whl if it lacks them), bring OUT back as $back, and rerun"
  echo "this script (or set GPU_STAGE=local on a machine with a CUDA GPU)"
  return 1
}

join_back() {  # BACK BASE BASE_NO_CAMERA OURS NOCAM: model folders from gpu_stage.sh's results
  # the UNets' configs, and the runs' own model info (notes, training resolution) where it came back
  (cd "$1" && { [[ -f ours_unet_config.json ]] || tar xzf meta.tar.gz; })
  local run base out info
  for run in ours no_camera; do
    if [[ $run == ours ]]; then base=$2 out=$4; else base=$3 out=$5; fi
    info=()
    if [[ -f $1/$run/model/mv3d_model.json ]]; then info=(--info "$1/$run/model/mv3d_model.json"); fi
    python -m recipes.default_model.device_transfer join "$1" "$run" --base "$base" --out "$out" "${info[@]}"
  done
}
