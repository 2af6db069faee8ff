"""The views a reconstruction fits: images, masks and cameras as arrays, and projection into them.

Every reconstruction method reads an orbit dataset (render/dataset.py) through `load_views`, which
composites the RGBA views, optionally downsizes them, and checks them for the degenerate cases the
methods must survive (empty masks, objects cut by the frame). Cameras follow render/cameras.py: OpenGL
camera-to-world, pixel (0, 0) is the corner of the top-left pixel, so pixel centres sit at +0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.cameras import Intrinsics, opengl_to_opencv
from render.common import InputError
from render.dataset import OrbitDataset, read_orbit_dataset
from render.images import composite, load_rgba

#: Alpha above which a pixel counts as object.
MASK_THRESHOLD = 0.5


@dataclass
class ViewSet:
    """N calibrated views in memory.

    Attributes:
        rgb: (N, H, W, 3) float32 in [0, 1], composited on `background`.
        alpha: (N, H, W) float32 in [0, 1] (straight alpha of the views).
        camera_to_world: (N, 4, 4) float64 OpenGL camera-to-world.
        intrinsics: pixel intrinsics at (H, W).
        background: (3,) float32 RGB in [0, 1].
        source_to_world: (4, 4) float64, from the dataset.
        warnings: problems found while loading (each one line).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    camera_to_world: np.ndarray
    intrinsics: Intrinsics
    background: np.ndarray
    source_to_world: np.ndarray = field(default_factory=lambda: np.eye(4))
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def world_to_camera_cv(self) -> np.ndarray:
        """(N, 4, 4) world-to-camera in OpenCV axes (camera looks down +Z, +Y down)."""
        return np.linalg.inv(opengl_to_opencv(self.camera_to_world))

    @property
    def centres(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates."""
        return self.camera_to_world[:, :3, 3]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (P, 3) into every view: pixels (N, P, 2) and depths (N, P)."""
        w2c = self.world_to_camera_cv
        # a batched matrix product (BLAS), not an einsum: the same sums, several times faster
        cam = (
            np.matmul(np.asarray(points, np.float64), w2c[:, :3, :3].transpose(0, 2, 1)) + w2c[:, None, :3, 3]
        )
        z = cam[..., 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        k = self.intrinsics
        uv = cam[..., :2] / safe[..., None] * np.array([k.fl_x, k.fl_y]) + np.array([k.cx, k.cy])
        return uv, z

    def subset(self, keep: np.ndarray) -> ViewSet:
        """The views selected by a boolean or index array."""
        return ViewSet(
            self.rgb[keep],
            self.alpha[keep],
            self.camera_to_world[keep],
            self.intrinsics,
            self.background,
            self.source_to_world,
            list(self.warnings),
        )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize (N, H, W, C) float32 to (N, size, size * W / H, C) with torch (antialiased)."""
    import torch
    import torch.nn.functional as F

    n, h, w, c = images.shape
    out_w = max(1, round(size * w / h))
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(size, out_w), mode="area" if size < h else "bilinear", align_corners=None)
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def load_views(views: str | Path | OrbitDataset, max_resolution: int | None = None) -> ViewSet:
    """Load an orbit dataset (folder, transforms.json, or `OrbitDataset`) as a `ViewSet`.

    Views larger than `max_resolution` pixels (height) are downsized, with intrinsics scaled to match.
    Views whose mask is empty are dropped with a warning; if none is left, `InputError`.
    """
    ds = views if isinstance(views, OrbitDataset) else read_orbit_dataset(views)
    intr = ds.intrinsics
    w, h = intr.width, intr.height
    bg = np.asarray(ds.background, np.float32)
    downsize = max_resolution is not None and h > max_resolution
    rgbs, alphas = [], []
    # One view at a time: only the downsized views are kept, so 1024 views of 4096^2 pixels need the
    # memory of 1024 small ones, not 64 GB (load_rgba checks each file's size against transforms.json).
    for path in ds.image_paths:
        rgba = load_rgba(path, (w, h))
        rgb, alpha = composite(rgba, bg), rgba[..., 3].astype(np.float32) / 255.0
        if downsize:
            both = _resize(np.concatenate([rgb, alpha[..., None]], axis=-1)[None], max_resolution)[0]
            rgb, alpha = both[..., :3], both[..., 3]
        rgbs.append(rgb)
        alphas.append(alpha)
    rgb, alpha = np.stack(rgbs), np.stack(alphas)
    if downsize:
        intr = intr.scaled(rgb.shape[2], rgb.shape[1])
    vs = ViewSet(rgb, alpha, ds.camera_to_world.astype(np.float64), intr, bg, ds.source_to_world)
    return check_views(vs, str(ds.root))


def check_views(vs: ViewSet, where: str) -> ViewSet:
    """Drop views with empty masks and warn about objects cut by the frame; `InputError` if none is usable."""
    if np.all(vs.alpha > 0.999):
        raise InputError(
            f"{where}: every view is fully opaque (no alpha matte): expected RGBA views with a transparent "
            "background (run the views through preprocessing or render them with alpha)"
        )
    area = (vs.alpha > MASK_THRESHOLD).mean(axis=(1, 2))
    empty = area < 1e-4
    if np.all(empty):
        raise InputError(f"{where}: every view has an empty mask (no opaque pixel): nothing to reconstruct")
    if np.any(empty):
        idx = np.flatnonzero(empty).tolist()
        vs = vs.subset(~empty)
        vs.warnings.append(f"{where}: views {idx} have empty masks and were ignored")
    m = vs.alpha > MASK_THRESHOLD
    border = m[:, 0, :].any(1) | m[:, -1, :].any(1) | m[:, :, 0].any(1) | m[:, :, -1].any(1)
    if np.any(border):
        vs.warnings.append(
            f"{where}: the object touches the image border in {int(border.sum())} of {len(vs)} views; "
            "parts outside the frame are not constrained by those views"
        )
    if len(vs) == 1:
        vs.warnings.append(
            f"{where}: only one usable view: the shape is the silhouette extruded along the viewing direction"
        )
    return vs


def pixel_rays(
    vs: ViewSet, view: np.ndarray, px: np.ndarray, py: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """World-space rays through pixel centres: origins (R, 3), unit directions (R, 3).

    Args:
        view: (R,) view indices; px, py: (R,) integer pixel columns and rows.
    """
    k = vs.intrinsics
    x = (px + 0.5 - k.cx) / k.fl_x
    y = (py + 0.5 - k.cy) / k.fl_y
    # OpenGL camera axes: +X right, +Y up, looking down -Z; image rows grow downwards.
    d_cam = np.stack([x, -y, -np.ones_like(x)], axis=-1)
    c2w = vs.camera_to_world[view]
    d = np.einsum("rij,rj->ri", c2w[:, :3, :3], d_cam)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return c2w[:, :3, 3].copy(), d
