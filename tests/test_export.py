"""Export: GLB / OBJ+MTL+PNG / PLY round trips through trimesh, Blender import of the GLB, turntables."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from PIL import Image

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from mv3d.export import (  # noqa: E402
    export_blend,
    export_mesh,
    render_turntable,
    side_by_side,
    turntable,
)
from render.cameras import static_orbit  # noqa: E402
from render.common import InputError  # noqa: E402
from render.meshes import read_trimesh  # noqa: E402

HAS_BPY = importlib.util.find_spec("bpy") is not None


def textured_box() -> trimesh.Trimesh:
    """A box of extents (0.8, 0.5, 0.3) with UVs and a 64x64 red/blue checker PBR texture."""
    from mv3d.reconstruct.texture import unwrap

    box = trimesh.creation.box(extents=(0.8, 0.5, 0.3)).subdivide()
    out, uvs = unwrap(box)
    yy, xx = np.mgrid[0:64, 0:64]
    checker = ((xx // 8 + yy // 8) % 2).astype(bool)
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[checker] = (220, 30, 30)
    tex[~checker] = (30, 30, 220)
    mat = trimesh.visual.material.PBRMaterial(name="mv3d_material", baseColorTexture=Image.fromarray(tex))
    out.visual = trimesh.visual.TextureVisuals(uv=uvs, material=mat)
    return out


def test_glb_round_trip_keeps_geometry_frame_and_texture(tmp_path):
    mesh = textured_box()
    path = export_mesh(mesh, tmp_path / "m.glb")
    back = read_trimesh(path)
    assert len(back.faces) == len(mesh.faces)
    # +Z up survives the trip through glTF's +Y up.
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    tex = np.asarray(back.visual.material.baseColorTexture.convert("RGB"))
    assert tex.shape == (64, 64, 3) and tex[..., 0].max() > 200 and tex[..., 2].max() > 200
    # The file itself stores glTF axes: height (world z = 0.3) along +Y.
    raw = trimesh.load(path, force="mesh")
    np.testing.assert_allclose(raw.extents, [0.8, 0.3, 0.5], atol=1e-5)


def test_glb_stores_world_up_as_gltf_up_and_forward_as_gltf_forward(tmp_path):
    """glTF is +Y up with +Z towards the viewer of its front (Blender's glTF importer maps Blender's
    (x, y, z) to glTF's (x, z, -y)): an off-centre box keeps its place, not only its extents."""
    box = trimesh.creation.box(extents=(0.4, 0.2, 0.1))
    box.apply_translation([0.1, 0.2, 0.3])  # world: right, back, up
    path = export_mesh(box, tmp_path / "m.glb")
    raw = trimesh.load(path, force="mesh")
    (x0, y0, z0), (x1, y1, z1) = box.bounds
    np.testing.assert_allclose(raw.bounds, [[x0, z0, -y1], [x1, z1, -y0]], atol=1e-6)
    np.testing.assert_allclose(read_trimesh(path).bounds, box.bounds, atol=1e-6)


def test_obj_and_ply_round_trip(tmp_path):
    mesh = textured_box()
    obj = export_mesh(mesh, tmp_path / "m.obj")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "m.obj" in files and "m.mtl" in files and any(f.endswith(".png") for f in files)
    back = trimesh.load(obj, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert back.visual.kind == "texture" and back.visual.material.image is not None

    ply = export_mesh(mesh, tmp_path / "m.ply")
    back = trimesh.load(ply)
    assert back.visual.kind == "vertex"
    colours = back.visual.vertex_colors[:, :3].astype(int)
    assert (colours[:, 0] > 150).any() and (colours[:, 2] > 150).any()  # both checker colours sampled
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)


def test_gltf_suffix_writes_gltf_json(tmp_path):
    # A .gltf path used to get GLB bytes: trimesh and mv3d's own reader refused the file.
    mesh = textured_box()
    path = export_mesh(mesh, tmp_path / "m.gltf")
    assert path == tmp_path / "m.gltf"
    assert json.loads(path.read_text())["asset"]["version"] == "2.0"
    back = read_trimesh(path)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)
    assert back.visual.material.baseColorTexture.size == (64, 64)


