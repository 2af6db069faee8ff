"""Procedural objects: deterministic, varied, asymmetric, closed outward-facing parts, both visual kinds."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from render.common import InputError
from render.meshes import normalize_scene, world_geometry
from render.procedural import PRIMITIVES, procedural_object, procedural_objects
from render.sources import resolve_sources

SAMPLE = [(0, i) for i in range(12)] + [(123, i) for i in range(12)]


def _world_points(scene: trimesh.Scene) -> np.ndarray:
    """All vertices of a scene in its world frame, (V, 3)."""
    pts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        pts.append(trimesh.transform_points(scene.geometry[name].vertices, transform))
    return np.concatenate(pts)


def _signature(scene: trimesh.Scene) -> list:
    out = []
    for name in sorted(scene.geometry):
        g = scene.geometry[name]
        item = [name, g.vertices.copy(), g.faces.copy()]
        if g.visual.kind == "texture":
            item += [g.visual.uv.copy(), np.asarray(g.visual.material.image).copy()]
        else:
            item += [g.visual.vertex_colors.copy()]
        out.append(item)
    return out


def test_same_seed_and_index_give_identical_objects():
    for seed, index in [(0, 0), (7, 3), (123, 11)]:
        a, b = _signature(procedural_object(seed, index)), _signature(procedural_object(seed, index))
        assert len(a) == len(b)
        for pa, pb in zip(a, b, strict=True):
            assert pa[0] == pb[0]
            for xa, xb in zip(pa[1:], pb[1:], strict=True):
                np.testing.assert_array_equal(xa, xb)


def test_different_seeds_and_indices_differ():
    scenes = [procedural_object(s, i) for s, i in SAMPLE]
    kinds = {sc.metadata["procedural"]["parts"][0]["primitive"] for sc in scenes}
    assert len(kinds) >= 4, kinds  # the body primitive varies
    clouds = [_world_points(sc) for sc in scenes]
    for i in range(len(clouds)):
        for j in range(i + 1, len(clouds)):
            same = clouds[i].shape == clouds[j].shape and np.allclose(clouds[i], clouds[j])
            assert not same, (SAMPLE[i], SAMPLE[j])
    assert set(PRIMITIVES) >= kinds


def test_parts_are_closed_outward_and_small():
    for seed, index in SAMPLE:
        scene = procedural_object(seed, index)
        total = 0
        for name, g in scene.geometry.items():
            total += len(g.faces)
            # Seams repeat vertices for continuous UVs; merged by position the part must be closed,
            # and a positive volume means its triangles face outwards (what a rasteriser culls by).
            m = trimesh.Trimesh(g.vertices.copy(), g.faces.copy(), process=False)
            m.merge_vertices(merge_tex=True, merge_norm=True)
            assert m.is_watertight, (seed, index, name)
            assert m.volume > 0, (seed, index, name, m.volume)
        assert 12 <= total < 20_000


def test_both_visual_kinds_occur_in_every_object():
    for seed, index in SAMPLE:
        scene = procedural_object(seed, index)
        kinds = {g.visual.kind for g in scene.geometry.values()}
        assert kinds == {"texture", "vertex"}, (seed, index, kinds)
        for g in scene.geometry.values():
            if g.visual.kind == "texture":
                assert g.visual.uv.shape == (len(g.vertices), 2)
                image = np.asarray(g.visual.material.image)
                assert image.ndim == 3 and len(np.unique(image.reshape(-1, 3), axis=0)) == 2
        marker = scene.geometry["marker"]
        assert marker.visual.kind == "vertex"


def test_objects_are_not_symmetric_under_half_turn_about_z():
    """Views 180 degrees apart must differ: the rotated object does not coincide with itself."""
    for seed, index in SAMPLE:
        scene, _ = normalize_scene(procedural_object(seed, index))
        pts = _world_points(scene)
        turned = pts * np.array([-1.0, -1.0, 1.0])
        d_fwd, _ = cKDTree(pts).query(turned)
        d_back, _ = cKDTree(turned).query(pts)
        chamfer = 0.5 * (d_fwd.mean() + d_back.mean())
        # In the unit cube; an exactly symmetric object would give 0 (vertices map onto vertices).
        assert chamfer > 0.01, (seed, index, chamfer)


def test_loads_through_sources_into_the_unit_cube():
    sources = resolve_sources(["procedural:4:5"])
    assert [s.spec for s in sources] == [f"procedural:5:{i}" for i in range(4)]
    for src in sources:
        mesh = src.load()
        bounds = mesh.world_bounds()
        np.testing.assert_allclose((bounds[0] + bounds[1]) / 2, 0.0, atol=1e-9)
        assert np.isclose((bounds[1] - bounds[0]).max(), 1.0)
        assert mesh.source == src.spec
        assert mesh.has_color()
        assert len(world_geometry(mesh)) == len(procedural_object(5, src.meta["index"]).geometry)


def test_plain_object_is_the_full_objects_body_alone():
    """`plain=True` keeps the body of the same (seed, index), bit for bit, and nothing else; a plain
    source loads it through the same path as a full one, under its own id."""
    for index in range(6):
        full = procedural_object(3, index)
        plain = procedural_object(3, index, plain=True)
        assert list(plain.geometry) == ["body"] and len(full.geometry) >= 3
        np.testing.assert_array_equal(plain.geometry["body"].vertices, full.geometry["body"].vertices)
        np.testing.assert_array_equal(plain.geometry["body"].faces, full.geometry["body"].faces)
        assert plain.metadata["procedural"]["plain"] and not full.metadata["procedural"]["plain"]
    (src,) = resolve_sources(["procedural:1:3:plain"])
    assert src.object_id == "procedural-plain-s3-000000" and src.spec == "procedural:3:0:plain"
    mesh = src.load()
    assert len(world_geometry(mesh)) == 1 and mesh.has_color()
    assert np.isclose((mesh.world_bounds()[1] - mesh.world_bounds()[0]).max(), 1.0)
    assert len(procedural_objects(2, 3, plain=True)[1].geometry) == 1


def test_procedural_objects_and_bad_arguments():
    objs = procedural_objects(3, 9)
    assert len(objs) == 3
    assert objs[2].metadata["procedural"]["index"] == 2
    assert procedural_objects(0, 9) == []
    with pytest.raises(InputError, match="seed"):
        procedural_object(-1, 0)
    with pytest.raises(InputError):
        procedural_objects(-2, 0)


def test_renders_with_the_fast_renderer(monkeypatch):
    """Procedural objects render as a coloured, textured, centred silhouette that curation keeps."""
    if "PYOPENGL_PLATFORM" not in os.environ:
        monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    from render.cameras import static_orbit
    from render.curation import CurationConfig, check_mesh, check_renders
    from render.renderers import get_renderer

    try:
        renderer = get_renderer("fast")
        src = resolve_sources(["procedural:2:3"])
        mesh = src[1].load()
        result = renderer.render(mesh, static_orbit(4, elevation_deg=15.0), 64)
    except InputError as exc:  # no EGL on this machine
        pytest.skip(f"fast renderer unavailable: {exc}")
    rgba = result.rgba
    assert rgba.shape == (4, 64, 64, 4)
    assert check_mesh(mesh, CurationConfig()) is None
    assert check_renders(rgba, CurationConfig()) is None
    inside = rgba[..., 3] > 200
    colours = np.unique(rgba[..., :3][inside] // 32, axis=0)
    assert len(colours) > 8  # textures, gradients and a marker, not one flat grey
    # Opposite views differ (asymmetry as seen by a camera).
    assert np.abs(rgba[0].astype(int) - rgba[2].astype(int)).mean() > 2.0
