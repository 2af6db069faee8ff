"""Render throughput: objects per minute for 21 views at 256 px, fast renderer and Blender (Cycles CPU).

    python -m bench.render_throughput                      # defaults: 8 objects fast, 2 with Blender
    python -m bench.render_throughput --fast-objects 20 --blender-objects 4 --workers 2

Each measurement is a whole `render_dataset` job (load or generate the object, render every view,
curation checks off, write PNGs and transforms.json atomically) on procedural objects, so the number
is what a user gets from `mv3d render-dataset procedural:N:SEED`. Prints the figures and writes
bench/results/render_throughput_cpu.json with a description of the machine (CPU, cores, load
average: the machines here are shared, so the load is part of the result).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import environment
from render.common import VERSIONED_PACKAGES, versions

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """`bench.harness.environment` plus what the renderers depend on (EGL platform, Blender)."""
    return {
        **environment(),
        "pyopengl_platform": os.environ.get("PYOPENGL_PLATFORM"),
        "gpu": "none (EGL on Mesa llvmpipe)",
        "versions": versions((*VERSIONED_PACKAGES, "bpy")),
    }


def run(renderer: str, n: int, views: int, resolution: int, workers: int, settings: dict, seed: int) -> dict:
    from render.jobs import render_dataset

    out = Path(tempfile.mkdtemp(prefix=f"mv3d-bench-{renderer}-"))
    try:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = render_dataset(
            [f"procedural:{n}:{seed}"],
            out,
            views=views,
            resolution=resolution,
            workers=workers,
            renderer=renderer,
            renderer_settings=settings,
            elevation=10.0,
            progress=False,
        )
        elapsed = time.perf_counter() - t0
        if summary["done"] != n:
            raise RuntimeError(f"{renderer}: only {summary['done']} of {n} objects rendered: {summary}")
        return {
            "renderer": renderer,
            "settings": settings,
            "objects": n,
            "views": views,
            "resolution": resolution,
            "workers": workers,
            "seconds": round(elapsed, 2),
            "objects_per_minute": round(60.0 * n / elapsed, 2),
            "seconds_per_view": round(elapsed / (n * views), 4),
            "load_average_1min_before": round(load0, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast-objects", type=int, default=8)
    parser.add_argument("--blender-objects", type=int, default=2)
    parser.add_argument("--views", type=int, default=21)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "render_throughput_cpu.json")
    args = parser.parse_args()
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

    results = {"machine": machine(), "runs": []}
    # Warm-up: the first job pays for imports and the GL context; not counted.
    run("fast", 1, 2, 64, 1, {}, seed=args.seed + 1000)
    results["runs"].append(
        run("fast", args.fast_objects, args.views, args.resolution, args.workers, {}, args.seed)
    )
    if args.blender_objects > 0:
        results["runs"].append(
            run(
                "blender",
                args.blender_objects,
                args.views,
                args.resolution,
                args.workers,
                {"samples": args.samples},
                args.seed,
            )
        )
    for r in results["runs"]:
        print(
            f"{r['renderer']:8s} {r['objects']} objects x {r['views']} views @ {r['resolution']} px, "
            f"{r['workers']} worker(s): {r['objects_per_minute']:.1f} objects/min "
            f"({r['seconds_per_view']:.3f} s/view; load average {r['load_average_1min_before']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from render.common import atomic_write_json

    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