def test_glb_vertex_colours_are_stored_linear(tmp_path):
    # glTF's COLOR_0 is linear: sRGB values stored as they are showed washed out in Blender and
    # three.js (a red-brown cup came out pale pink). read_trimesh gives the sRGB values back.
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.3))
    box.visual.vertex_colors = np.tile(np.array([200, 100, 30, 255], np.uint8), (len(box.vertices), 1))
    path = export_mesh(box, tmp_path / "m.glb")
    raw = trimesh.load(path, force="mesh", process=False).visual.vertex_colors
    np.testing.assert_allclose(raw[:, :3], np.tile([147, 32, 3], (len(raw), 1)), atol=1)
    back = read_trimesh(path).visual.vertex_colors
    np.testing.assert_allclose(back, box.visual.vertex_colors, atol=2)
    assert box.visual.vertex_colors[0].tolist() == [200, 100, 30, 255]  # the caller's mesh is kept


def test_obj_texture_is_not_dimmed_by_its_mtl(tmp_path):
    # A PBR texture without a base-colour factor (glTF: white) once became `Kd 0.4`, which OBJ readers
    # multiply into `map_Kd`: trimesh, pyrender and three.js showed the texture at 40% brightness.
    mesh = textured_box()
    obj = export_mesh(mesh, tmp_path / "m.obj")
    kd = [ln.split()[1:] for ln in (tmp_path / "m.mtl").read_text().splitlines() if ln.startswith("Kd")]
    assert [[float(v) for v in k] for k in kd] == [[1.0, 1.0, 1.0]]
    back = trimesh.load(obj, force="mesh")
    assert back.visual.material.to_pbr().baseColorFactor.tolist() == [255, 255, 255, 255]
    assert mesh.visual.material.baseColorFactor is None  # the caller's mesh is not changed


