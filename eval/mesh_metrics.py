"""Mesh metrics in the unit-cube world frame: Chamfer distance, F-score, volume IoU, normal consistency.

Both meshes must already be in mv3d's world frame (objects normalised to the unit cube, centred at
the origin; docs/architecture.md). No alignment is applied: the camera convention fixes the frame, so a mesh
that comes out rotated or mirrored is scored as wrong, as it should be.

Definitions (stated once, used everywhere):

* Points: `num_points` samples drawn uniformly by area on each surface (trimesh, seeded), with the
  normals of the faces they lie on.
* Chamfer distance: 0.5 * (mean_p min_g |p - g| + mean_g min_p |g - p|), L2 (not squared) distances,
  nearest neighbours by scipy's cKDTree. Two concentric spheres of radii r and r + d score ~ d.
* F-score at threshold t: harmonic mean of precision (fraction of predicted points within t of the
  ground truth) and recall (fraction of ground-truth points within t of the prediction).
* Volume IoU: occupancy of `resolution`^3 voxel centres in the cube [-0.55, 0.55]^3 (the unit cube
  plus 10% so that slightly oversized predictions are still seen). Inside-ness is decided by ray
  parity along the x, y and z axes and a majority vote of the three, which tolerates small holes
  and non-watertight meshes (a hole flips only the columns that pass through it, on one axis).
* Normal consistency: mean over both directions of |n_p . n_nn(p)|, the absolute cosine between a
  sampled point's face normal and the normal at its nearest neighbour on the other surface; in
  [0, 1], 1 for identical surfaces. Absolute, so inconsistent face winding is not penalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from render.common import InputError

#: Half-extent of the cube that volume IoU voxelises.
IOU_HALF_EXTENT = 0.55


def _check(mesh, name: str) -> None:
    if mesh is None or len(getattr(mesh, "faces", ())) == 0:
        raise InputError(f"{name} mesh has no faces: expected a triangle mesh")


def sample_points(mesh, num_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples (P, 3) and their unit face normals (P, 3)."""
    import trimesh

    pts, face_idx = trimesh.sample.sample_surface(mesh, int(num_points), seed=seed)
    normals = np.asarray(mesh.face_normals)[face_idx]
    return np.asarray(pts, np.float64), np.asarray(normals, np.float64)


def _nn(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (P,) and index (P,) of each src point's nearest dst point."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(dst).query(src, k=1, workers=-1)
    return dist, idx


def _distances(pred, gt, num_points: int, seed: int):
    _check(pred, "predicted")
    _check(gt, "ground-truth")
    p, pn = sample_points(pred, num_points, seed)
    g, gn = sample_points(gt, num_points, seed + 1)
    d_pg, i_pg = _nn(p, g)
    d_gp, i_gp = _nn(g, p)
    return (p, pn, g, gn), (d_pg, i_pg), (d_gp, i_gp)


def _chamfer(d_pg: np.ndarray, d_gp: np.ndarray) -> float:
    return float(0.5 * (d_pg.mean() + d_gp.mean()))


def _fscore(d_pg: np.ndarray, d_gp: np.ndarray, threshold: float) -> float:
    precision = float((d_pg < threshold).mean())
    recall = float((d_gp < threshold).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _normal_consistency(pn, gn, i_pg, i_gp) -> float:
    a = np.abs((pn * gn[i_pg]).sum(-1)).mean()
    b = np.abs((gn * pn[i_gp]).sum(-1)).mean()
    return float(0.5 * (a + b))


def chamfer_distance(pred, gt, num_points: int = 100_000, seed: int = 0) -> float:
    """Symmetric Chamfer distance (L2, mean of both directions) between two meshes; see module doc."""
    _, (d_pg, _), (d_gp, _) = _distances(pred, gt, num_points, seed)
    return _chamfer(d_pg, d_gp)


def f_score(pred, gt, threshold: float = 0.05, num_points: int = 100_000, seed: int = 0) -> float:
    """F-score in [0, 1] at distance `threshold` (unit-cube units); see module doc."""
    _, (d_pg, _), (d_gp, _) = _distances(pred, gt, num_points, seed)
    return _fscore(d_pg, d_gp, threshold)


def normal_consistency(pred, gt, num_points: int = 100_000, seed: int = 0) -> float:
    """Mean absolute normal cosine to the nearest point on the other surface, both directions, [0, 1]."""
    (_, pn, _, gn), (_, i_pg), (_, i_gp) = _distances(pred, gt, num_points, seed)
    return _normal_consistency(pn, gn, i_pg, i_gp)


def occupancy(mesh, resolution: int = 64, half_extent: float = IOU_HALF_EXTENT) -> np.ndarray:
    """(R, R, R) bool occupancy of voxel centres in [-h, h]^3, indexed [x, y, z]; see module doc."""
    from render.raster import cover

    _check(mesh, "voxelised")
    r = int(resolution)
    if r < 2:
        raise InputError(f"voxel resolution {resolution}: expected at least 2")
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces)
    cell = 2 * half_extent / r
    # Grid units: voxel centre k sits at k + 0.5. A tiny irrational offset keeps axis-aligned edges
    # and vertices of simple shapes from landing exactly on a column, where parity would double count.
    grid = (v + half_extent) / cell + np.array([1e-4 * np.sqrt(2), 1e-4 * np.sqrt(3), 1e-4 * np.sqrt(5)])
    votes = np.zeros((r, r, r), np.int8)
    for axis in range(3):
        u_ax, v_ax = [a for a in range(3) if a != axis]
        face, idx, bary = cover(grid[f][:, :, [u_ax, v_ax]], r, r)
        depth = (bary * grid[f[face]][:, :, axis]).sum(-1)
        # Number of voxel centres below each crossing along the column: crossings are counted for
        # every centre above them, so a cumulative sum gives the crossings below each centre.
        k0 = np.clip(np.ceil(depth - 0.5).astype(np.int64), 0, r)
        diff = np.zeros((r * r, r + 1), np.int32)
        np.add.at(diff, (idx, k0), 1)
        inside = (np.cumsum(diff, axis=1)[:, :r] % 2).astype(bool)  # [v, u, axis] via idx = v * r + u
        inside = inside.reshape(r, r, r)  # (v_idx, u_idx, axis_idx)
        # Put back in [x, y, z] order.
        order = {v_ax: 0, u_ax: 1, axis: 2}
        votes += np.transpose(inside, [order[0], order[1], order[2]]).astype(np.int8)
    return votes >= 2


def volume_iou(pred, gt, resolution: int = 64) -> float:
    """Intersection over union of the voxelised volumes, in [0, 1]; see module doc."""
    a = occupancy(pred, resolution)
    b = occupancy(gt, resolution)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mesh_metrics(
    pred,
    gt,
    thresholds: Sequence[float] = (0.01, 0.02, 0.05),
    num_points: int = 100_000,
    resolution: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """All mesh metrics from one sampling: chamfer, f_score@t for each t, normal_consistency, volume_iou."""
    (_, pn, _, gn), (d_pg, i_pg), (d_gp, i_gp) = _distances(pred, gt, num_points, seed)
    out = {"chamfer": _chamfer(d_pg, d_gp)}
    for t in thresholds:
        out[f"f_score@{t:g}"] = _fscore(d_pg, d_gp, t)
    out["normal_consistency"] = _normal_consistency(pn, gn, i_pg, i_gp)
    out["volume_iou"] = volume_iou(pred, gt, resolution)
    return out
