"""Matte accuracy on objects over real photographs, and over plain backdrops, against the true alpha.

    python -m bench.matte_photos [--objects 6] [--size 384] [--out bench/results/matte_photos.json]

The test set is made here, from what is on disk in the environment: procedural objects (render/) are
rendered with alpha by the fast renderer at the default framing, then composited over crops of real
photographs (scikit-image's and matplotlib's sample photos; each composite takes its own crop
position and scale, and the object is shifted and scaled a little) and saved as JPEG (quality 90), as a
photo would be. The plain set puts the same objects over a plain backdrop with a gradient and noise
(as tests/test_preprocess.py does). Every matte method is scored by mask IoU (alpha > 0.5) against the
render's alpha; the result file holds every score and the median per method and set.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

#: Photographs used as backgrounds: (package, file). Textures and scenes first (brick .. rocket: no
#: subject of their own, or one that crops rarely show), then photos of a subject (a motorcycle, a cup, a
#: cat, a person) that a salient-object matte keeps along with the pasted object when the crop shows it.
PHOTOS = (
    ("skimage", "brick.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "rocket.jpg"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "coffee.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "astronaut.png"),
    ("matplotlib", "grace_hopper.jpg"),
)
#: How many of PHOTOS (from the start) are scenes without a subject of their own.
SCENES = 5


def photo_path(package: str, name: str) -> Path:
    """Path of a sample photo shipped inside an installed package (no download)."""
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def load_photo(package: str, name: str) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; grayscale photos are repeated to three channels."""
    from PIL import Image

    im = Image.open(photo_path(package, name)).convert("RGB")
    return np.asarray(im, np.float32) / 255.0


def render_objects(n: int, size: int, seed: int = 11) -> list[np.ndarray]:
    """`n` procedural objects rendered at azimuth 0, elevation 10 (default framing): (size, size, 4) uint8."""
    from render.cameras import static_orbit
    from render.meshes import LoadedMesh, normalize_scene
    from render.procedural import procedural_object
    from render.renderers import get_renderer

    out = []
    with get_renderer("fast") as renderer:
        for i in range(n):
            scene, s2w = normalize_scene(procedural_object(seed, i))
            out.append(
                renderer.render(LoadedMesh(scene, s2w, f"procedural {i}"), static_orbit(1), size).rgba[0]
            )
    return out


def crop_photo(
    photo: np.ndarray, size: int, rng: np.random.Generator, scales: tuple[float, float] = (0.35, 1.0)
) -> np.ndarray:
    """A random square crop of `scales` (fractions) of the photo's shorter side, resized to (size, size, 3)."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(round(rng.uniform(*scales) * min(h, w)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = (np.clip(photo[y0 : y0 + side, x0 : x0 + side], 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS), np.float32) / 255


def place(rgba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The render scaled by 0.8-1.25 and shifted by up to 12% of the side (transparent outside)."""
    from PIL import Image

    size = rgba.shape[0]
    scale = rng.uniform(0.8, 1.25)
    dx, dy = rng.uniform(-0.12, 0.12, 2) * size
    side = size / scale
    cx, cy = size / 2 - dx / scale, size / 2 - dy / scale
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    a = rgba[..., 3:].astype(np.float32) / 255
    prem = np.concatenate([rgba[..., :3] * a, a * 255], -1).astype(np.float32)
    ch = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(prem[..., c]), "F").transform(
                (size, size), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR, fillcolor=0
            )
        )
        for c in range(4)
    ]
    out = np.stack(ch, -1)
    al = np.clip(out[..., 3:] / 255, 0, 1)
    rgb = np.where(al > 1e-3, out[..., :3] / np.maximum(al, 1e-3), 0)
    return np.concatenate([np.clip(rgb, 0, 255), al * 255], -1).astype(np.uint8)


