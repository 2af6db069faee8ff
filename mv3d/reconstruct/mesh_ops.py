"""Voxel grids to clean meshes: iso-surface extraction, clean-up and decimation.

Decimation is vertex clustering with a quadric error per cell (Lindstrom, "Out-of-core simplification
of large polygonal models", SIGGRAPH 2000): vertices are binned into a uniform grid of cells, every cell
becomes one vertex placed where the summed plane quadrics of its faces are smallest, and faces whose
corners fall into fewer than three cells disappear. It is a numpy-only, linear-time stand-in for
edge-collapse QEM (open3d and fast-simplification are not installed here); the cell size is searched so
that the face count lands at or under the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh


@dataclass(frozen=True)
class Grid:
    """A cubic voxel grid centred at the origin: `resolution`^3 cells covering [-bound, bound]^3.

    Values live at cell centres: index i sits at -bound + (i + 0.5) * voxel.
    """

    resolution: int
    bound: float = 0.55

    @property
    def voxel(self) -> float:
        return 2.0 * self.bound / self.resolution

    def centres(self) -> np.ndarray:
        """(R, R, R, 3) float32 world coordinates of the cell centres, indexed [x, y, z]."""
        c = (-self.bound + (np.arange(self.resolution) + 0.5) * self.voxel).astype(np.float32)
        return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)

    def index_to_world(self, idx: np.ndarray) -> np.ndarray:
        return -self.bound + (np.asarray(idx, np.float64) + 0.5) * self.voxel


def extract_isosurface(values: np.ndarray, grid: Grid, level: float) -> trimesh.Trimesh:
    """Marching cubes of a scalar field (R, R, R) indexed [x, y, z], "inside" where values > level.

    The field is padded with an outside value so the surface is closed where it meets the grid border.
    Returns a mesh in world coordinates with outward-facing normals (possibly empty).
    """
    import mcubes

    values = np.asarray(values, np.float64)
    outside = min(float(values.min()), level) - 1.0
    padded = np.pad(values, 1, mode="constant", constant_values=outside)
    verts, faces = mcubes.marching_cubes(padded, level)
    if len(faces) == 0:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    verts = grid.index_to_world(verts - 1.0)
    mesh = trimesh.Trimesh(verts, faces.astype(np.int64), process=True)
    # PyMCubes orients triangles so normals point towards increasing values (the inside); flip them out.
    if mesh.volume < 0 or _normals_point_in(mesh):
        mesh.invert()
    return mesh


def _normals_point_in(mesh: trimesh.Trimesh) -> bool:
    """True when most face normals point towards the mesh centroid (an inside-out surface)."""
    to_face = mesh.triangles_center - mesh.vertices.mean(axis=0)
    return float(np.sum(np.einsum("ij,ij->i", to_face, mesh.face_normals) * mesh.area_faces)) < 0


def clean_mesh(
    mesh: trimesh.Trimesh, min_component_fraction: float = 0.02, keep_largest: bool = False
) -> trimesh.Trimesh:
    """Remove degenerate and duplicate faces, small floating components, fill simple holes.

    Components with fewer than `min_component_fraction` of the faces are floaters and are dropped
    (`keep_largest` keeps only the biggest one). Objects made of separate parts keep their parts.
    """
    mesh = mesh.copy()
    mesh.update_faces(mesh.nondegenerate_faces(height=1e-10))
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    mesh.merge_vertices()
    if len(mesh.faces) == 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        counts = np.array([len(p.faces) for p in parts])
        if keep_largest:
            keep = [parts[int(np.argmax(counts))]]
        else:
            keep = [
                p for p, c in zip(parts, counts, strict=True) if c >= min_component_fraction * counts.sum()
            ]
        mesh = trimesh.util.concatenate(keep)
    trimesh.repair.fill_holes(mesh)
    trimesh.repair.fix_normals(mesh, multibody=True)
    return mesh


def _face_quadrics(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted plane quadrics of the faces: A (F, 3, 3) = n n^T, b (F, 3) = d n, c (F,) = d^2."""
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    n = cross / np.maximum(2.0 * area, 1e-20)[:, None]
    d = -np.einsum("ij,ij->i", n, tri[:, 0])
    w = area[:, None, None]
    return w * n[:, :, None] * n[:, None, :], area[:, None] * d[:, None] * n, area * d * d


def cluster_decimate(mesh: trimesh.Trimesh, cell: float) -> trimesh.Trimesh:
    """One pass of quadric vertex clustering with cubic cells of size `cell`."""
    verts = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    key = np.floor((verts - verts.min(axis=0)) / cell).astype(np.int64)
    _, cluster = np.unique(key, axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    k = int(cluster.max()) + 1
    qa, qb, _ = _face_quadrics(verts, faces)
    a = np.zeros((k, 3, 3))
    b = np.zeros((k, 3))
    for corner in range(3):
        np.add.at(a, cluster[faces[:, corner]], qa)
        np.add.at(b, cluster[faces[:, corner]], qb)
    count = np.bincount(cluster, minlength=k).astype(np.float64)
    mean = np.zeros((k, 3))
    np.add.at(mean, cluster, verts)
    mean /= count[:, None]
    # Minimise x^T A x + 2 b^T x, regularised towards the cell's mean vertex so that flat or
    # degenerate cells (rank-deficient A) stay well posed; the result is clamped near the cell.
    scale = np.trace(a, axis1=1, axis2=2)[:, None, None] / 3.0 + 1e-12
    reg = 1e-3 * scale
    lhs = a + reg * np.eye(3)
    rhs = -b + reg[:, :, 0] * mean
    pos = np.linalg.solve(lhs, rhs[..., None])[..., 0]
    off = pos - mean
    too_far = np.linalg.norm(off, axis=1) > cell
    pos[too_far] = mean[too_far]
    new_faces = cluster[faces]
    ok = (
        (new_faces[:, 0] != new_faces[:, 1])
        & (new_faces[:, 1] != new_faces[:, 2])
        & (new_faces[:, 0] != new_faces[:, 2])
    )
    new_faces = new_faces[ok]
    _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
    new_faces = new_faces[np.sort(first)]
    out = trimesh.Trimesh(pos, new_faces, process=True)
    out.remove_unreferenced_vertices()
    return out


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Reduce `mesh` to at most `target_faces` faces (unchanged if it already has no more).

    Bisects the clustering cell size (in log space) for the largest face count under the target.
    """
    if target_faces <= 0 or len(mesh.faces) <= target_faces:
        return mesh
    extent = float(np.max(mesh.extents))
    mean_edge = float(mesh.edges_unique_length.mean())
    lo, hi = np.log(mean_edge), np.log(extent / 2.0)
    best = None
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        cand = cluster_decimate(mesh, float(np.exp(mid)))
        if len(cand.faces) > target_faces:
            lo = mid
        else:
            best = cand
            hi = mid
            if len(cand.faces) > 0.95 * target_faces:
                break
    if best is None:
        best = cluster_decimate(mesh, float(np.exp(hi)))
    return best