@pytest.mark.parametrize("material", ["../up", "sub/dir", "x" * 300, "m"])
def test_obj_texture_names_are_safe_and_prefixed(material, tmp_path):
    # trimesh names an OBJ's texture after its material, which a mesh file names: "../up" and "sub/dir"
    # raised a traceback, 300 characters an OSError, and a name that the OBJ's stem starts with
    # ("mv3d_material" for m.obj) went unprefixed, so m.obj and mv3d.obj in one folder shared a texture.
    mesh = textured_box()
    mesh.visual.material.name = material
    obj = export_mesh(mesh, tmp_path / "out" / "m.obj")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    (texture,) = [n for n in names if n.endswith(".png")]
    assert texture.startswith("m_") and len(texture) < 255 and names == sorted(["m.mtl", "m.obj", texture])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    back = trimesh.load(obj, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    assert np.asarray(back.visual.material.image).shape[:2] == (64, 64)
    assert f"map_Kd {texture}" in (tmp_path / "out" / "m.mtl").read_text()


def test_export_errors(tmp_path):
    with pytest.raises(InputError, match="expected one of glb, obj, ply$"):
        export_mesh(textured_box(), tmp_path / "m.stl")
    # a scene or a video asked for as a mesh names the option that writes it
    for name, option in (("m.blend", "--blend m.blend"), ("m.mp4", "--turntable m.mp4")):
        with pytest.raises(InputError, match=f"`mv3d export MESH {option}` writes it"):
            export_mesh(textured_box(), tmp_path / name)
    with pytest.raises(InputError, match="empty mesh"):
        export_mesh(trimesh.Trimesh(), tmp_path / "m.glb")
    assert not (tmp_path / "m.glb").exists()
    with pytest.raises(InputError, match="does not exist"):
        read_trimesh(tmp_path / "missing.glb")
    (tmp_path / "bad.glb").write_bytes(b"not a glb at all")
    with pytest.raises(InputError, match="bad.glb"):
        read_trimesh(tmp_path / "bad.glb")


def test_turntable_and_side_by_side(tmp_path):
    mesh = textured_box()
    frames = render_turntable(mesh, num_frames=4, resolution=48)
    assert frames.shape == (4, 48, 48, 4) and frames[..., 3].max() == 255
    # Azimuth 0 sees the 0.8 x 0.3 face, azimuth 90 the 0.5 x 0.3 one: a narrower silhouette.
    width = [(f[..., 3] > 0).any(axis=0).sum() for f in frames]
    assert width[0] > width[1]
    gif = turntable(mesh, tmp_path / "t.gif", num_frames=4, resolution=48)
    assert Image.open(gif).n_frames == 4
    sbs = side_by_side(frames, frames[:, ::2, ::2], tmp_path / "s.mp4")
    assert sbs.shape == (4, 48, 96, 3) and (tmp_path / "s.mp4").stat().st_size > 0
    with pytest.raises(InputError, match="as many"):
        side_by_side(frames, frames[:2])
    with pytest.raises(InputError, match=".gif or .mp4"):
        turntable(mesh, tmp_path / "t.avi", num_frames=2, resolution=16)


_BPY_CHECK = r"""
import json, sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
path = sys.argv[-1]
if path.endswith(".blend"):
    bpy.ops.wm.open_mainfile(filepath=path)
else:
    bpy.ops.import_scene.gltf(filepath=path)
meshes = [o for o in bpy.data.objects if o.type == "MESH"]
out = {
    "vertices": sum(len(o.data.vertices) for o in meshes),
    "bounds_z": [min((o.matrix_world @ v.co).z for o in meshes for v in o.data.vertices),
                 max((o.matrix_world @ v.co).z for o in meshes for v in o.data.vertices)],
    "materials": [m.name for o in meshes for m in o.data.materials],
    "images": [[i.name, list(i.size)] for i in bpy.data.images if i.size[0] > 0],
    "cameras": [o.name for o in bpy.data.objects if o.type == "CAMERA"],
    "lights": [o.name for o in bpy.data.objects if o.type == "LIGHT"],
    "frame_end": bpy.context.scene.frame_end,
    "packed": [i.name for i in bpy.data.images if i.packed_file],
    "colour_attributes": sum(len(o.data.color_attributes) for o in meshes),
    "base_colour_from": [
        link.from_node.type for o in meshes for m in o.data.materials if m and m.node_tree
        for n in m.node_tree.nodes if n.type == "BSDF_PRINCIPLED" for link in n.inputs["Base Color"].links
    ],
}
print("RESULT" + json.dumps(out))
"""


def _bpy_inspect(path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _BPY_CHECK, str(path)], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.blender
@pytest.mark.skipif(not HAS_BPY, reason="bpy (the blender extra) is not installed")
@pytest.mark.slow
def test_blender_imports_glb_and_blend(tmp_path):
    mesh = textured_box()
    glb = export_mesh(mesh, tmp_path / "m.glb")
    info = _bpy_inspect(glb)
    # glTF stores one vertex per (position, normal, uv) corner: as many as trimesh wrote.
    assert info["vertices"] == len(mesh.vertices)
    assert "mv3d_material" in info["materials"]
    assert any(size == [64, 64] for _, size in info["images"])
    # Upright in Blender (+Z up): the box's height 0.3 is along Blender's Z.
    assert info["bounds_z"] == pytest.approx([-0.15, 0.15], abs=1e-4)

    blend = export_blend(glb, tmp_path / "scene.blend", static_orbit(5))
    info = _bpy_inspect(blend)
    assert info["vertices"] == len(mesh.vertices) and "mv3d_material" in info["materials"]
    assert info["cameras"] == ["mv3d_camera"] and len(info["lights"]) >= 1 and info["frame_end"] == 5
    with pytest.raises(InputError, match=".blend"):
        export_blend(glb, tmp_path / "scene.txt")


@pytest.mark.blender
@pytest.mark.skipif(not HAS_BPY, reason="bpy (the blender extra) is not installed")
@pytest.mark.slow
def test_blend_from_obj_keeps_its_texture_when_the_obj_is_gone(tmp_path):
    (tmp_path / "mesh").mkdir()
    (tmp_path / "scene").mkdir()
    obj = export_mesh(textured_box(), tmp_path / "mesh" / "m.obj")
    blend = export_blend(obj, tmp_path / "scene" / "scene.blend", static_orbit(3))
    for f in (tmp_path / "mesh").iterdir():
        f.unlink()
    info = _bpy_inspect(blend)
    # The OBJ's PNG is packed into the .blend, not referenced by a path next to the mesh.
    assert len(info["packed"]) == 1 and any(size == [64, 64] for _, size in info["images"])


@pytest.mark.blender
@pytest.mark.skipif(not HAS_BPY, reason="bpy (the blender extra) is not installed")
@pytest.mark.slow
def test_blend_from_stl_and_off(tmp_path):
    # `mv3d export MESH` reads STL and OFF, but --blend refused them (glb, obj or ply only), after
    # --out had already been written.
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.3))
    for ext in ("stl", "off"):
        box.export(tmp_path / f"box.{ext}")
        blend = export_blend(tmp_path / f"box.{ext}", tmp_path / f"{ext}.blend", static_orbit(3))
        info = _bpy_inspect(blend)
        assert info["vertices"] >= 8 and info["bounds_z"] == pytest.approx([-0.15, 0.15], abs=1e-4)
        assert info["cameras"] == ["mv3d_camera"] and info["frame_end"] == 3
        # No colours: a plain material, not a colour node with nothing to read (it rendered black).
        assert info["colour_attributes"] == 0 and info["base_colour_from"] == []
        assert info["materials"] == ["mv3d_grey"]
    # An OBJ written +Y up (its height, 0.3, along y) stands upright with up_axis="y".
    trimesh.creation.box(extents=(0.8, 0.3, 0.5)).export(tmp_path / "y_up.obj")
    info = _bpy_inspect(
        export_blend(tmp_path / "y_up.obj", tmp_path / "y.blend", static_orbit(3), up_axis="y")
    )
    assert info["bounds_z"] == pytest.approx([-0.15, 0.15], abs=1e-4)


