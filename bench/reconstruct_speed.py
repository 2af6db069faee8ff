"""The mesh stage, before and after, on the same views: time and quality side by side.

For each object (procedural objects and the real third-party meshes of `bench.reconstruct_quality`),
render 21 views at elevation 10 at each view size (64 px, what `mv3d generate` gives with the default
model, and 256 px), then reconstruct each set twice:

- "before": the field fit of a git revision (default 5b3ff68, before packed rays) with the fixed detail
  the reconstruction used then (grid 128, 40000 faces, 1024 texels);
- "after": this checkout's `mv3d.reconstruct.reconstruct` with its defaults (packed rays; grid, faces
  and texture size from the views' size, `detail_for_views`).

Everything else (hull, clean-up, decimation, texture baking, export) is this checkout's code in both,
so the difference is the field fit and the detail settings. Quality is scored against the source mesh
in the unit cube (Chamfer, mean of both directions; F-score at 0.05; volume IoU at 64^3). Writes
bench/results/reconstruct_speed.json and .md.

    PYOPENGL_PLATFORM=egl python -m bench.reconstruct_speed [--sizes 64 256] [--procedural 3] [--baseline-rev 5b3ff68]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from bench.harness import environment
from bench.reconstruct_quality import objects
from eval.mesh_metrics import chamfer_distance, f_score, volume_iou
from render.cameras import static_orbit
from render.common import atomic_write_json, atomic_write_text
from render.dataset import write_orbit_dataset
from render.renderers import get_renderer

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
#: The fixed detail every reconstruction used before it followed the views' size.
BEFORE_DETAIL = {"resolution": 128, "target_faces": 40000, "texture_size": 1024}


def field_module_at(rev: str, work: Path):
    """`mv3d/reconstruct/field.py` as it was at git revision `rev`, imported as a separate module."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:mv3d/reconstruct/field.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = work / f"field_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"field_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def run_once(views: Path, fit_field, **kwargs) -> tuple[object, float, float]:
    """Reconstruct `views` with `fit_field` standing in for the field fit: (result, wall s, CPU s)."""
    import mv3d.reconstruct.field as field
    from mv3d.reconstruct import reconstruct

    saved = field.fit_field
    field.fit_field = fit_field
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        result = reconstruct(views, progress=False, **kwargs)
        return result, time.perf_counter() - wall, time.process_time() - cpu
    finally:
        field.fit_field = saved


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procedural", type=int, default=3)
    ap.add_argument("--third-party", nargs="*", default=["bunny", "duck", "mug"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--baseline-rev", default="5b3ff68")
    ap.add_argument("--out", type=Path, default=RESULTS / "reconstruct_speed.json")
    args = ap.parse_args(argv)

    import mv3d.reconstruct.field as field

    work = Path(tempfile.mkdtemp(prefix="mv3d-bench-speed-"))
    before_fit = field_module_at(args.baseline_rev, work).fit_field
    after_fit = field.fit_field
    orbit = static_orbit(21, elevation_deg=10.0)
    renderer = get_renderer("fast")
    rows = []
    for name, mesh in objects(args.procedural, args.third_party):
        gt = mesh.scene.to_geometry()
        for size in args.sizes:
            rgba = renderer.render(mesh, orbit, size).rgba
            views = write_orbit_dataset(
                work / f"{name}_{size}", rgba, orbit, source_to_world=mesh.source_to_world
            )
            for which, fit, kwargs in (("before", before_fit, BEFORE_DETAIL), ("after", after_fit, {})):
                res, wall, cpu = run_once(views, fit, **kwargs)
                row = {
                    "object": name,
                    "view_px": size,
                    "version": which,
                    "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2),
                    "timings": {k: round(v, 2) for k, v in res.timings.items()},
                    "faces": len(res.mesh.faces),
                    "chamfer": chamfer_distance(res.mesh, gt, num_points=100_000),
                    "f_score@0.05": f_score(res.mesh, gt, threshold=0.05, num_points=100_000),
                    "volume_iou": volume_iou(res.mesh, gt, resolution=64),
                    "load_average_1min": os.getloadavg()[0],
                }
                rows.append(row)
                print(
                    f"{name:16s} {size:4d} px {which:6s} {wall:6.1f} s wall {cpu:6.1f} s cpu  chamfer "
                    f"{row['chamfer']:.4f} IoU {row['volume_iou']:.3f} faces {row['faces']}",
                    flush=True,
                )
    shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for size in args.sizes:
        for which in ("before", "after"):
            sel = [r for r in rows if r["view_px"] == size and r["version"] == which]
            summary[f"{size}px_{which}"] = {
                key: float(np.mean([r[key] for r in sel]))
                for key in ("wall_s", "cpu_s", "chamfer", "f_score@0.05", "volume_iou")
            } | {"max_wall_s": float(np.max([r["wall_s"] for r in sel])), "objects": len(sel)}
    report = {
        "setup": {
            "views": 21,
            "elevation_deg": 10.0,
            "sizes": args.sizes,
            "baseline_rev": args.baseline_rev,
            "before_detail": BEFORE_DETAIL,
            "environment": environment(),
        },
        "summary": summary,
        "rows": rows,
    }
    atomic_write_json(args.out, report)
    lines = [
        f"Mesh stage before ({args.baseline_rev}: dense field fit, grid 128, 40000 faces, 1024 texels) and after "
        "(packed rays, detail from the view size), 21 views at elevation 10, the same views for both; "
        f"{report['setup']['environment']['cpu']}, {report['setup']['environment']['usable_cpus']} CPUs, "
        f"load average {report['setup']['environment']['load_average']}.",
        "",
        "| views | version | mean wall s | max wall s | mean CPU s | Chamfer | F@0.05 | volume IoU |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        size, which = key.split("_")
        lines.append(
            f"| {size} | {which} | {s['wall_s']:.1f} | {s['max_wall_s']:.1f} | {s['cpu_s']:.1f} | "
            f"{s['chamfer']:.4f} | {s['f_score@0.05']:.3f} | {s['volume_iou']:.3f} |"
        )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
