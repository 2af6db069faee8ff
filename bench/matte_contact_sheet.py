"""Contact sheet of real photographs and the matted, centred input.png that `mv3d generate` makes of them.

    python -m bench.matte_contact_sheet [--matte auto] [--work DIR] [--out docs/images/matte_photos.png]

Runs `mv3d generate PHOTO... --no-mesh --matte M` on four sample photographs that ship with installed
packages (scikit-image's chelsea.png, coffee.png, rocket.jpg; matplotlib's grace_hopper.jpg), then draws
one row per photo: the photo, and its input.png over a grey checkerboard (what the matte removed shows
as checkerboard), labelled with the matte used (from run.json) and the seconds preprocessing took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.matte_photos import photo_path

REPO = Path(__file__).resolve().parents[1]

PHOTOS = (
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "rocket.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
)
CELL = 256


def checkerboard(size: int, square: int = 16) -> np.ndarray:
    """(size, size, 3) float: light and mid grey squares."""
    yy, xx = np.mgrid[0:size, 0:size] // square
    return np.where(((yy + xx) % 2 == 0)[..., None], 0.85, 0.65) * np.ones(3, np.float32)


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """An RGB image letterboxed into (size, size, 3) on white."""
    from PIL import Image

    im = Image.fromarray(img)
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return np.asarray(canvas)


def sheet(rows: list[tuple[np.ndarray, np.ndarray, str]]) -> np.ndarray:
    """Rows of (photo RGB uint8, input.png RGBA uint8, label) -> one (rows * (CELL + 20), 2 CELL, 3) uint8."""
    from PIL import Image, ImageDraw

    out = []
    for photo, rgba, label in rows:
        a = rgba[..., 3:].astype(np.float32) / 255
        inp = np.asarray(
            Image.fromarray(
                ((rgba[..., :3] / 255 * a + checkerboard(rgba.shape[0]) * (1 - a)) * 255 + 0.5).astype(
                    np.uint8
                )
            ).resize((CELL, CELL), Image.Resampling.LANCZOS)
        )
        strip = Image.new("RGB", (2 * CELL, 20), (255, 255, 255))
        ImageDraw.Draw(strip).text((4, 4), label, fill=(0, 0, 0))
        out.append(np.concatenate([np.asarray(strip), np.concatenate([fit(photo, CELL), inp], 1)], 0))
    return np.concatenate(out, 0)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matte", default="auto")
    ap.add_argument("--work", type=Path, help="folder for the generations (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "matte_photos.png")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        paths = [photo_path(*p) for p in PHOTOS]
        cmd = [sys.executable, "-m", "mv3d", "generate", *map(str, paths), "--out", str(work)]
        subprocess.run([*cmd, "--no-mesh", "--quiet", "--matte", args.matte], check=True, cwd=REPO)
        rows, summary = [], []
        for p in paths:
            gen = work / p.stem
            run = json.loads((gen / "run.json").read_text())
            pre = run["preprocess"]
            photo = np.asarray(Image.open(p).convert("RGB"))
            rgba = np.asarray(Image.open(gen / "input.png").convert("RGBA"))
            label = f"{p.name}: matte {pre['matte_method']}, {run['timings_s']['preprocess']:.1f} s"
            rows.append((photo, rgba, label))
            summary.append({"photo": p.name, **pre, "preprocess_s": run["timings_s"]["preprocess"]})
            print(label, "| warnings:", pre["warnings"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet(rows)).save(args.out)
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
