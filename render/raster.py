"""The one numpy triangle rasteriser of mv3d: coverage, z-buffers and depth maps without OpenGL.

Three users need what a ray caster or a GPU rasteriser would give, on machines that may have neither
(trimesh's ray casting needs rtree or embree, which the base install lacks):

- reconstruction (`mv3d.reconstruct.texture`): the mesh's own nearest surface per view (visibility) and
  the triangle and barycentrics under every texel of a UV atlas (`rasterize`, `render_depth`);
- the mesh metrics (`eval.mesh_metrics.occupancy`): every grid column a triangle covers, to count
  surface crossings for inside/outside tests (`cover`);
- the view metrics (`eval.view_metrics.depth_maps`): the nearest surface depth per pixel when a
  renderer gives none (`depth_map`).

All are one operation, `cover`: every (triangle, pixel) pair inside the triangle's 2D bounding box is
tested with barycentric coordinates. Conventions: pixel (0, 0) covers [0, 1) x [0, 1); a pixel is
covered when its centre (+0.5) is inside the triangle or on its edge (both windings). Depth and
barycentrics of `rasterize` are perspective-correct (1/z is linear in screen space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.cameras import Intrinsics, project


@dataclass
class Fragments:
    """The nearest fragment per pixel.

    Attributes:
        face: (H, W) int64 face index, -1 where no triangle covers the pixel.
        bary: (H, W, 3) float32 perspective-correct barycentric coordinates of the pixel centre.
        depth: (H, W) float32 depth (inf where empty).
    """

    face: np.ndarray
    bary: np.ndarray
    depth: np.ndarray


def cover(
    tri2d: np.ndarray, width: int, height: int, max_candidates: int = 1 << 21
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel centres covered by 2D triangles.

    Args:
        tri2d: (F, 3, 2) triangle corners in pixel units (centre of pixel (x, y) at (x + 0.5, y + 0.5)).
        width, height: grid size.
        max_candidates: most (triangle, pixel) pairs tested at once (the memory bound).

    Returns:
        face (K,) int64, flat pixel index y * width + x (K,) int64, and screen-space (linear) barycentric
        weights (K, 3) float64 of every covered pixel centre. A centre on an edge shared by two triangles
        may be reported for both; degenerate (zero-area) triangles cover nothing.
    """
    tri = np.asarray(tri2d, np.float64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    if tri.size == 0:
        return empty
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(np.int64)  # first centre >= min
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)  # last centre <= max
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    size = hi - lo + 1
    fid = np.flatnonzero((size[:, 0] > 0) & (size[:, 1] > 0))
    face_all, pix_all, bary_all = [], [], []
    if len(fid):
        # Bucket triangles by their bounding-box size (next power of two) so that each batch
        # enumerates a small fixed window per triangle.
        bw = 1 << np.ceil(np.log2(size[fid, 0])).astype(np.int64)
        bh = 1 << np.ceil(np.log2(size[fid, 1])).astype(np.int64)
        for w_, h_ in np.unique(np.stack([bw, bh], 1), axis=0):
            sel = fid[(bw == w_) & (bh == h_)]
            per = max(1, max_candidates // int(w_ * h_))
            oy, ox = np.mgrid[0:h_, 0:w_]
            ox, oy = ox.reshape(-1), oy.reshape(-1)
            for s in range(0, len(sel), per):
                f = sel[s : s + per]
                px = lo[f, 0:1] + ox[None]
                py = lo[f, 1:2] + oy[None]
                cx, cy = px + 0.5, py + 0.5
                v0, v1, v2 = tri[f, 0], tri[f, 1], tri[f, 2]
                area = (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1]) - (v1[:, 1] - v0[:, 1]) * (
                    v2[:, 0] - v0[:, 0]
                )
                good = np.abs(area) > 1e-12
                inv_area = np.where(good, 1.0 / np.where(good, area, 1.0), 0.0)[:, None]
                # Edge functions (twice the signed areas of the sub-triangles) over twice the area.
                w0 = (
                    (v2[:, 0:1] - v1[:, 0:1]) * (cy - v1[:, 1:2])
                    - (v2[:, 1:2] - v1[:, 1:2]) * (cx - v1[:, 0:1])
                ) * inv_area
                w1 = (
                    (v0[:, 0:1] - v2[:, 0:1]) * (cy - v2[:, 1:2])
                    - (v0[:, 1:2] - v2[:, 1:2]) * (cx - v2[:, 0:1])
                ) * inv_area
                w2 = 1.0 - w0 - w1
                inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & good[:, None]
                inside &= (px <= hi[f, 0:1]) & (py <= hi[f, 1:2])
                if not inside.any():
                    continue
                r, c = np.nonzero(inside)
                face_all.append(f[r])
                pix_all.append(py[r, c] * width + px[r, c])
                bary_all.append(np.stack([w0[r, c], w1[r, c], w2[r, c]], axis=1))
    if not face_all:
        return empty
    return np.concatenate(face_all), np.concatenate(pix_all), np.concatenate(bary_all)


def _nearest(
    xy: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int, near: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer: (face (P,), perspective-correct bary (P, 3), depth (P,) float64) per pixel, P = H * W."""
    xy = np.asarray(xy, np.float64)
    z = np.asarray(z, np.float64)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    face_img = np.full(height * width, -1, np.int64)
    bary_img = np.zeros((height * width, 3))
    depth_img = np.full(height * width, np.inf)
    # Triangles with a corner at depth <= near (behind the camera) are skipped: objects sit well in
    # front of the orbit cameras, and such a triangle has no meaningful screen-space footprint.
    keep = np.flatnonzero(np.all(z[faces] > near, axis=1))
    face, pix, w = cover(xy[faces[keep]], width, height)
    if len(face) == 0:
        return face_img, bary_img, depth_img
    face = keep[face]
    b = w / z[faces[face]]  # w_i / z_i is linear in screen space; its sum is 1/z
    inv_z = b.sum(axis=1)
    dep = 1.0 / inv_z
    order = np.lexsort((dep, pix))
    pix_s = pix[order]
    first = np.ones(len(pix_s), bool)
    first[1:] = pix_s[1:] != pix_s[:-1]
    keep_f = order[first]
    face_img[pix_s[first]] = face[keep_f]
    bary_img[pix_s[first]] = b[keep_f] / inv_z[keep_f, None]
    depth_img[pix_s[first]] = dep[keep_f]
    return face_img, bary_img, depth_img


def rasterize(
    xy: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int, near: float = 1e-9
) -> Fragments:
    """Rasterise triangles with vertices at pixel positions `xy` (V, 2) and depths `z` (V,).

    Keeps the nearest fragment per pixel. Triangles with a vertex at depth <= `near` are skipped.
    """
    face, bary, depth = _nearest(xy, z, faces, width, height, near)
    return Fragments(
        face.reshape(height, width),
        bary.astype(np.float32).reshape(height, width, 3),
        depth.astype(np.float32).reshape(height, width),
    )


def render_depth(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> Fragments:
    """The mesh's own nearest-surface fragments seen from one OpenGL camera (`render.cameras`)."""
    xy, z = project(vertices, c2w, intr)
    return rasterize(xy, z, faces, intr.width, intr.height)


def depth_map(
    vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, intr: Intrinsics, near: float = 1e-3
) -> np.ndarray:
    """Z-buffered depth (H, W) float64 of a triangle mesh seen by one camera, +inf where empty.

    Depth is the distance along the camera's viewing axis (as `render.cameras.project`).
    """
    xy, z = project(vertices, c2w, intr)
    return _nearest(xy, z, faces, intr.width, intr.height, near)[2].reshape(intr.height, intr.width)
