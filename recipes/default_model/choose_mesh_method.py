"""Choose a model's mesh method on validation: the rule MODEL_CARD.md states, applied to `mv3d eval` runs.

    python -m recipes.default_model.choose_mesh_method field=RUN_A/0/metrics.json+RUN_A/1/metrics.json \
        hull=RUN_B/0/metrics.json+RUN_B/1/metrics.json [--write MODEL_DIR]

Each argument is METHOD=RUNS: the validation runs (`mv3d eval --reconstruct --reconstruct-method METHOD`,
halves joined by "+") of one reconstruction method, the first argument the library's default. Over the
objects where ours made a mesh under every method, the method with the highest mean volume IoU of ours
is chosen, provided its mean Chamfer is at most 2% above the default's (otherwise the default stays).
Prints the comparison and the choice; --write sets it as `default_mesh_method` in MODEL_DIR's info (a
model whose info already names one is refused: a choice belongs to the runs it was made on).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from recipes.default_model.table import load_set, mesh_values
from render.common import InputError, atomic_write_json
from video_prior.limits import INFO_FILE

#: a method may cost at most this much Chamfer (relative to the default's) for its volume
MAX_CHAMFER_LOSS = 0.02


def choose(runs: dict[str, dict]) -> tuple[str, dict[str, tuple[float, float]], int]:
    """(chosen method, {method: (mean Chamfer, mean volume IoU) of ours}, objects compared).

    `runs` maps method -> pooled metrics (`table.load_set`), the first key the default. Objects are
    matched by position, so every run must score the same objects in the same order."""
    names = list(runs)
    counts = {len(m["objects"]) for m in runs.values()}
    if len(counts) != 1:
        raise InputError(
            f"the runs score different numbers of objects ({sorted(counts)}); expected the same split"
        )
    ids = [[o.get("object_id") for o in m["objects"].values()] for m in runs.values()]
    if any(i != ids[0] for i in ids):
        raise InputError("the runs score different objects or orders; expected the same split's runs")
    values = {n: {k: mesh_values(runs[n], "ours", k) for k in ("chamfer", "volume_iou")} for n in names}
    made = np.logical_and.reduce([np.isfinite(values[n]["chamfer"]) for n in names])
    if not made.any():
        raise InputError("no object has a mesh of ours under every method")
    means = {
        n: (float(values[n]["chamfer"][made].mean()), float(values[n]["volume_iou"][made].mean()))
        for n in names
    }
    default = names[0]
    allowed = [n for n in names if means[n][0] <= means[default][0] * (1 + MAX_CHAMFER_LOSS)]
    best = max(allowed, key=lambda n: means[n][1])
    return best, means, int(made.sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="METHOD=METRICS[+METRICS...], the library's default first")
    ap.add_argument("--write", type=Path, help="model folder whose info gets the chosen default_mesh_method")
    args = ap.parse_args(argv)
    try:
        runs, hashes = {}, set()
        for spec in args.runs:
            method, sep, paths = spec.partition("=")
            if not sep or not method or not paths:
                raise InputError(f"{spec}: expected METHOD=metrics.json[+metrics.json...]")
            runs[method] = load_set(paths)[1]
            for p, settings in zip(paths.split("+"), runs[method]["settings"], strict=True):
                recorded = (settings.get("extra") or {}).get("reconstruct_method")
                if recorded != method:
                    raise InputError(f"{p}: meshes made with {recorded!r}; expected a run of {method!r}")
                hashes.add(settings.get("model_hash"))
        if len(runs) < 2:
            raise InputError(f"{len(runs)} method given: expected the default and at least one other")
        best, means, n = choose(runs)
        for method, (chamfer, iou) in means.items():
            print(f"{method}: ours' Chamfer {chamfer:.4f}, volume IoU {iou:.4f} ({n} objects)")
        print(f"chosen: {best}")
        if args.write is not None:
            from mv3d.models import model_hash
            from video_prior.components import read_model_info

            info = read_model_info(args.write)  # the whole info, validated (InputError if not a model)
            if hashes != {model_hash(args.write)}:
                raise InputError(
                    f"the runs evaluated model hashes {sorted(map(str, hashes))}; expected {args.write}'s"
                )
            path = args.write / INFO_FILE
            if info.default_mesh_method is not None:
                raise InputError(
                    f"{path}: default_mesh_method is {info.default_mesh_method!r}; expected a model without one"
                )
            # written as mv3d writes every info file (ModelInfo's fields, in their order)
            atomic_write_json(path, dataclasses.replace(info, default_mesh_method=best).to_dict())
            print(f"wrote default_mesh_method {best} to {path}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