@pytest.mark.slow
def test_cli_export(tmp_path):
    glb = export_mesh(textured_box(), tmp_path / "m.glb")
    env = dict(os.environ, PYOPENGL_PLATFORM="egl", HF_HUB_OFFLINE="1")
    run = [sys.executable, "-m", "mv3d", "export"]
    proc = subprocess.run(
        run + [str(glb), "--out", str(tmp_path / "c.ply")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert len(trimesh.load(tmp_path / "c.ply").faces) == len(textured_box().faces)
    # --up-axis y: an OBJ written +Y up (height 0.3 along y) is converted into mv3d's +Z-up axes.
    trimesh.creation.box(extents=(0.8, 0.3, 0.5)).export(tmp_path / "y_up.obj")
    proc = subprocess.run(
        run + [str(tmp_path / "y_up.obj"), "--up-axis", "y", "--out", str(tmp_path / "z_up.ply")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert trimesh.load(tmp_path / "z_up.ply").extents == pytest.approx([0.8, 0.5, 0.3], abs=1e-6)
    proc = subprocess.run(
        run + [str(glb), "--up-axis", "x", "--out", "x.obj"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "--up-axis 'x': expected y or z" in proc.stderr
    proc = subprocess.run(run + [str(glb)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("mv3d: error: nothing to do")
    proc = subprocess.run(
        run + [str(tmp_path / "no.glb"), "--out", "x.obj"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
