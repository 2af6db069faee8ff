"""The README's picture of a model at work: a test-split object and a real photograph, each with its
input, the generated orbit and the mesh reconstructed from it, rendered from the same cameras.

    python -m recipes.default_model.figure --eval TEST_EVAL_DIR... [--object ID] [--photo PATH]
        [--model default] [--out docs/images] [--example examples/example.png]

TEST_EVAL_DIR are `mv3d eval` output folders of the held-out test split (the split may be evaluated in
parts; each objects/ID/gt holds the ground-truth orbit, whose view 0 is the input). The object shown is
--object, or by default the one whose novel-view PSNR for "ours" is the median over all the folders (a
typical object, not a chosen one). With --example, that object's input view (azimuth 0, elevation 10,
the eval's framing) is also rendered at 256 px from its source mesh and written there: the README's
Quick start image. The photograph is --photo, by default `examples/coffee.jpg` (scikit-image's
`coffee.png`, a real photo of a cup on a saucer; CC0, Rachel Michetti), matted by `mv3d generate` as a
user's photo is. Both are generated with `mv3d generate` (21 views, seed 0, a mesh).

Writes OUT/generated_orbit_and_mesh.png (per input: generated views on top, mesh renders below, every
third view; for the test object a third row with the ground truth) and OUT/generated_orbit_and_mesh.gif
(the test object's whole orbit: generated view, mesh render, ground truth), and prints the per-stage
timings of each `mv3d generate` run.
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
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """(..., 4) uint8 RGBA -> (..., 3) uint8 composited on white."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.round(rgb).astype(np.uint8)


def _big(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def median_object(metrics: dict, method: str = "ours") -> str:
    """The object id whose novel-view PSNR of `method` is the run's median (the lower middle one if even)."""
    scores = sorted((o["methods"][method]["novel"]["psnr"], oid) for oid, o in metrics["objects"].items())
    if not scores:
        raise SystemExit("the eval run holds no objects")
    return scores[(len(scores) - 1) // 2][1]


def _generated(
    image: Path, tmp: Path, model: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(input (S, S, 4), views (N, S, S, 4), mesh renders (N, S, S, 4), timings) of one `generate` run."""
    import trimesh

    from mv3d.generate import generate
    from render.dataset import load_rgba, read_orbit_dataset
    from render.meshes import LoadedMesh, read_trimesh
    from render.renderers.fast import FastRenderer

    result = generate([image], tmp, model=model, views=21, seed=seed)[0]
    ds = read_orbit_dataset(result.out_dir)
    views = np.stack([load_rgba(p) for p in ds.image_paths])
    mesh = read_trimesh(result.out_dir / "mesh.glb")
    loaded = LoadedMesh(trimesh.Scene(mesh), np.eye(4), "reconstructed mesh")
    renders = np.asarray(FastRenderer().render(loaded, ds.orbit, views.shape[1]).rgba)
    return load_rgba(result.out_dir / "input.png"), views, renders, result.timings


def _write_example(spec: str, object_id: str, path: Path, size: int = 256) -> None:
    """Render object `object_id` of the source `spec` (a mesh file, or `CATALOGUE.sh3f#MEMBER` as an eval
    records it) from azimuth 0 at elevation 10, `size` px RGBA, to `path`."""
    from PIL import Image

    from render.cameras import static_orbit
    from render.renderers.fast import FastRenderer
    from render.sources import resolve_sources

    source = next(s for s in resolve_sources([spec.split("#")[0]]) if s.object_id == object_id)
    rgba = np.asarray(FastRenderer().render(source.load(), static_orbit(1, 10.0), size).rgba)
    _save_atomic(Image.fromarray(rgba[0]), path, optimize=True)
    print(f"wrote {path} ({spec})")


def _save_atomic(image, path: Path, **kwargs) -> None:
    """PIL `image.save(path, **kwargs)` through a temporary file, so a kill never leaves half a picture."""
    import io

    from render.common import atomic_write_bytes

    buf = io.BytesIO()
    image.save(buf, format=path.suffix.lstrip(".").upper(), **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def _rows(first: np.ndarray | None, orbit_rows: list[np.ndarray], cols: list[int], show: int) -> np.ndarray:
    """One block of the sheet: the input (or a blank) left of the first row, blanks left of the others."""
    blank = np.full((show, show, 3), 255, np.uint8)
    lines = []
    for k, row in enumerate(orbit_rows):
        head = _big(_on_white(first), show) if (k == 0 and first is not None) else blank
        lines.append(np.concatenate([head] + [_big(_on_white(row[i]), show) for i in cols], axis=1))
    return np.concatenate(lines, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--eval", required=True, type=Path, nargs="+", help="`mv3d eval` folders of the test split"
    )
    parser.add_argument("--object", default=None, help="object id (default: the median-PSNR object)")
    parser.add_argument("--photo", default=str(EXAMPLES / "coffee.jpg"), help="a photograph")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--example", type=Path, default=None, help="also write the object's input at 256 px")
    args = parser.parse_args()

    from PIL import Image

    from recipes.default_model.table import read_metrics
    from render.dataset import load_rgba, read_orbit_dataset

    objects: dict = {}
    for run in args.eval:
        objects.update(read_metrics(run / "metrics.json")["objects"])
    object_id = args.object or median_object({"objects": objects})
    # the eval's folder of that object and what its ground truth records of it (id, source spec)
    obj_dir, gt_object = next(
        (p, info)
        for run in args.eval
        for p in (run / "objects").iterdir()
        if p.is_dir() and (p / "gt").is_dir()
        for info in [json.loads((p / "gt" / "transforms.json").read_text()).get("object", {})]
        if info.get("id") == object_id
    )
    truth = read_orbit_dataset(obj_dir / "gt")
    if args.example is not None:
        _write_example(gt_object["spec"], object_id, args.example)
    gt = np.stack([load_rgba(p) for p in truth.image_paths])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        inp_o, views_o, mesh_o, t_o = _generated(
            truth.image_paths[0], Path(tmp) / "object", args.model, args.seed
        )
        inp_p, views_p, mesh_p, t_p = _generated(Path(args.photo), Path(tmp) / "photo", args.model, args.seed)

    show = views_o.shape[1] * SCALE
    cols = list(range(0, len(views_o), 3))
    gap = np.full((show // 4, show * (len(cols) + 1), 3), 255, np.uint8)
    sheet = np.concatenate(
        [_rows(inp_o, [views_o, mesh_o, gt], cols, show), gap, _rows(inp_p, [views_p, mesh_p], cols, show)],
        axis=0,
    )
    _save_atomic(Image.fromarray(sheet), out / "generated_orbit_and_mesh.png", optimize=True)
    frames = [
        Image.fromarray(np.concatenate([_big(_on_white(x), show) for x in (v, r, g)], axis=1))
        for v, r, g in zip(views_o, mesh_o, gt, strict=True)
    ]
    _save_atomic(
        frames[0],
        out / "generated_orbit_and_mesh.gif",
        save_all=True,
        append_images=frames[1:],
        duration=120,
        loop=0,
    )
    print(
        json.dumps(
            {"object": object_id, "photo": args.photo, "timings_s": {"object": t_o, "photo": t_p}},
            default=float,
        )
    )
    print(f"wrote {out / 'generated_orbit_and_mesh.png'} and .gif")


if __name__ == "__main__":
    main()
