"""The orbit dataset format: one folder per object, readable by nerfstudio.

Layout::

    OBJECT_DIR/
      views/000.png ...        RGBA uint8, straight (not premultiplied) alpha; frame 0 is azimuth 0
      transforms.json          nerfstudio's format plus mv3d's keys

`transforms.json`::

    {
      "camera_model": "OPENCV", "fl_x": .., "fl_y": .., "cx": .., "cy": .., "w": .., "h": ..,
      "frames": [{"file_path": "views/000.png", "transform_matrix": 4x4 OpenGL c2w,
                  "azimuth_deg": .., "elevation_deg": .., "radius": ..}, ...],
      "mv3d_format": 1,
      "fov_deg": ..,                      # horizontal field of view
      "orbit_kind": "static" | "dynamic" | "custom",
      "source_to_world": 4x4,             # maps source-mesh coordinates to the unit-cube world frame
      "background": [r, g, b],            # in [0, 1]: the colour to composite RGBA views on
      "renderer": {"name": .., "settings": {..}},
      "object": {"id": .., "source": ..}  # free-form provenance
    }

nerfstudio's own parser reads `camera_model`, the intrinsics, `frames[].file_path` and
`frames[].transform_matrix` (OpenGL camera-to-world, as here) and ignores the other keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from render.cameras import Intrinsics, Orbit, angles_from_camera_to_world
from render.common import MAX_VIEWS, InputError, atomic_output
from render.images import MAX_VIEW_PIXELS, WHITE, composite, load_rgba

FORMAT_VERSION = 1
#: Largest focal length in image sides (a field of view of about 0.06 degrees); beyond it the
#: reconstruction's pixel footprints overflow.
MAX_FOCAL_SIDES = 1000
TRANSFORMS = "transforms.json"
#: Largest transforms.json read: 1024 frames take well under 1 MB, render-dataset's records included.
MAX_TRANSFORMS_BYTES = 64 << 20
VIEWS_DIR = "views"


@dataclass
class OrbitDataset:
    """An orbit dataset in memory (images are loaded on demand).

    Attributes:
        root: the object folder.
        orbit: the cameras (azimuth/elevation/radius per frame, field of view).
        intrinsics: pixel intrinsics of every view.
        camera_to_world: (N, 4, 4) OpenGL camera-to-world, as stored.
        image_paths: N absolute paths of the RGBA views.
        source_to_world: (4, 4).
        background: (3,) RGB in [0, 1].
        meta: the whole parsed transforms.json.
    """

    root: Path
    orbit: Orbit
    intrinsics: Intrinsics
    camera_to_world: np.ndarray
    image_paths: list[Path]
    source_to_world: np.ndarray
    background: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_images(self) -> np.ndarray:
        """(N, H, W, 4) uint8 RGBA, straight alpha."""
        size = (self.intrinsics.width, self.intrinsics.height)
        return np.stack([load_rgba(p, size) for p in self.image_paths])

    def load_composited(self, background: Sequence[float] | None = None) -> np.ndarray:
        """(N, H, W, 3) float32 in [0, 1], alpha-composited on `background` (default: the dataset's)."""
        return composite(self.load_images(), self.background if background is None else background)


def _matrix_list(m: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(m, dtype=np.float64)]


def build_transforms(
    orbit: Orbit,
    width: int,
    height: int | None = None,
    source_to_world: np.ndarray | None = None,
    background: Sequence[float] = WHITE,
    renderer: dict[str, Any] | None = None,
    object_info: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    frame_extra: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The transforms.json dictionary for an orbit rendered at `width` x `height`."""
    height = width if height is None else height
    intr = orbit.intrinsics(width, height)
    c2w = orbit.camera_to_world()
    frames = []
    for i in range(len(orbit)):
        frame = {
            "file_path": f"{VIEWS_DIR}/{i:03d}.png",
            "transform_matrix": _matrix_list(c2w[i]),
            "azimuth_deg": float(orbit.azimuth_deg[i]),
            "elevation_deg": float(orbit.elevation_deg[i]),
            "radius": float(orbit.radius[i]),
        }
        if frame_extra is not None:
            frame.update(frame_extra[i])
        frames.append(frame)
    meta: dict[str, Any] = {
        "camera_model": "OPENCV",
        **intr.to_transforms(),
        "frames": frames,
        "mv3d_format": FORMAT_VERSION,
        "fov_deg": float(orbit.fov_deg),
        "orbit_kind": orbit.kind,
        "source_to_world": _matrix_list(np.eye(4) if source_to_world is None else source_to_world),
        "background": [float(c) for c in background],
        "renderer": renderer or {"name": "unknown", "settings": {}},
        "object": object_info or {},
    }
    if extra:
        meta.update(extra)
    return meta


def write_orbit_dataset(
    out_dir: str | Path,
    images: np.ndarray | Sequence[np.ndarray],
    orbit: Orbit,
    source_to_world: np.ndarray | None = None,
    background: Sequence[float] = WHITE,
    renderer: dict[str, Any] | None = None,
    object_info: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    frame_extra: Sequence[dict[str, Any]] | None = None,
    command: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write N RGBA views (N, H, W, 4) uint8 and their cameras as an orbit dataset, atomically.

    The folder is assembled under a temporary name and renamed into place when whole, so a killed
    writer leaves either no folder or a complete one. `extra_files` maps relative paths to bytes
    written alongside (depth maps, masks, a manifest). `frame_extra[i]` updates frame i's entry
    (e.g. an exact `transform_matrix` for cameras that do not look at the origin). With `command`
    (a user's `--out`), the folder is marked as that command's output and an existing folder is
    replaced only when `render.common.check_output` allows it (`overwrite`).
    """
    from PIL import Image

    images = [np.asarray(im) for im in images]
    if len(images) != len(orbit):
        raise InputError(
            f"{out_dir}: {len(images)} images for an orbit of {len(orbit)} views: expected as many"
        )
    h, w = images[0].shape[:2]
    for i, im in enumerate(images):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 4 or im.shape[:2] != (h, w):
            raise InputError(
                f"{out_dir}: view {i} has shape {im.shape} and dtype {im.dtype}: expected ({h}, {w}, 4) uint8 RGBA"
            )
    meta = build_transforms(
        orbit, w, h, source_to_world, background, renderer, object_info, extra, frame_extra
    )
    out_dir = Path(out_dir)
    with atomic_output(out_dir, command, overwrite, field="out_dir") as tmp:
        (tmp / VIEWS_DIR).mkdir(parents=True)
        for frame, im in zip(meta["frames"], images, strict=True):
            Image.fromarray(im, "RGBA").save(tmp / frame["file_path"])
        for rel, data in (extra_files or {}).items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        (tmp / TRANSFORMS).write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _as_matrix(value: Any, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: expected a 4x4 matrix of numbers") from exc
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"{where}: expected a finite 4x4 matrix, got shape {m.shape}")
    return m


def _as_camera(value: Any, where: str) -> np.ndarray:
    """A frame's camera-to-world: finite, 4x4, last row (0, 0, 0, 1), an invertible rotation block
    (the reconstruction inverts every camera)."""
    m = _as_matrix(value, where)
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]) or not np.linalg.cond(m[:3, :3]) < 1e6:
        raise InputError(f"{where}: expected a camera pose (an invertible rotation, last row 0 0 0 1)")
    return m


