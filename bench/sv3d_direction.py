"""Settle SV3D's azimuth direction with real weights (one call, a GPU; not part of the test suite).

The reference sampling code fixes no handedness: it passes azimuths in radians, and whether SV3D's
training renders turned counter-clockwise (mv3d's convention, seen from +Z) or clockwise is not
written down. mv3d keeps it as ``sv3d_azimuth_direction`` (+1 / -1) in the model's ``mv3d_model.json``.
This experiment decides it: for asymmetric objects (procedural objects carry an off-centre attachment,
a marker and a handle, so a mirrored orbit is visibly wrong) it generates the orbit with both signs,
meshes each, and compares

* the views with the ground-truth renders (novel-view PSNR, LPIPS when weights are given): the right
  sign shows the object's side that is really there;
* the reconstruction's consistency (``reproj_self``: each generated view reprojected through the mesh
  made from all of them, lower is better), which needs no ground truth: with the wrong sign the view
  generated for azimuth +phi shows the object from -phi, so the views do not fit the cameras they are
  placed at and the mesh made from them explains them worse (and its Chamfer to the object grows).

    python bench/sv3d_direction.py --model models/sv3d_p --out reports/sv3d_direction \
        [--objects procedural:8:7] [--device cuda] [--steps 50]

It prints both signs' numbers and the sign to write into ``mv3d_model.json``; about 2 x 8 generations
and reconstructions (minutes on one GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a converted SV3D_p model folder (mv3d convert-weights)")
    ap.add_argument("--out", type=Path, required=True, help="report folder (one subfolder per sign)")
    ap.add_argument("--objects", nargs="+", default=["procedural:8:7"], help="asymmetric objects (SOURCES)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 50)")
    ap.add_argument("--lpips-weights", type=Path, default=None)
    args = ap.parse_args()

    from eval.runner import run_benchmark
    from mv3d.cli.eval_cmd import _reconstruct_fn
    from mv3d.generate import ViewGenerator

    gen = ViewGenerator.load(args.model, args.device, steps=args.steps)
    if gen.pipeline.info.conditioning != "sv3d_p":
        print(f"{args.model}: conditioning {gen.pipeline.info.conditioning}, expected sv3d_p (camera input)")
        return 2
    lpips_model = None
    if args.lpips_weights is not None:
        from eval.lpips import LPIPS

        lpips_model = LPIPS.from_dir("alex", args.lpips_weights).to(args.device)
    summary = {}
    for sign in (1, -1):
        gen.pipeline.info = dataclasses.replace(gen.pipeline.info, sv3d_azimuth_direction=sign)
        metrics = run_benchmark(
            args.objects,
            args.out / f"direction{sign:+d}",
            gen,
            views=21,
            elevation=10.0,
            baselines=[],
            reconstruct_fn=_reconstruct_fn("field", 0, args.device),
            lpips_model=lpips_model,
            model_name=str(args.model),
            extra_settings={"sv3d_azimuth_direction": sign},
        )
        agg = metrics["aggregate"]["ours"]
        summary[sign] = {
            "novel_psnr": agg["novel"]["psnr"]["mean"],
            "novel_lpips": (agg["novel"].get("lpips") or {}).get("mean"),
            "reproj_self": agg["mesh"]["reproj_self"]["mean"],
            "chamfer": agg["mesh"]["chamfer"]["mean"],
        }
        print(
            f"direction {sign:+d}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in summary[sign].items() if v is not None)
        )
    votes = {
        "novel_psnr": max(summary, key=lambda s: summary[s]["novel_psnr"]),
        "reproj_self": min(summary, key=lambda s: summary[s]["reproj_self"]),
        "chamfer": min(summary, key=lambda s: summary[s]["chamfer"]),
    }
    agree = len(set(votes.values())) == 1
    verdict = votes["reproj_self"]
    print(f"votes: {votes}")
    print(
        f"sv3d_azimuth_direction = {verdict:+d}"
        + ("" if agree else " (the measures disagree: look at the contact sheets in the report folders)")
    )
    (args.out / "verdict.json").write_text(
        json.dumps({"summary": summary, "votes": votes, "verdict": verdict})
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
