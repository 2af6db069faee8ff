"""The README's picture of a model at work: the input, the generated orbit, and the mesh reconstructed
from it rendered from the same cameras.

    python -m recipes.default_model.figure [--model default] [--image examples/example.png] [--out docs/images]

Writes OUT/generated_orbit_and_mesh.png (input, then every third view: generated on top, mesh below) and
OUT/generated_orbit_and_mesh.gif (the whole orbit, generated view beside mesh render), and prints the
per-stage timings of the `mv3d generate` run it made.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

SCALE = 2  # 64 px views are shown at 128 px


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 RGBA -> (..., 3) uint8 composited on white."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.round(rgb).astype(np.uint8)


def _big(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--image", default="examples/example.png")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from PIL import Image

    from mv3d.generate import generate
    from render.dataset import load_rgba, read_orbit_dataset
    from render.meshes import LoadedMesh, read_trimesh
    from render.renderers.fast import FastRenderer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = generate([args.image], Path(tmp) / "run", model=args.model, views=21, seed=args.seed)[0]
        run, timings = result.run, result.timings
        ds = read_orbit_dataset(result.out_dir)
        views = np.stack([load_rgba(p) for p in ds.image_paths])
        size = views.shape[1]
        import trimesh

        mesh = read_trimesh(result.out_dir / "mesh.glb")
        loaded = LoadedMesh(trimesh.Scene(mesh), np.eye(4), "reconstructed mesh")
        renders = np.asarray(FastRenderer().render(loaded, ds.orbit, size).rgba)
        inp = load_rgba(result.out_dir / "input.png")

    show = size * SCALE
    blank = np.full((show, show, 3), 255, np.uint8)
    cols = list(range(0, len(views), 3))
    top = [_big(_on_white(inp), show)] + [_big(_on_white(views[i]), show) for i in cols]
    bottom = [blank] + [_big(_on_white(renders[i]), show) for i in cols]
    sheet = np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)
    Image.fromarray(sheet).save(out / "generated_orbit_and_mesh.png", optimize=True)
    frames = [
        Image.fromarray(np.concatenate([_big(_on_white(v), show), _big(_on_white(r), show)], axis=1))
        for v, r in zip(views, renders, strict=True)
    ]
    frames[0].save(
        out / "generated_orbit_and_mesh.gif", save_all=True, append_images=frames[1:], duration=120, loop=0
    )
    summary = {"model": run.get("model"), "model_hash": run.get("model_hash"), "timings_s": timings}
    print(json.dumps(summary, default=float))
    print(f"wrote {out / 'generated_orbit_and_mesh.png'} and .gif")


if __name__ == "__main__":
    main()
