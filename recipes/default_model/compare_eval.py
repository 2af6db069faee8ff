"""Does a rerun of `mv3d eval` reproduce a committed run? Per-object metrics compared one by one.

    python -m recipes.default_model.compare_eval REFERENCE/metrics.json RUN/metrics.json [--atol 1e-4]

Both files are `mv3d eval` metrics (`metrics.json`). For every object of the reference, every method
scored in both runs is compared: its novel-view means (PSNR, SSIM, mask IoU, ...) and its mesh metrics
(Chamfer, volume IoU, ...), and the mesh from the ground-truth views. The rerun reproduces the reference
when it holds the same objects and every compared value is within `--atol` (a mesh that failed in one run
and not in the other is a difference). A method scored in only one of the runs (the rerun may leave out a
baseline whose weights it lacks) is named and skipped. Prints one line per metric (the largest difference
and where), then a verdict; exit 0 when reproduced, 1 when not, 2 for bad input. Pass several files joined
by "+" to compare split halves together.
"""

from __future__ import annotations

import argparse
import math
import sys

from recipes.default_model.table import read_metrics
from render.common import InputError

#: the per-object summaries compared for each method (`novel`: means over views 1 to N-1)
PARTS = ("novel", "mesh")


def read_objects(spec: str) -> tuple[dict[str, dict], list[str]]:
    """({object id: record}, methods) of one or more metrics.json files joined by "+"."""
    objects: dict[str, dict] = {}
    methods: list[str] | None = None
    for name in spec.split("+"):
        run = read_metrics(name)
        found, these = run["objects"], run["methods"]
        if methods is not None and these != methods:
            raise InputError(f"{name}: scores {these}, the other files {methods}; join runs of one kind")
        methods = these
        objects.update(found)
    return objects, methods or []


def _values(record: dict, methods: list[str]) -> dict[str, float | None]:
    """{"method.part.metric": value} of one object; None for a mesh that failed."""
    out: dict[str, float | None] = {}
    for m in methods:
        scores = (record.get("methods") or {}).get(m) or {}
        for part in PARTS:
            values = scores.get(part) or {}
            if "failed" in values:
                out[f"{m}.{part}.failed"] = None
                continue
            for k, v in values.items():
                out[f"{m}.{part}.{k}"] = float(v)
    gt = record.get("gt_views_mesh") or {}
    for k, v in gt.items():
        out[f"ground-truth views.mesh.{k}"] = None if k == "failed" else float(v)
    return out


def compare(reference: str, run: str, atol: float) -> tuple[bool, list[str]]:
    """(reproduced, report lines)."""
    ref, ref_methods = read_objects(reference)
    new, new_methods = read_objects(run)
    shared = [m for m in ref_methods if m in new_methods]
    lines = []
    skipped = sorted(set(ref_methods) ^ set(new_methods))
    if skipped:
        lines.append(f"scored in one run only, not compared: {', '.join(skipped)}")
    if set(ref) != set(new):
        missing, extra = sorted(set(ref) - set(new)), sorted(set(new) - set(ref))
        lines.append(
            f"objects differ: {len(missing)} missing from the rerun, {len(extra)} not in the reference"
        )
        return False, lines
    worst: dict[str, tuple[float, str]] = {}
    equal = total = 0
    for oid in sorted(ref):
        a, b = _values(ref[oid], shared), _values(new[oid], shared)
        for key in sorted(set(a) | set(b)):
            u, v = a.get(key, math.nan), b.get(key, math.nan)
            total += 1
            if u == v:
                equal += 1
                d = 0.0
            elif u is None or v is None or math.isnan(u) or math.isnan(v):
                d = math.inf  # a mesh in one run only, or a metric only one run has
            else:
                d = abs(u - v)
            metric = key.split(".", 1)[1] if "." in key else key
            if d >= worst.get(metric, (-1.0, ""))[0]:
                worst[metric] = (d, f"{key.split('.', 1)[0]}, {oid}")
    for metric, (d, where) in sorted(worst.items()):
        lines.append(
            f"{metric}: " + (f"largest difference {d:.3g} ({where})" if d else "equal for every object")
        )
    ok = all(d <= atol for d, _ in worst.values())
    verdict = "reproduced" if ok else "NOT reproduced"
    lines.append(
        f"{verdict}: {len(ref)} objects, methods {', '.join(shared)}; {equal} of {total} values equal to "
        f"every digit, all within {atol:g}" + ("" if ok else " is false")
    )
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="the committed run's metrics.json (several joined by '+')")
    ap.add_argument("run", help="the rerun's metrics.json (several joined by '+', in the same order)")
    ap.add_argument("--atol", type=float, default=1e-4, help="largest allowed absolute difference")
    args = ap.parse_args(argv)
    try:
        if not args.atol >= 0:
            raise InputError(f"--atol {args.atol}: expected a non-negative tolerance")
        ok, lines = compare(args.reference, args.run, args.atol)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