def as_jpeg(img: np.ndarray, quality: int = 90) -> np.ndarray:
    """(H, W, 3) float in [0, 1] through a JPEG round trip, as a photo would come."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255


def photo_composites(
    renders: list[np.ndarray],
    photos: list[np.ndarray],
    per_object: int,
    seed: int = 0,
    scales: tuple[float, float] = (0.35, 1.0),
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Objects over photo crops: (rgb (S, S, 3) float in [0, 1], true alpha (S, S) float, photo index).

    Object i's k-th composite uses photo (i * per_object + k) mod len(photos), so photos rotate."""
    rng = np.random.default_rng(seed)
    out = []
    for i, rgba in enumerate(renders):
        size = rgba.shape[0]
        for k in range(per_object):
            j = (i * per_object + k) % len(photos)
            obj = place(rgba, rng)
            a = obj[..., 3:].astype(np.float32) / 255
            bg = crop_photo(photos[j], size, rng, scales)
            img = obj[..., :3].astype(np.float32) / 255 * a + bg * (1 - a)
            out.append((as_jpeg(img), a[..., 0], j))
    return out


def plain_composites(renders: list[np.ndarray], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Objects over plain backdrops (light, mid grey, pale blue) with a 4% gradient, noise and JPEG."""
    rng = np.random.default_rng(seed)
    out = []
    for rgba in renders:
        size = rgba.shape[0]
        a = rgba[..., 3:].astype(np.float32) / 255
        for bg in ((245, 245, 245), (128, 128, 128), (170, 200, 230)):
            ramp = 1 + 0.04 * np.linspace(-1, 1, size)[:, None, None]
            img = rgba[..., :3] * a + np.array(bg) * ramp * (1 - a) + rng.normal(0, 2, (size, size, 3))
            out.append((as_jpeg(np.clip(img, 0, 255) / 255, 85), a[..., 0]))
    return out


def mask_iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    """IoU of alpha > 0.5 against truth > 0.5 (both (H, W) in [0, 1])."""
    p, t = alpha > 0.5, truth > 0.5
    return float((p & t).sum() / max(1, (p | t).sum()))


def score(rgb: np.ndarray, truth: np.ndarray, method: str) -> tuple[float, str]:
    """(IoU, method used) of `mv3d.matting.matte(rgb, method)`; a matte that finds nothing scores 0."""
    from mv3d.matting import matte
    from render.common import InputError

    try:
        m = matte(rgb, method)
    except InputError:
        return 0.0, "none found"
    return mask_iou(m.alpha, truth), m.method


def medians(rows: list[dict]) -> dict[str, float | None]:
    """Median IoU per matte method over result rows (None for no rows: a small run may leave a set empty)."""
    return {
        m: round(float(np.median([r[m]["iou"] for r in rows])), 4) if rows else None
        for m in ("auto", "color", "learned")
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--per-object", type=int, default=4, help="photo composites per object")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "matte_photos.json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    renders = render_objects(args.objects, args.size)
    photos = [load_photo(*p) for p in PHOTOS]
    sets = {
        "photo": [(rgb, a, PHOTOS[j][1]) for rgb, a, j in photo_composites(renders, photos, args.per_object)],
        "plain": [(rgb, a, "plain") for rgb, a in plain_composites(renders)],
    }
    from bench.harness import environment

    report: dict = {
        "environment": environment(),
        "objects": args.objects,
        "size": args.size,
        "photos": [p[1] for p in PHOTOS],
        "sets": {},
    }
    for name, items in sets.items():
        rows = []
        for rgb, truth, bg in items:
            row = {"background": bg}
            for method in ("auto", "color", "learned"):
                if method == "learned" and row["auto"]["used"] == "isnet":
                    row[method] = row["auto"]  # the same deterministic network on the same picture
                    continue
                t = time.perf_counter()
                iou, used = score(rgb, truth, method)
                row[method] = {"iou": round(iou, 4), "used": used, "s": round(time.perf_counter() - t, 2)}
            rows.append(row)
            print(name, bg, {m: row[m]["iou"] for m in ("auto", "color", "learned")}, flush=True)
        report["sets"][name] = {"n": len(rows), "median_iou": medians(rows), "rows": rows}
        print(name, "median IoU", medians(rows), flush=True)
        if name == "photo":
            scenes = {p[1] for p in PHOTOS[:SCENES]}
            for part, keep in (("photo_scenes", True), ("photo_subjects", False)):
                sub = [r for r in rows if (r["background"] in scenes) == keep]
                report["sets"][part] = {"n": len(sub), "median_iou": medians(sub)}
                print(part, len(sub), "median IoU", medians(sub), flush=True)
            report["median_iou_by_background"] = {
                bg: medians([r for r in rows if r["background"] == bg])
                for bg in dict.fromkeys(r["background"] for r in rows)
            }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    from render.common import atomic_write_json

    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
