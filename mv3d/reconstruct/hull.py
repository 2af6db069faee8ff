"""Visual hull by space carving of the silhouettes: the fast method and the field's initialisation.

A point belongs to the hull when every view that sees it projects it inside the object's mask. With
soft masks the hull is a scalar field: the smallest alpha (bilinearly sampled) over the views, so the
0.5 iso-surface falls on the silhouettes' sub-pixel edges. Views that do not see a point (outside the
frame, or behind the camera) leave it unconstrained. Inconsistent views (a poor generator) would carve
away real parts, so `robust` allows a few views to disagree: the k-th smallest alpha instead of the
smallest.
"""

from __future__ import annotations

import numpy as np

from mv3d.reconstruct.mesh_ops import Grid
from mv3d.reconstruct.views import MASK_THRESHOLD, ViewSet


def _grid_projection(vs: ViewSet):
    """Per view, the 3x4 matrix taking homogeneous world points to (gx z, gy z, z): (N, 3, 4) float32.

    (gx, gy) are grid_sample's coordinates (-1 and 1 at the image's outer edges) and z the depth in
    front of the camera: the intrinsics and the pixel-to-grid scaling folded into the camera matrix, so
    that projecting a point into every view is one batched matrix product.
    """
    import torch

    k = vs.intrinsics
    intr = np.array([[k.fl_x, 0.0, k.cx], [0.0, k.fl_y, k.cy], [0.0, 0.0, 1.0]])
    to_grid = np.array([[2.0 / k.width, 0.0, -1.0], [0.0, 2.0 / k.height, -1.0], [0.0, 0.0, 1.0]])
    return torch.from_numpy((to_grid @ intr @ vs.world_to_camera_cv[:, :3, :]).astype(np.float32))


def sample_alpha(vs: ViewSet, points: np.ndarray, outside: float = 1.0, projection=None):
    """Alpha of every view at the projections of `points` (P, 3): torch tensor (N, P).

    Points behind a camera or outside its frame get `outside`. `projection`: `_grid_projection(vs)`,
    when the caller samples many chunks.
    """
    import torch
    import torch.nn.functional as F

    proj = _grid_projection(vs) if projection is None else projection
    pts = torch.from_numpy(np.ascontiguousarray(points, np.float32))
    # float32 and one matmul for all views: the world is the unit cube, so the rounding is ~1e-7 of a
    # view's width, and the float64 einsum this replaces was most of the carving's time
    h = torch.matmul(pts, proj[:, :, :3].transpose(1, 2)) + proj[:, None, :, 3]  # (N, P, 3)
    z = h[..., 2]
    # masked_fill, not where() with a full_like tensor: the same values without another (N, P) tensor
    g = h[..., :2] / z.masked_fill(z.abs() < 1e-9, 1e-9)[..., None]  # (N, P, 2)
    alpha = torch.from_numpy(np.ascontiguousarray(vs.alpha, dtype=np.float32))[:, None]
    a = F.grid_sample(alpha, g[:, None], mode="bilinear", padding_mode="border", align_corners=False)[:, 0, 0]
    seen = (z > 1e-6) & (g[..., 0].abs() <= 1.0) & (g[..., 1].abs() <= 1.0)
    return a.masked_fill(~seen, outside)


def _carve_points(vs: ViewSet, pts: np.ndarray, k: int, chunk: int = 1 << 18) -> np.ndarray:
    """k-th smallest alpha over the views at each point (P,) (k = 1: the minimum)."""
    import torch

    out = np.empty(len(pts), np.float32)
    projection = _grid_projection(vs)
    for s in range(0, len(pts), chunk):
        a = sample_alpha(vs, pts[s : s + chunk], projection=projection)
        out[s : s + chunk] = torch.kthvalue(a, k, dim=0).values.numpy() if k > 1 else a.min(0).values.numpy()
    return out


