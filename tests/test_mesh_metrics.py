"""Mesh metrics on shapes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from eval.mesh_metrics import (
    chamfer_distance,
    f_score,
    mesh_metrics,
    normal_consistency,
    occupancy,
    volume_iou,
)
from render.common import InputError

N = 20_000


@pytest.fixture(scope="module")
def spheres():
    return trimesh.creation.icosphere(4, radius=0.3), trimesh.creation.icosphere(4, radius=0.33)


def test_identical_meshes(spheres):
    a, _ = spheres
    m = mesh_metrics(a, a, num_points=N, resolution=32)
    # Two independent samplings of one surface: distances are the sampling gap only.
    assert m["chamfer"] < 0.005
    assert m["f_score@0.02"] == pytest.approx(1.0, abs=1e-3)
    assert m["normal_consistency"] > 0.99
    assert m["volume_iou"] == 1.0


def test_sphere_vs_larger_sphere_analytic_chamfer(spheres):
    a, b = spheres
    d = 0.03
    # Every point of one sphere is d from the other: Chamfer (mean of both directions) ~ d.
    assert chamfer_distance(a, b, num_points=N) == pytest.approx(d, rel=0.05)
    # Both surfaces are spheres: normals at nearest points agree.
    assert normal_consistency(a, b, num_points=N) > 0.99


def test_offset_meshes_chamfer_grows_with_offset(spheres):
    a, _ = spheres
    near = a.copy().apply_translation([0.02, 0, 0])
    far = a.copy().apply_translation([0.1, 0, 0])
    c_near, c_far = chamfer_distance(a, near, num_points=N), chamfer_distance(a, far, num_points=N)
    assert 0 < c_near < c_far < 0.1
    # Seeded: same seed, same value.
    assert chamfer_distance(a, far, num_points=N, seed=3) == chamfer_distance(a, far, num_points=N, seed=3)


def test_f_score_threshold_behaviour(spheres):
    a, b = spheres  # every point 0.03 from the other surface
    assert f_score(a, b, threshold=0.02, num_points=N) == 0.0
    assert f_score(a, b, threshold=0.04, num_points=N) == 1.0
    scores = [f_score(a, b, threshold=t, num_points=N) for t in (0.029, 0.0305, 0.032)]
    assert scores == sorted(scores)


def test_volume_iou_nested_spheres():
    r1, r2 = 0.25, 0.4
    inner = trimesh.creation.icosphere(5, radius=r1)
    outer = trimesh.creation.icosphere(5, radius=r2)
    assert volume_iou(inner, outer, resolution=64) == pytest.approx((r1 / r2) ** 3, rel=0.03)
    # Disjoint boxes: 0.
    left = trimesh.creation.box((0.2, 0.2, 0.2)).apply_translation([-0.3, 0, 0])
    right = trimesh.creation.box((0.2, 0.2, 0.2)).apply_translation([0.3, 0, 0])
    assert volume_iou(left, right, resolution=32) == 0.0


def test_occupancy_is_oriented_and_robust_to_holes():
    box = trimesh.creation.box((0.5, 0.3, 0.2)).apply_translation([0.1, 0, 0])
    occ = occupancy(box, resolution=44)  # voxel size 0.025: the box spans 20 x 12 x 8 voxels
    assert occ.sum() == 20 * 12 * 8
    # [x, y, z] indexing: the box is longest along x.
    xs, ys, zs = np.nonzero(occ)
    assert np.ptp(xs) > np.ptp(ys) > np.ptp(zs)
    sphere = trimesh.creation.icosphere(4, radius=0.35)
    holed = sphere.copy()
    holed.update_faces(np.arange(len(holed.faces)) >= 20)
    assert not holed.is_watertight
    assert volume_iou(holed, sphere, resolution=48) > 0.99


def test_empty_mesh_is_an_input_error(spheres):
    with pytest.raises(InputError, match="no faces"):
        chamfer_distance(trimesh.Trimesh(), spheres[0])
