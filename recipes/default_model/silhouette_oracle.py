"""How much can cameras add on an evaluated set? The best single silhouette, chosen knowing the answer.

    python -m recipes.default_model.silhouette_oracle docs/eval_default/heldout docs/eval_default/third_party ...

For each object of an `mv3d eval` run (its ground-truth views kept under objects/*/gt/views), the oracle
predicts one silhouette for every novel view: the pixels covered by more than a fraction f of the true
novel silhouettes, f chosen per object for the best mean mask IoU. It knows the object's true shape but
not which view is which, so it bounds what a predictor without cameras can reach, and 1 minus its score
is the headroom left to cameras alone. Printed per set (and per object with --objects) next to copying
the input view and the evaluated methods, all as novel-view mask IoU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from eval import view_metrics as vm
from recipes.default_model.table import read_metrics
from render.common import InputError
from render.dataset import read_orbit_dataset

FRACTIONS = np.linspace(0.05, 0.95, 19)


def gt_silhouettes(obj: Path) -> np.ndarray:
    """(N, H, W) bool true silhouettes of one evaluated object, view 0 = the input."""
    return vm.masks_from_alpha(read_orbit_dataset(obj / "gt").load_images()).numpy()


def oracle_iou(silhouettes: np.ndarray) -> float:
    """Mean novel-view mask IoU of the best single silhouette (coverage fraction > f, best f)."""
    import torch

    novel = torch.from_numpy(silhouettes[1:])
    coverage = novel.float().mean(0)
    return max(
        float(vm.mask_iou((coverage > f).expand_as(novel).contiguous(), novel).mean()) for f in FRACTIONS
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="`mv3d eval` output folders")
    ap.add_argument("--objects", action="store_true", help="also print every object")
    args = ap.parse_args(argv)
    try:
        for run in args.runs:
            metrics = read_metrics(run / "metrics.json")
            rows = []
            for oid, rec in metrics["objects"].items():
                oracle = oracle_iou(gt_silhouettes(run / "objects" / oid))
                scores = {m: r["novel"]["mask_iou"] for m, r in rec["methods"].items()}
                rows.append((oid, oracle, scores))
            methods = list(rows[0][2])
            mean = {m: np.mean([r[2][m] for r in rows]) for m in methods}
            oracle = float(np.mean([r[1] for r in rows]))
            cells = "  ".join(f"{m} {v:.3f}" for m, v in mean.items())
            print(f"{run.name} ({len(rows)} objects): oracle single silhouette {oracle:.3f}  {cells}")
            if args.objects:
                for oid, o, scores in rows:
                    print(
                        f"  {oid:40s} oracle {o:.3f}  " + "  ".join(f"{m} {v:.3f}" for m, v in scores.items())
                    )
    except (InputError, FileNotFoundError, KeyError) as exc:
        print(f"silhouette_oracle: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
