"""Pack rendered orbit datasets into one small archive for a machine without the source meshes, and back.

    python -m recipes.default_model.pack_orbits pack OUT.tar.xz DATASET [DATASET ...]
    python -m recipes.default_model.pack_orbits unpack ARCHIVE.tar.xz OUT_DIR

Why: the GPU stage of the default model (`gpu_stage.sh`) trains on a lent machine that reaches no package
registry and receives at most 64 MiB. The Sweet Home 3D catalogues (125 MB) do not fit, and the renders'
own PNGs compress badly as a whole (16 MB per 634-object, 21-view, 64 px set: each PNG is deflated on its
own). Packed here, each object's views are one raw RGBA block in an xz stream, object after object with
the datasets interleaved (an object's three orbits sit together in xz's window): about 9 MB per set.

Layout of the archive: ``<k>/<path>`` for every file of dataset k except its views, and, per object
folder, ``<k>/objects/<id>/views.rgba`` (the views' pixels, uint8, concatenated in name order) with
``views.json`` ({"names", "width", "height", "mode"}). `unpack` writes dataset k to ``OUT_DIR/<k>`` with
PNG views again, pixel for pixel the packed ones, checking every size against the header before it
decodes; the archive is extracted with tarfile's "data" filter (no links out, no absolute paths).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from render.common import MAX_VIEWS, InputError, atomic_write_bytes

#: Bounds on what a header may ask `unpack` to allocate (the archive may come from anywhere): the
#: project's MAX_VIEWS views of at most MAX_SIDE pixels a side (64 px in the default model's renders).
MAX_SIDE = 1024
MODES = {"RGBA": 4, "RGB": 3, "L": 1}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _pack_object(tar: tarfile.TarFile, prefix: str, obj: Path) -> None:
    """One object folder: its files as they are, its views/*.png as one raw block and a header."""
    from PIL import Image

    for f in sorted(obj.rglob("*")):
        if f.is_file() and not (f.parent.name == "views" and f.suffix == ".png"):
            tar.add(f, f"{prefix}/{f.relative_to(obj.parent.parent).as_posix()}", recursive=False)
    views = sorted((obj / "views").glob("*.png"))
    if not views:
        return
    pixels, kinds = [], set()
    for v in views:
        with Image.open(v) as im:  # closed here: an object has tens of views, a dataset thousands
            kinds.add((im.mode, im.size))
            pixels.append(np.asarray(im))
    (mode, size), *others = kinds
    if others or mode not in MODES:
        raise InputError(
            f"{obj / 'views'}: views of mixed or unknown modes/sizes; expected one of {list(MODES)}"
        )
    header = {"names": [v.name for v in views], "width": size[0], "height": size[1], "mode": mode}
    rel = obj.relative_to(obj.parent.parent).as_posix()
    _add_bytes(tar, f"{prefix}/{rel}/views.json", json.dumps(header).encode())
    _add_bytes(tar, f"{prefix}/{rel}/views.rgba", b"".join(p.tobytes() for p in pixels))


def pack(out: Path, datasets: list[Path], preset: int = 9) -> None:
    """Write `out` (.tar.xz) holding `datasets` (render-dataset output folders), object-major."""
    roots = [Path(d) for d in datasets]
    for r in roots:
        if not (r / "objects").is_dir():
            raise InputError(f"{r}: no objects/ folder; expected an `mv3d render-dataset` output folder")
    ids = sorted({o.name for r in roots for o in (r / "objects").iterdir() if o.is_dir()})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=preset) as tar:
        for k, r in enumerate(roots):  # the dataset-level files (job.json, manifest, records, ...)
            for f in sorted(r.rglob("*")):
                if f.is_file() and "objects" not in f.relative_to(r).parts[:1]:
                    tar.add(f, f"{k}/{f.relative_to(r).as_posix()}", recursive=False)
        for i in ids:
            for k, r in enumerate(roots):
                if (r / "objects" / i).is_dir():
                    _pack_object(tar, str(k), r / "objects" / i)
    atomic_write_bytes(out, buf.getvalue())


def unpack(archive: Path, out_dir: Path) -> list[Path]:
    """Extract `archive` into `out_dir` (new or empty) and turn each views.rgba back into PNGs."""
    from PIL import Image

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: not empty; expected a new or empty folder to unpack into")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:xz") as tar:
        tar.extractall(out_dir, filter="data")
    for header_path in sorted(out_dir.glob("*/objects/*/views.json")):
        header = json.loads(header_path.read_text())
        names, w, h, mode = header["names"], int(header["width"]), int(header["height"]), header["mode"]
        if mode not in MODES or not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE and 0 < len(names) <= MAX_VIEWS):
            raise InputError(
                f"{header_path}: mode {mode}, {w}x{h}, {len(names)} views; expected a bounded RGBA/RGB/L header"
            )
        if any(Path(n).name != n or not n.endswith(".png") for n in names):
            raise InputError(f"{header_path}: view names {names[:3]}...; expected plain .png file names")
        raw_path = header_path.with_name("views.rgba")
        shape = (len(names), h, w, MODES[mode]) if MODES[mode] > 1 else (len(names), h, w)
        size = raw_path.stat().st_size if raw_path.is_file() else 0
        if size != int(np.prod(shape)):  # checked before a byte is read
            raise InputError(f"{raw_path}: {size} bytes; expected {int(np.prod(shape))} for {shape}")
        raw = np.frombuffer(raw_path.read_bytes(), np.uint8)
        views = header_path.with_name("views")
        views.mkdir(exist_ok=True)
        for name, pixels in zip(names, raw.reshape(shape), strict=True):
            Image.fromarray(pixels, mode).save(views / name)
        raw_path.unlink()
        header_path.unlink()
    return sorted(p for p in out_dir.iterdir() if p.is_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out", type=Path)
    p.add_argument("datasets", type=Path, nargs="+")
    u = sub.add_parser("unpack")
    u.add_argument("archive", type=Path)
    u.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            pack(args.out, args.datasets)
            print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB")
        else:
            for d in unpack(args.archive, args.out_dir):
                print(d)
    except InputError as e:
        print(f"pack_orbits: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
