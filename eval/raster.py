"""A small numpy triangle rasterizer shared by the mesh metrics (voxel parity) and depth maps.

eval/ needs two things a ray caster would give: which grid columns a triangle covers (to count surface
crossings for inside/outside tests) and the nearest surface depth per pixel (to warp one view into its
neighbour). trimesh's ray casting needs rtree or embree, which the base install lacks, and eval/ must
not depend on how views were rendered, so both are done here with one vectorised coverage routine:
every (triangle, grid point) pair inside the triangle's 2D bounding box is tested with barycentric
coordinates.
"""

from __future__ import annotations

import numpy as np

from render.cameras import Intrinsics, opengl_to_opencv


def cover(
    tri2d: np.ndarray, width: int, height: int, chunk: int = 2_000_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid points covered by 2D triangles.

    Grid point (x, y) sits at coordinates (x + 0.5, y + 0.5) for x in [0, width), y in [0, height),
    i.e. pixel centres when `tri2d` is in pixel units.

    Args:
        tri2d: (F, 3, 2) triangle corners in grid units.
        width, height: grid size.
        chunk: maximum number of candidate pairs tested at once (memory bound).

    Returns:
        face (K,), flat grid index y * width + x (K,), barycentric weights (K, 3) of every covered point.
        Points on a shared edge may be reported for both triangles.
    """
    tri2d = np.asarray(tri2d, dtype=np.float64)
    if tri2d.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    lo = np.floor(tri2d.min(axis=1) - 0.5).astype(np.int64) + 1  # first centre >= min
    hi = np.ceil(tri2d.max(axis=1) - 0.5).astype(np.int64) - 1  # last centre <= max
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], width - 1)
    hi[:, 1] = np.minimum(hi[:, 1], height - 1)
    # Bounding boxes are conservative by one cell on each side so no centre on the boundary is lost.
    lo = np.maximum(lo - 1, 0)
    hi[:, 0] = np.minimum(hi[:, 0] + 1, width - 1)
    hi[:, 1] = np.minimum(hi[:, 1] + 1, height - 1)
    nx = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    ny = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = nx * ny
    faces_out, idx_out, bary_out = [], [], []
    order = np.nonzero(counts)[0]
    start = 0
    while start < order.size:
        # Take as many faces as fit in the chunk (at least one).
        csum = np.cumsum(counts[order[start:]])
        stop = start + max(1, int(np.searchsorted(csum, chunk, side="right")))
        sel = order[start:stop]
        start = stop
        c = counts[sel]
        face = np.repeat(sel, c)
        local = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        px = lo[face, 0] + local % nx[face]
        py = lo[face, 1] + local // nx[face]
        p = np.stack([px + 0.5, py + 0.5], axis=-1)
        a, b, cc = tri2d[face, 0], tri2d[face, 1], tri2d[face, 2]
        area = (b[:, 0] - a[:, 0]) * (cc[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (cc[:, 0] - a[:, 0])
        w0 = (b[:, 0] - p[:, 0]) * (cc[:, 1] - p[:, 1]) - (b[:, 1] - p[:, 1]) * (cc[:, 0] - p[:, 0])
        w1 = (cc[:, 0] - p[:, 0]) * (a[:, 1] - p[:, 1]) - (cc[:, 1] - p[:, 1]) * (a[:, 0] - p[:, 0])
        w2 = area - w0 - w1
        safe = np.where(np.abs(area) < 1e-18, 1.0, area)
        bary = np.stack([w0, w1, w2], axis=-1) / safe[:, None]
        inside = (np.abs(area) >= 1e-18) & np.all(bary >= 0.0, axis=-1)
        faces_out.append(face[inside])
        idx_out.append(py[inside] * width + px[inside])
        bary_out.append(bary[inside])
    return np.concatenate(faces_out), np.concatenate(idx_out), np.concatenate(bary_out)


def depth_map(
    vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, intr: Intrinsics, near: float = 1e-3
) -> np.ndarray:
    """Z-buffered depth of a triangle mesh seen by one camera: (H, W) float, +inf where empty.

    Depth is the distance along the camera's viewing axis (as `render.cameras.project`). Depth is
    interpolated as 1/z linearly in screen space, which is exact for a perspective camera. Triangles
    with a corner behind `near` are skipped (objects sit well in front of the orbit cameras).
    """
    w2c = np.linalg.inv(opengl_to_opencv(c2w))
    cam = np.asarray(vertices, np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    tri_z = z[faces]
    keep = np.all(tri_z > near, axis=1)
    faces = np.asarray(faces)[keep]
    zs = np.where(z > near, z, 1.0)
    uv = np.stack([intr.fl_x * cam[:, 0] / zs + intr.cx, intr.fl_y * cam[:, 1] / zs + intr.cy], axis=-1)
    face, idx, bary = cover(uv[faces], intr.width, intr.height)
    inv_z = (bary * (1.0 / z[faces[face]])).sum(axis=-1)
    depth = np.full(intr.width * intr.height, np.inf)
    np.minimum.at(depth, idx, 1.0 / np.maximum(inv_z, 1e-12))
    return depth.reshape(intr.height, intr.width)
