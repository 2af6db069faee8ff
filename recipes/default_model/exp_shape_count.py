"""How validation quality grows with the number of training shapes (an experiment; MODEL_CARD.md, "More
shapes, measured").

The one lever left on the CPU's side of issue 20's mesh margins is "many more shapes". This measures its
slope on the shapes there are: v2's stage 1 (8000 steps from v1's starting point, two renders) is run
again on nested subsets of the train split, and the validation numbers of each are set beside stage 1's
own (all 657 objects). `subsets` writes the selections: the train split's groups (objects of one
catalogue and one name, as the split keeps them) in a seeded order within each category, a category's
first `fraction` of groups (at least one) in each subset, so a smaller subset is part of every larger
one and every category keeps its share.

    python -m recipes.default_model.exp_shape_count subsets --out runs/scale --fractions 0.25 0.5

writes runs/scale/train_25.txt and train_50.txt (one object id per line, for `--select`).
`exp_shape_count.sh` trains and scores them; `summary` reads the reports (SHAPES=A/metrics.json+B/...,
SHAPES the number of training shapes rendered) and fits each number against log2 of the shape count:

    python -m recipes.default_model.exp_shape_count summary 154=runs/scale/eval/shapes_25/0/metrics.json+...
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from recipes.default_model.table import common_meshes, load_set, per_object
from render.common import InputError

SPLIT = Path(__file__).with_name("sweethome3d_split.json")


def subsets(split: dict, fractions: list[float], seed: int = 0) -> dict[float, list[str]]:
    """Nested subsets of the train split: fraction -> sorted object ids."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for obj in split["objects"]:
        if obj["split"] == "train":
            groups[(obj["catalog"], obj["name"])].append(obj)
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        # a group's category is its first member's (the split keeps a group in one split, not one category)
        by_category[members[0]["category"]].append(key)
    rng = random.Random(seed)
    order = {cat: rng.sample(keys, len(keys)) for cat, keys in sorted(by_category.items())}
    out = {}
    for f in fractions:
        if not 0 < f <= 1:
            raise SystemExit(f"--fractions: {f}: expected a number in (0, 1]")
        keep = [k for keys in order.values() for k in keys[: max(1, round(f * len(keys)))]]
        out[f] = sorted(o["object_id"] for k in keep for o in groups[k])
    return out


def run_numbers(spec: str) -> dict[str, float]:
    """One report's means (pooled halves): novel-view PSNR and mask IoU of ours, and over the objects
    where both made a mesh, Chamfer and volume IoU of ours and copy."""
    _, m = load_set(spec)
    out = {k: float(per_object(m, "ours", k).mean()) for k in ("psnr", "mask_iou")}
    common, _ = common_meshes(m, ["ours", "copy"])
    out["meshes"] = len(common["ours"]["chamfer"])
    for meth, values in common.items():
        out |= {f"{meth}_{k}": float(v.mean()) for k, v in values.items()}
    out["chamfer_lower"] = 1.0 - out["ours_chamfer"] / out["copy_chamfer"]
    out["volume_margin"] = out["ours_volume_iou"] - out["copy_volume_iou"]
    return out


def log_fit(shapes: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope per doubling) of values against log2(shapes)."""
    slope, intercept = np.polyfit(np.log2(np.asarray(shapes, float)), np.asarray(values, float), 1)
    return float(intercept), float(slope)


def summary(specs: list[str], target_mask_iou: float) -> list[str]:
    """Markdown rows, one per run, then each number's gain per doubling of the shapes and, for mask IoU,
    the shape count at which the fitted line reaches `target_mask_iou`."""
    runs = []
    for spec in specs:
        count, _, paths = spec.partition("=")
        if not count.isdigit() or not paths:
            raise SystemExit(f"{spec}: expected SHAPES=A/metrics.json[+B/metrics.json]")
        runs.append((int(count), run_numbers(paths)))
    runs.sort(key=lambda r: r[0])
    rows = [
        "| training shapes | PSNR (dB) | mask IoU | meshes | Chamfer ours / copy | volume IoU ours / copy | Chamfer lower | volume margin |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, r in runs:
        rows.append(
            f"| {n} | {r['psnr']:.2f} | {r['mask_iou']:.4f} | {r['meshes']} | {r['ours_chamfer']:.4f} / "
            f"{r['copy_chamfer']:.4f} | {r['ours_volume_iou']:.4f} / {r['copy_volume_iou']:.4f} | "
            f"{100 * r['chamfer_lower']:.1f}% | {r['volume_margin']:+.4f} |"
        )
    if len(runs) >= 2:
        shapes = [n for n, _ in runs]
        rows.append("")
        for key in ("psnr", "mask_iou", "chamfer_lower", "volume_margin"):
            intercept, slope = log_fit(shapes, [r[key] for _, r in runs])
            line = f"{key}: {slope:+.4f} per doubling of the shapes"
            if key == "mask_iou" and slope > 0:
                need = 2.0 ** ((target_mask_iou - intercept) / slope)
                line += f"; the line reaches {target_mask_iou} at about {need:,.0f} shapes"
            rows.append(line)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("subsets", help="write nested train-split subsets, one object id per line")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("summary", help="each run's validation numbers and their fit against log2(shapes)")
    p.add_argument("runs", nargs="+", help="SHAPES=A/metrics.json[+B/metrics.json]")
    # the oracle's novel-view mask IoU at which both mesh margins hold on validation (MODEL_CARD.md)
    p.add_argument("--target-mask-iou", type=float, default=0.72)
    args = parser.parse_args(argv)
    if args.command == "summary":
        try:
            print("\n".join(summary(args.runs, args.target_mask_iou)))
        except InputError as exc:  # a missing or malformed report: one line, as table.py says it
            raise SystemExit(f"error: {exc}") from None
        return
    split = json.loads(SPLIT.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for f, ids in subsets(split, args.fractions, args.seed).items():
        path = args.out / f"train_{round(100 * f)}.txt"
        path.write_text("\n".join(ids) + "\n")
        print(f"{path}: {len(ids)} objects")


if __name__ == "__main__":
    main()
