"""Two models on the same objects: the per-object difference of one method's novel views, paired.

    python -m recipes.default_model.paired A/0/metrics.json+A/1/metrics.json B/0/metrics.json+B/1/metrics.json \
        [--method ours]

A and B are `mv3d eval` runs of two models (each pooled from its halves with "+", in the same order) on
the same objects with the same seed. Prints, for novel-view PSNR, SSIM and mask IoU, the mean of B and of
A, the mean of B − A over the objects, how many objects B is ahead on, and a paired two-sided Wilcoxon
signed-rank p-value; when both runs scored meshes (`--reconstruct`), the same for Chamfer and volume IoU
over the objects where both made one, with how many objects' meshes differ at all. Used for
experiments that compare two trainings or two pipelines (MODEL_CARD.md); the acceptance table against
the baselines is `table.py`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from recipes.default_model.table import MESH_METRICS, METRICS, load_set, mesh_values, paired_p, per_object
from render.common import InputError


def paired(a_spec: str, b_spec: str, method: str = "ours") -> list[str]:
    """The report's lines; `InputError` when the runs do not score the same objects."""
    (_, a), (_, b) = load_set(a_spec), load_set(b_spec)
    ids_a = [o.get("object_id") for o in a["objects"].values()]
    ids_b = [o.get("object_id") for o in b["objects"].values()]
    if ids_a != ids_b:
        raise InputError(f"{a_spec} and {b_spec} score different objects or orders; expected the same split")
    lines = [f"{len(ids_a)} objects, method {method}: B = {b_spec}, A = {a_spec}"]
    for metric in METRICS:
        try:
            x, y = per_object(a, method, metric), per_object(b, method, metric)
        except KeyError as exc:
            raise InputError(f"a run does not score {method}'s {metric} ({exc})") from None
        d = y - x
        p = paired_p(d)
        lines.append(
            f"{metric}: B {y.mean():.4f}, A {x.mean():.4f}, B − A {d.mean():+.4f} "
            f"(B ahead on {int((d > 0).sum())}, behind on {int((d < 0).sum())}; p = {p:.2g})"
        )
    if not all(_has_meshes(run, method) for run in (a, b)):
        return lines
    pairs = {m: (mesh_values(a, method, m), mesh_values(b, method, m)) for m in MESH_METRICS}
    both = np.all([np.isfinite(x) & np.isfinite(y) for x, y in pairs.values()], axis=0)
    differ = np.any([x[both] != y[both] for x, y in pairs.values()], axis=0)
    lines.append(f"meshes: {int(both.sum())} objects meshed in both runs, {int(differ.sum())} of them differ")
    for metric, (x, y) in pairs.items():
        x, y = x[both], y[both]
        d = y - x
        lines.append(
            f"mesh {metric}: B {y.mean():.4f}, A {x.mean():.4f}, B − A {d.mean():+.5f} "
            f"(B higher on {int((d > 0).sum())}, lower on {int((d < 0).sum())}; p = {paired_p(d):.2g})"
        )
    return lines


def _has_meshes(run: dict, method: str) -> bool:
    return all("mesh" in o["methods"].get(method, {}) for o in run["objects"].values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="model A's metrics.json (halves joined by '+')")
    ap.add_argument("b", help="model B's metrics.json (halves joined by '+', in A's order)")
    ap.add_argument("--method", default="ours", help="the method compared (ours, copy, no-camera)")
    args = ap.parse_args(argv)
    try:
        print("\n".join(paired(args.a, args.b, args.method)))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
