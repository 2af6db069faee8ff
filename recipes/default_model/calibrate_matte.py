"""Choose an alpha model's matte threshold and floor on validation evaluations, and optionally write them.

    python -m recipes.default_model.calibrate_matte VAL_EVAL_DIR... --method ours [--write MODEL_DIR]
    python -m recipes.default_model.calibrate_matte VAL_EVAL_DIR... --method no-camera [--write NO_CAMERA_MODEL_DIR]

A model estimated as an average (one sampling step from noise, averaged over draws) paints a matte that
is under-confident at its edges, while every consumer of its views cuts alpha at 0.5. The rule
(MODEL_CARD.md, committed before it was first computed): the threshold t in {0.10, 0.15, ..., 0.50} with
the highest mean novel-view mask IoU over the objects of the given `mv3d eval` runs pooled (one weight
per object), ties within 0.001 going to the larger t; the model gets ``info.alpha_threshold = t`` only if
that beats 0.5 by at least --min-gain. Cutting the saved alpha at t is what the pipeline's
`calibrate_alpha` map followed by the cut at 0.5 does, so the runs must be of the model uncalibrated:
--write checks that each run recorded this model's hash and that it is still uncalibrated.

The same average leaves a faint matte everywhere, which composites as a grey haze around the object.
The floor's rule (committed 2026-12-04, before any shipped model used one): with t chosen, the floor f
in {0, 0.05, ..., 0.45} (on the mapped matte) with the highest mean novel-view PSNR of the views
composited on the background, where a pixel whose mapped matte is under f is the background (what the
pipeline's cut to 0 gives), ties within 0.01 dB going to the smaller f; written as
``info.alpha_floor`` only if it beats no floor by at least --min-psnr-gain. Silhouettes are untouched
by any floor under 0.5, so the two choices are independent.
Never give it test runs: the calibration is a choice, and test sets are for the last measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from eval import view_metrics as vm
from recipes.default_model.table import read_metrics
from render.common import InputError, atomic_write_json
from render.dataset import read_orbit_dataset

GRID = tuple(round(0.10 + 0.05 * i, 2) for i in range(9))
TIE = 0.001
FLOOR_GRID = tuple(round(0.05 * i, 2) for i in range(10))
FLOOR_TIE_DB = 0.01


def iou_by_threshold(run: Path, method: str, grid: tuple[float, ...] = GRID) -> np.ndarray:
    """(objects, thresholds) mean novel-view (1..N-1) mask IoU of `method`'s views cut at each threshold."""
    objects = sorted(p for p in (run / "objects").iterdir() if p.is_dir())
    if not objects:
        raise InputError(f"{run}: no objects/; expected an `mv3d eval` output folder")
    rows = []
    for obj in objects:
        gt = vm.masks_from_alpha(read_orbit_dataset(obj / "gt").load_images())[1:]
        pred = read_orbit_dataset(obj / method).load_images()[1:]
        rows.append([float(vm.mask_iou(vm.masks_from_alpha(pred, t), gt).mean()) for t in grid])
    return np.asarray(rows)


def psnr_by_floor(
    run: Path, method: str, threshold: float, grid: tuple[float, ...] = FLOOR_GRID
) -> np.ndarray:
    """(objects, floors) mean novel-view PSNR of `method`'s views once calibrated at `threshold` and cut
    under each floor: the composite on the background, with the cut pixels the background itself."""
    import torch

    from video_prior.denoiser import calibrate_alpha

    objects = sorted(p for p in (run / "objects").iterdir() if p.is_dir())
    if not objects:
        raise InputError(f"{run}: no objects/; expected an `mv3d eval` output folder")
    rows = []
    for obj in objects:
        gt_ds = read_orbit_dataset(obj / "gt")
        background = torch.tensor(gt_ds.background, dtype=torch.float32)[None, :, None, None]
        gt = vm.to_tensor(gt_ds.load_images()[1:], gt_ds.background)
        pred = read_orbit_dataset(obj / method).load_images()[1:]
        composite = vm.to_tensor(pred, gt_ds.background)  # (N, 3, H, W)
        alpha = torch.from_numpy(pred[..., 3].astype(np.float32) / 255.0)
        row = []
        for f in grid:
            # the pipeline's own map and cut; where alpha is 0 already, the composite is the background
            cut = (calibrate_alpha(alpha, threshold, f) == 0)[:, None]  # (N, 1, H, W)
            row.append(float(vm.psnr(torch.where(cut, background, composite), gt).mean()))
        rows.append(row)
    return np.asarray(rows)


def choose_floor(mean_psnr: np.ndarray, grid: tuple[float, ...] = FLOOR_GRID) -> float:
    """The floor's rule: the best floor, ties within `FLOOR_TIE_DB` going to the smaller one (less cut)."""
    best = float(mean_psnr.max())
    return min(f for f, v in zip(grid, mean_psnr, strict=True) if v >= best - FLOOR_TIE_DB)