def carve(vs: ViewSet, grid: Grid, allowed_disagreement: int = 0) -> np.ndarray:
    """Soft visual hull on `grid`: (R, R, R) float32 in [0, 1], > 0.5 inside.

    `allowed_disagreement` views may see a point outside their mask without carving it. Grids finer
    than 64 are carved coarse to fine: the half-resolution hull is computed first and only the cells
    near its surface (where it is neither clearly 0 nor clearly 1) are evaluated at full resolution.
    """
    import torch
    import torch.nn.functional as F

    k = min(allowed_disagreement, len(vs) - 1) + 1
    r = grid.resolution
    if r <= 64:
        return _carve_points(vs, grid.centres().reshape(-1, 3), k).reshape((r,) * 3)
    coarse = carve(vs, Grid(r // 2, grid.bound), allowed_disagreement)
    up = F.interpolate(
        torch.from_numpy(coarse)[None, None], size=(r,) * 3, mode="trilinear", align_corners=False
    )
    band = ((up > 0.02) & (up < 0.98)).float()
    band = F.max_pool3d(band, 5, stride=1, padding=2)[0, 0].numpy() > 0
    out = (up[0, 0].numpy() > 0.5).astype(np.float32)
    out[band] = _carve_points(vs, grid.centres()[band], k)
    return out


def silhouette_agreement(vs: ViewSet, occupancy: np.ndarray, grid: Grid) -> np.ndarray:
    """Per view, the IoU of its mask with the projection of the hull's occupied voxels: (N,).

    A low value means the view disagrees with the others (it was carved by them, or it is empty).
    """
    inside = grid.centres()[occupancy > 0.5]
    n = len(vs)
    if len(inside) == 0:
        return np.zeros(n)
    k = vs.intrinsics
    uv, z = vs.project(inside)
    ious = np.zeros(n)
    for i in range(n):
        ok = z[i] > 1e-6
        px = np.clip(uv[i, ok, 0].astype(np.int64), 0, k.width - 1)
        py = np.clip(uv[i, ok, 1].astype(np.int64), 0, k.height - 1)
        proj = np.zeros((k.height, k.width), bool)
        proj[py, px] = True
        # Each voxel is splatted at its centre's pixel; the voxel itself reaches half its footprint
        # (its width in pixels) beyond that, so the splats are dilated by half the footprint, rounded.
        # More than that rings the silhouette with pixels no voxel covers: on a silhouette a few pixels
        # wide (a lamp's stem, a table's leg, or any object in views of 48 px or less) the ring alone
        # read as disagreement, and the hull was carved again tolerating disagreeing views.
        footprint = grid.voxel * k.fl_x / max(float(np.median(z[i, ok])), 1e-6)
        rad = int(np.floor(footprint / 2 + 0.5))
        if rad > 0:
            from scipy.ndimage import binary_dilation

            proj = binary_dilation(proj, iterations=rad)
        mask = vs.alpha[i] > MASK_THRESHOLD
        union = np.logical_or(proj, mask).sum()
        ious[i] = np.logical_and(proj, mask).sum() / max(union, 1)
    return ious


def visual_hull(vs: ViewSet, grid: Grid, warnings: list[str] | None = None) -> np.ndarray:
    """Carve the hull, and carve again tolerating disagreeing views when some views disagree.

    Returns the soft occupancy (R, R, R); appends one-line warnings to `warnings`.
    """
    warnings = [] if warnings is None else warnings
    occ = carve(vs, grid)
    if len(vs) >= 4:
        # Agreement is a coarse check: half resolution is plenty and eight times cheaper.
        coarse = grid.resolution > 64
        agree = silhouette_agreement(
            vs,
            occ[::2, ::2, ::2] if coarse else occ,
            Grid(grid.resolution // 2, grid.bound) if coarse else grid,
        )
        bad = np.flatnonzero(agree < 0.7)
        if len(bad) > 0:
            k = max(1, int(np.ceil(0.15 * len(vs))))
            warnings.append(
                f"views {bad.tolist()} disagree with the others' silhouettes (IoU {np.round(agree[bad], 2).tolist()}); "
                f"carving tolerates {k} disagreeing views per point"
            )
            occ = carve(vs, grid, allowed_disagreement=k)
    if not np.any(occ > 0.5):
        from render.common import InputError

        raise InputError(
            "the silhouettes have no common volume inside the unit cube: the cameras do not look at the "
            "object or the views are inconsistent"
        )
    return occ
