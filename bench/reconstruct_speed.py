"""The mesh stage, before and after, on the same views: time and quality side by side.

For each object (procedural objects and the real third-party meshes of `bench.reconstruct_quality`),
render 21 views at elevation 10 at each view size (64 px, what `mv3d generate` gives with the default
model, and 256 px), then reconstruct each set with two versions of the code:

- "before": `mv3d.reconstruct` as it was at a git revision (default 4ee4196, the mesh stage of main
  before issue 19's 256 px work: grid 128, 40000 faces, 1024 texels at 256 px), with its own defaults;
- "after": this checkout's `mv3d.reconstruct` with its defaults.

Each reconstruction runs in a fresh Python process (the revision's `mv3d/reconstruct`, `mv3d/export.py`
and `render/` exported with `git archive`; this checkout for "after"), one torch thread unless
OMP_NUM_THREADS says otherwise, so neither version inherits the other's imports or caches and every
stage, hull to texture, is the version's own. The process reports its wall and CPU seconds around
`reconstruct` (imports excluded) and the mesh; quality is scored here against the source mesh in the
unit cube (Chamfer, mean of both directions; F-score at 0.05; volume IoU at 64^3). The two versions run
back to back on each view set, so load from other jobs hits both alike. Issue 19's targets: 21 views at
64 px in at most 15 s and at 256 px in at most 30 s per object on an idle 2-core CPU. Writes
bench/results/reconstruct_speed.json and .md.

    PYOPENGL_PLATFORM=egl python -m bench.reconstruct_speed [--sizes 64 256] [--procedural 3] [--baseline-rev 4ee4196]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
#: What a version needs to reconstruct: exported from the baseline revision.
CODE_PATHS = ("mv3d/__init__.py", "mv3d/reconstruct", "mv3d/export.py", "render")
#: Issue 19's limits per object on an idle 2-core CPU, seconds, by view size.
TARGET_S = {64: 15.0, 256: 30.0}

#: Run in a fresh process with the version's code first on sys.path: argv = views, mesh.npz.
WORKER = """
import json, sys, time
import numpy as np
from mv3d.reconstruct import reconstruct
wall, cpu = time.perf_counter(), time.process_time()
res = reconstruct(sys.argv[1], progress=False)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
np.savez(sys.argv[2], vertices=np.asarray(res.mesh.vertices), faces=np.asarray(res.mesh.faces))
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "timings": res.timings}))
"""


def export_revision(rev: str, work: Path) -> Path:
    """The code of `CODE_PATHS` at git revision `rev`, unpacked into a folder of `work`."""
    dest = work / f"code_{rev}"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, *CODE_PATHS], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_version(code: Path, views: Path, mesh_path: Path) -> dict:
    """Reconstruct `views` with the code under `code` in a fresh process: its report and the mesh."""
    import trimesh

    env = dict(os.environ, PYTHONPATH=str(code))
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(views), str(mesh_path)],
        env=env,
        cwd=code,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reconstruction with {code} failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(mesh_path) as m:
        report["mesh"] = trimesh.Trimesh(m["vertices"], m["faces"], process=False)
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procedural", type=int, default=3)
    ap.add_argument("--third-party", nargs="*", default=["bunny", "duck", "mug", "teddy2_VHACD_CHs"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--baseline-rev", default="4ee4196")
    ap.add_argument("--out", type=Path, default=RESULTS / "reconstruct_speed.json")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mv3d-bench-speed-"))
    versions = {"before": export_revision(args.baseline_rev, work), "after": REPO}
    orbit = static_orbit(21, elevation_deg=10.0)
    renderer = get_renderer("fast")
    rows = []
    try:
        for name, mesh in objects(args.procedural, args.third_party):
            gt = mesh.scene.to_geometry()
            for size in args.sizes:
                rgba = renderer.render(mesh, orbit, size).rgba
                views = write_orbit_dataset(
                    work / f"{name}_{size}", rgba, orbit, source_to_world=mesh.source_to_world
                )
                for which, code in versions.items():
                    rep = run_version(code, views, work / f"{name}_{size}_{which}.npz")
                    res = rep["mesh"]
                    row = {
                        "object": name,
                        "view_px": size,
                        "version": which,
                        "wall_s": round(rep["wall_s"], 2),
                        "cpu_s": round(rep["cpu_s"], 2),
                        "timings": {k: round(v, 2) for k, v in rep["timings"].items()},
                        "faces": len(res.faces),
                        "chamfer": chamfer_distance(res, gt, num_points=100_000),
                        "f_score@0.05": f_score(res, gt, threshold=0.05, num_points=100_000),
                        "volume_iou": volume_iou(res, gt, resolution=64),
                        "load_average_1min": os.getloadavg()[0],
                    }
                    rows.append(row)
                    print(
                        f"{name:16s} {size:4d} px {which:6s} {row['wall_s']:6.1f} s wall {row['cpu_s']:6.1f} s "
                        f"cpu  chamfer {row['chamfer']:.4f} IoU {row['volume_iou']:.3f} faces {row['faces']} "
                        f"{row['timings']} (load {row['load_average_1min']:.1f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for size in args.sizes:
        for which in versions:
            sel = [r for r in rows if r["view_px"] == size and r["version"] == which]
            summary[f"{size}px_{which}"] = {
                key: float(np.mean([r[key] for r in sel]))
                for key in ("wall_s", "cpu_s", "chamfer", "f_score@0.05", "volume_iou")
            } | {
                "max_wall_s": float(np.max([r["wall_s"] for r in sel])),
                "max_cpu_s": float(np.max([r["cpu_s"] for r in sel])),
                "objects": len(sel),
            }
    env = environment()
    report = {
        "setup": {
            "views": 21,
            "elevation_deg": 10.0,
            "sizes": args.sizes,
            "baseline_rev": args.baseline_rev,
            "threads": os.environ.get("OMP_NUM_THREADS", "1"),
            "targets_s": {str(k): v for k, v in TARGET_S.items()},
            "environment": env,
        },
        "summary": summary,
        "rows": rows,
    }
    atomic_write_json(args.out, report)
    lines = [
        f"Mesh stage before ({args.baseline_rev}'s mv3d.reconstruct with its defaults) and after (this "
        "checkout), 21 views at elevation 10, the same views for both, each run in a fresh process with "
        f"{report['setup']['threads']} torch thread(s); {env['cpu']}, {env['usable_cpus']} CPUs, load "
        f"average {[round(x, 2) for x in env['load_average']]} at the end (per-run loads in the JSON).",
        "",
        "| views | version | mean wall s | max wall s | mean CPU s | max CPU s | Chamfer | F@0.05 | volume IoU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        size, which = key.split("_")
        lines.append(
            f"| {size} | {which} | {s['wall_s']:.1f} | {s['max_wall_s']:.1f} | {s['cpu_s']:.1f} | "
            f"{s['max_cpu_s']:.1f} | {s['chamfer']:.4f} | {s['f_score@0.05']:.3f} | {s['volume_iou']:.3f} |"
        )
    lines += [
        "",
        "Per object (wall s / CPU s / faces / Chamfer / volume IoU; target per object: "
        + ", ".join(f"{k} px <= {v:.0f} s" for k, v in TARGET_S.items())
        + "):",
        "",
        "| object | views | before | after |",
        "|---|---|---|---|",
    ]
    by_key = {(r["object"], r["view_px"], r["version"]): r for r in rows}
    for name, size in dict.fromkeys((r["object"], r["view_px"]) for r in rows):
        cells = []
        for which in versions:
            r = by_key[(name, size, which)]
            cells.append(
                f"{r['wall_s']:.1f} / {r['cpu_s']:.1f} / {r['faces']} / {r['chamfer']:.4f} / {r['volume_iou']:.3f}"
            )
        lines.append(f"| {name} | {size} px | {cells[0]} | {cells[1]} |")
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