def _frame_path(root: Path, file_path: Any, where: str) -> Path:
    """A frame's image path, which must be relative and stay inside the dataset folder (a
    transforms.json someone sends you must not make mv3d read `../../anything` or `/etc/...`)."""
    if not isinstance(file_path, str) or not file_path or "\x00" in file_path:
        raise InputError(
            f"{where}: file_path {file_path!r}: expected a relative path inside the dataset folder"
        )
    rel = Path(file_path)
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(
            f"{where}: file_path {file_path!r}: expected a relative path inside the dataset folder"
        )
    base = root.resolve()
    p = (base / rel).resolve()
    if not p.is_relative_to(base):  # a symbolic link inside the folder that points out of it
        raise InputError(f"{where}: file_path {file_path!r} leads outside the dataset folder {root}")
    return p


def read_orbit_dataset(path: str | Path, check_images: bool = True) -> OrbitDataset:
    """Read and validate an orbit dataset folder (or its transforms.json).

    Frames that lack mv3d's angle keys (a plain nerfstudio dataset) get them from their matrices.
    Raises `InputError` with the file and the problem for anything malformed.
    """
    path = Path(path)
    root = path.parent if path.name == TRANSFORMS else path
    tf = root / TRANSFORMS
    if root.is_file():  # e.g. `mv3d reconstruct photo.png`: the image instead of its generation
        raise InputError(
            f"{root}: is a file: expected an orbit dataset folder (views/ and {TRANSFORMS}, as mv3d render "
            "or mv3d generate write it)"
        )
    if not root.is_dir():
        raise InputError(f"{root}: orbit dataset folder does not exist")
    if not tf.is_file():
        raise InputError(
            f"{root}: no {TRANSFORMS} in this folder: expected an orbit dataset (render or generate output)"
        )
    try:
        # Bounded before reading: a folder someone sends may hold a transforms.json of any size.
        if tf.stat().st_size > MAX_TRANSFORMS_BYTES:
            raise InputError(
                f"{tf}: {tf.stat().st_size:,} bytes: expected at most {MAX_TRANSFORMS_BYTES:,} "
                "(an orbit dataset's transforms.json takes well under 1 MB)"
            )
        meta = json.loads(tf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{tf}: not valid JSON ({exc})") from exc
    except RecursionError:  # arrays or objects nested thousands deep
        raise InputError(f"{tf}: not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise InputError(f"{tf}: expected an object with a non-empty 'frames' list")
    try:
        w, h = int(meta["w"]), int(meta["h"])
        fl_x, fl_y = float(meta["fl_x"]), float(meta["fl_y"])
        cx, cy = float(meta.get("cx", w / 2)), float(meta.get("cy", h / 2))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{tf}: expected numeric 'w', 'h', 'fl_x', 'fl_y' at the top level ({exc})") from exc
    if w * h > MAX_VIEW_PIXELS:
        raise InputError(f"{tf}: image size {w}x{h}: expected at most {MAX_VIEW_PIXELS:,} pixels a view")
    if w <= 0 or h <= 0 or not (fl_x > 0 and fl_y > 0):
        raise InputError(
            f"{tf}: image size {w}x{h} and focal lengths {fl_x}, {fl_y}: expected positive values"
        )
    side = max(w, h)
    if not (fl_x <= MAX_FOCAL_SIDES * side and fl_y <= MAX_FOCAL_SIDES * side):
        raise InputError(
            f"{tf}: focal lengths {fl_x}, {fl_y}: expected at most {MAX_FOCAL_SIDES} image sides "
            f"({MAX_FOCAL_SIDES * side} pixels)"
        )
    if not (-w <= cx <= 2 * w and -h <= cy <= 2 * h):
        raise InputError(
            f"{tf}: principal point {cx}, {cy}: expected finite pixels within one image size of the image"
        )
    if len(meta["frames"]) > MAX_VIEWS:
        raise InputError(f"{tf}: {len(meta['frames'])} frames: expected at most {MAX_VIEWS}")
    intr = Intrinsics(fl_x, fl_y, cx, cy, w, h)
    c2ws, paths = [], []
    for i, frame in enumerate(meta["frames"]):
        where = f"{tf}: frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise InputError(f"{where}: expected 'file_path' and 'transform_matrix'")
        c2ws.append(_as_camera(frame["transform_matrix"], f"{where} transform_matrix"))
        p = _frame_path(root, frame["file_path"], where)
        if check_images and not p.is_file():
            raise InputError(f"{where}: image {p} does not exist")
        paths.append(p)
    c2w = np.stack(c2ws)
    az, el, r = angles_from_camera_to_world(c2w)
    frames = meta["frames"]
    try:
        if all(k in f for f in frames for k in ("azimuth_deg", "elevation_deg", "radius")):
            az = np.array([f["azimuth_deg"] for f in frames], float)
            el = np.array([f["elevation_deg"] for f in frames], float)
            r = np.array([f["radius"] for f in frames], float)
        fov = float(meta.get("fov_deg", math.degrees(2 * math.atan(0.5 * w / fl_x))))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{tf}: frame angles and fov_deg: expected numbers ({exc})") from None
    if not (np.all(np.isfinite(az)) and np.all(np.isfinite(el)) and np.all(np.isfinite(r)) and 0 < fov < 180):
        raise InputError(
            f"{tf}: frame angles, radii and fov_deg {fov}: expected finite numbers, fov in (0, 180)"
        )
    orbit = Orbit(az, el, r, fov, str(meta.get("orbit_kind", "custom")))
    s2w = _as_matrix(meta.get("source_to_world", np.eye(4).tolist()), f"{tf}: source_to_world")
    try:
        bg = np.asarray(meta.get("background", WHITE), dtype=np.float64)
    except (TypeError, ValueError):
        bg = np.zeros(0)
    if bg.shape != (3,) or not np.all((bg >= 0) & (bg <= 1)):
        raise InputError(f"{tf}: background {meta.get('background')}: expected three numbers in [0, 1]")
    return OrbitDataset(root, orbit, intr, c2w, paths, s2w, bg, meta)
