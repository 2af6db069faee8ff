"""Reconstruction quality and time from ground-truth renders (the numbers of issue 5).

For each object: render 21 views at 256 px, elevation 10 (the fast renderer, default framing),
reconstruct with each method, and score the mesh against the source mesh in the unit-cube frame with
eval.mesh_metrics: Chamfer distance (mean of both directions), F-score at 0.05, volume IoU (64^3).
Objects: mv3d's procedural objects and real third-party meshes (recipes/default_model/third_party.py: the pybullet_data
assets). Writes bench/results/reconstruct_cpu.json (or _gpu, or --out) and, in the same folder, a
side-by-side GIF/PNG of the views next to the reconstructed mesh rendered from the same cameras.

    PYOPENGL_PLATFORM=egl python -m bench.reconstruct_quality [--procedural 3] [--methods field hull]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from bench.harness import environment
from eval.mesh_metrics import chamfer_distance, f_score, volume_iou
from mv3d.reconstruct import reconstruct
from render.cameras import static_orbit
from render.common import atomic_write_json
from render.dataset import write_orbit_dataset
from render.meshes import LoadedMesh, load_mesh, normalize_scene
from render.renderers import get_renderer

RESULTS = Path(__file__).resolve().parent / "results"


def objects(n_procedural: int, third_party: list[str]):
    """(name, LoadedMesh) pairs."""
    from render.procedural import procedural_object

    for i in range(n_procedural):
        scene, s2w = normalize_scene(procedural_object(0, i), source=f"procedural:0:{i}")
        yield f"procedural_{i}", LoadedMesh(scene=scene, source_to_world=s2w, source=f"procedural:0:{i}")
    if third_party:
        from recipes.default_model.third_party import third_party_meshes

        paths = {p.stem: p for p in third_party_meshes()}
        for name in third_party:
            if name in paths:
                yield name, load_mesh(paths[name])
            else:
                print(f"skipping third-party mesh {name}: not in {sorted(paths)}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procedural", type=int, default=3)
    ap.add_argument("--third-party", nargs="*", default=["bunny", "duck", "mug", "teddy2_VHACD_CHs"])
    ap.add_argument("--methods", nargs="+", default=["field", "hull"])
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--grid", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or RESULTS / f"reconstruct_{'gpu' if args.device.startswith('cuda') else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    orbit = static_orbit(args.views, elevation_deg=10.0)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="mv3d-bench-recon-"))
    renderer = get_renderer("fast")
    picture_done = False
    for name, mesh in objects(args.procedural, args.third_party):
        rgba = renderer.render(mesh, orbit, args.resolution).rgba
        views = write_orbit_dataset(work / name, rgba, orbit, source_to_world=mesh.source_to_world)
        gt = mesh.scene.to_geometry()
        for method in args.methods:
            t, cpu = time.perf_counter(), time.process_time()
            res = reconstruct(views, method=method, resolution=args.grid, device=args.device, progress=False)
            wall = time.perf_counter() - t
            # CPU time of this process (all its threads): independent of other jobs on a shared machine.
            cpu = time.process_time() - cpu
            row = {
                "object": name,
                "method": method,
                "chamfer": chamfer_distance(res.mesh, gt, num_points=100_000),
                "f_score@0.05": f_score(res.mesh, gt, threshold=0.05, num_points=100_000),
                "volume_iou": volume_iou(res.mesh, gt, resolution=64),
                "faces": len(res.mesh.faces),
                "seconds": wall,
                "cpu_seconds": cpu,
                "load_average_1min": os.getloadavg()[0],
                "timings": {k: round(v, 2) for k, v in res.timings.items()},
                "warnings": res.warnings,
            }
            rows.append(row)
            print(
                f"{name:20s} {method:6s} chamfer {row['chamfer']:.4f} F@0.05 {row['f_score@0.05']:.3f} "
                f"IoU {row['volume_iou']:.3f} {wall:6.1f} s wall {cpu:6.1f} s cpu (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            if method == args.methods[0] and not picture_done:
                from mv3d.cli.reconstruct_cmd import comparison_frames
                from mv3d.export import side_by_side

                v, f = comparison_frames(views, res.mesh, renderer)
                frames = side_by_side(v, f, out.parent / "reconstruct_side_by_side.gif")
                from PIL import Image

                # four views a quarter-turn apart (0, 5, 10, 15 of 21), whatever --views is
                rows4 = [frames[k * len(frames) // 4] for k in range(4)]
                Image.fromarray(np.concatenate(rows4, axis=0)).save(
                    out.parent / "reconstruct_side_by_side.png"
                )
                picture_done = True
    shutil.rmtree(work, ignore_errors=True)  # the rendered views are only inputs
    summary = {}
    for method in args.methods:
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {
            "mean_chamfer": float(np.mean([r["chamfer"] for r in sel])),
            "mean_f_score@0.05": float(np.mean([r["f_score@0.05"] for r in sel])),
            "mean_volume_iou": float(np.mean([r["volume_iou"] for r in sel])),
            "mean_seconds": float(np.mean([r["seconds"] for r in sel])),
            "max_seconds": float(np.max([r["seconds"] for r in sel])),
            "mean_cpu_seconds": float(np.mean([r["cpu_seconds"] for r in sel])),
            "objects_within_targets": int(
                sum(r["chamfer"] <= 0.015 and r["volume_iou"] >= 0.75 for r in sel)
            ),
            "objects": len(sel),
        }
    atomic_write_json(
        out,
        {
            "setup": {
                "views": args.views,
                "resolution": args.resolution,
                "elevation_deg": 10.0,
                "grid": args.grid,
                "device": args.device,
                "environment": environment(),
                "targets": {"chamfer": 0.015, "volume_iou": 0.75, "seconds_cpu": 120},
            },
            "summary": summary,
            "rows": rows,
        },
    )
    print(f"wrote {out}")
    for method, s in summary.items():
        print(method, {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()})


if __name__ == "__main__":
    main()