def choose(mean_iou: np.ndarray, grid: tuple[float, ...] = GRID) -> float:
    """The rule: the best threshold, ties within `TIE` going to the larger one (closer to no change)."""
    best = float(mean_iou.max())
    return max(t for t, v in zip(grid, mean_iou, strict=True) if v >= best - TIE)


def recorded_hash(run: Path, method: str) -> str | None:
    settings = read_metrics(run / "metrics.json").get("settings")
    if not isinstance(settings, dict):
        raise InputError(f"{run / 'metrics.json'}: no 'settings'; expected an mv3d eval run's metrics")
    if method == "ours":
        return settings.get("model_hash")
    return settings.get("extra", {}).get("no_camera", {}).get("hash") if method == "no-camera" else None


def write_calibration(
    model: Path, runs: list[Path], method: str, threshold: float, floor: float = 0.0
) -> None:
    """Set ``alpha_threshold`` and ``alpha_floor`` in `model`'s mv3d_model.json after checking the runs
    evaluated it uncalibrated."""
    from mv3d.models import model_hash

    info_path = model / "mv3d_model.json"
    if not info_path.is_file():
        raise InputError(f"{model}: no mv3d_model.json; expected an mv3d model folder")
    info = json.loads(info_path.read_text())
    if not info.get("alpha", False):
        raise InputError(f"{model}: alpha false; a matte calibration needs a model that paints its alpha")
    if float(info.get("alpha_threshold", 0.5)) != 0.5 or float(info.get("alpha_floor", 0.0)) != 0.0:
        raise InputError(
            f"{model}: alpha_threshold {info.get('alpha_threshold', 0.5)}, alpha_floor "
            f"{info.get('alpha_floor', 0.0)}; expected an uncalibrated model (0.5 and 0)"
        )
    h = model_hash(model)
    for run in runs:
        if recorded_hash(run, method) != h:
            raise InputError(
                f"{run}: evaluated {method} with model hash {recorded_hash(run, method)}; expected {h} ({model})"
            )
    info["alpha_threshold"] = threshold
    if floor > 0:
        info["alpha_floor"] = floor
    atomic_write_json(info_path, info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="`mv3d eval` output folders of validation objects")
    ap.add_argument("--method", default="ours", help="the evaluated method whose views are calibrated")
    ap.add_argument("--min-gain", type=float, default=0.005, help="mask IoU gain over 0.5 needed to write")
    ap.add_argument(
        "--min-psnr-gain", type=float, default=0.05, help="PSNR gain (dB) over no floor needed to write one"
    )
    ap.add_argument("--write", type=Path, default=None, help="model folder whose calibration to set")
    args = ap.parse_args(argv)
    try:
        table = np.concatenate([iou_by_threshold(r, args.method) for r in args.runs])
        means = table.mean(axis=0)
        t = choose(means)
        gain = float(means[GRID.index(t)] - means[GRID.index(0.5)])
        print(f"{args.method}: {len(table)} objects, novel-view mask IoU by threshold")
        print("  " + "  ".join(f"{g:.2f}: {m:.4f}" for g, m in zip(GRID, means, strict=True)))
        print(f"  chosen {t:.2f}: {means[GRID.index(t)]:.4f} (+{gain:.4f} over 0.5)")
        if t != 0.5 and gain < args.min_gain:
            print(f"  gain under {args.min_gain}: the threshold stays 0.5")
            t = 0.5
        psnr = np.concatenate([psnr_by_floor(r, args.method, t) for r in args.runs]).mean(axis=0)
        f = choose_floor(psnr)
        psnr_gain = float(psnr[FLOOR_GRID.index(f)] - psnr[0])
        print(f"  novel-view PSNR (dB) by floor, threshold {t:.2f}")
        print("  " + "  ".join(f"{g:.2f}: {m:.3f}" for g, m in zip(FLOOR_GRID, psnr, strict=True)))
        print(f"  chosen {f:.2f}: {psnr[FLOOR_GRID.index(f)]:.3f} (+{psnr_gain:.3f} dB over no floor)")
        if f > 0 and psnr_gain < args.min_psnr_gain:
            print(f"  gain under {args.min_psnr_gain} dB: no floor")
            f = 0.0
        if args.write is not None:
            if t != 0.5 or f > 0:
                write_calibration(args.write, args.runs, args.method, t, f)
                print(
                    f"  wrote alpha_threshold {t:.2f}, alpha_floor {f:.2f} to {args.write / 'mv3d_model.json'}"
                )
            else:
                print(f"  nothing gained: {args.write} left as it is")
    except InputError as exc:
        print(f"calibrate_matte: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
