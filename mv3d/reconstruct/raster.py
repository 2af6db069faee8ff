"""A small vectorised triangle rasteriser in numpy: z-buffers for visibility and texture-space baking.

Texture baking needs, per view, the depth of the mesh's own nearest surface (a texel is visible in a
view when its depth is not behind that z-buffer), and, per texel of the atlas, the triangle and the
barycentric coordinates under it. Both are the same operation: rasterise triangles given in pixel
coordinates with a depth per vertex and keep the nearest fragment per pixel. Pixel (0, 0) covers
[0, 1) x [0, 1); a pixel is covered when its centre (+0.5) is inside the triangle (both windings).
Depth and barycentrics are perspective-correct (1/z is linear in screen space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.cameras import Intrinsics


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


def rasterize(
    xy: np.ndarray, z: np.ndarray, faces: np.ndarray, width: int, height: int, max_candidates: int = 1 << 21
) -> Fragments:
    """Rasterise triangles with vertices at pixel positions `xy` (V, 2) and depths `z` (V,) > 0.

    Triangles with a vertex at depth <= 0 (behind the camera) are skipped.
    """
    xy = np.asarray(xy, np.float64)
    z = np.asarray(z, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = xy[faces]
    tz = z[faces]
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    size = hi - lo + 1
    ok = (size[:, 0] > 0) & (size[:, 1] > 0) & np.all(tz > 1e-9, axis=1)
    fid = np.flatnonzero(ok)
    pix_all, dep_all, face_all, bary_all = [], [], [], []
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
                fz = tz[f]
                b = np.stack([w0[r, c] / fz[r, 0], w1[r, c] / fz[r, 1], w2[r, c] / fz[r, 2]], axis=1)
                inv_z = b.sum(axis=1)
                pix_all.append(py[r, c] * width + px[r, c])
                dep_all.append(1.0 / inv_z)
                face_all.append(f[r])
                bary_all.append(b / inv_z[:, None])
    face_img = np.full(height * width, -1, np.int64)
    bary_img = np.zeros((height * width, 3), np.float32)
    depth_img = np.full(height * width, np.inf, np.float32)
    if pix_all:
        pix = np.concatenate(pix_all)
        dep = np.concatenate(dep_all)
        order = np.lexsort((dep, pix))
        pix, dep = pix[order], dep[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        keep = order[first]
        face_img[pix[first]] = np.concatenate(face_all)[keep]
        bary_img[pix[first]] = np.concatenate(bary_all)[keep]
        depth_img[pix[first]] = dep[first]
    return Fragments(
        face_img.reshape(height, width), bary_img.reshape(height, width, 3), depth_img.reshape(height, width)
    )


def project_vertices(
    vertices: np.ndarray, c2w: np.ndarray, intr: Intrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (V, 2) and depths (V,) of world vertices in one OpenGL camera."""
    from render.cameras import project

    return project(vertices, c2w, intr)


def render_depth(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> Fragments:
    """The mesh's own nearest-surface fragments seen from one camera."""
    xy, z = project_vertices(vertices, c2w, intr)
    return rasterize(xy, z, faces, intr.width, intr.height)
