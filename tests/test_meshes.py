"""render.meshes: formats, normalisation and its recorded transform, up axis, malformed input."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest
import trimesh
from conftest import png_claiming

from render.common import InputError
from render.meshes import Y_UP_TO_Z_UP, load_mesh, normalize_scene, world_geometry


def _world_vertices(mesh) -> np.ndarray:
    pts = []
    for _, geom, transform in world_geometry(mesh):
        v = np.asarray(geom.vertices, dtype=np.float64)
        pts.append(v @ transform[:3, :3].T + transform[:3, 3])
    return np.concatenate(pts)


def _offset_box():
    box = trimesh.creation.box(extents=[2.0, 1.0, 0.5])
    box.apply_translation([5.0, -3.0, 7.0])
    box.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(box.vertices), 1)).astype(np.uint8)
    return box


@pytest.mark.parametrize("ext", ["obj", "ply", "stl", "off", "glb", "gltf"])
def test_formats_normalise_to_unit_cube_and_record_transform(tmp_path, ext):
    box = _offset_box()
    path = tmp_path / f"box.{ext}"
    if ext == "gltf":
        files = trimesh.Scene(box).export(file_type="gltf")
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        (tmp_path / "model.gltf").rename(path)
    else:
        box.export(path)
    mesh = load_mesh(path)
    lo, hi = mesh.world_bounds()
    assert np.max(hi - lo) == pytest.approx(1.0)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert mesh.num_faces == 12
    # source_to_world maps the file's own coordinates onto the loaded world geometry.
    src = np.asarray(box.vertices)
    mapped = src @ mesh.source_to_world[:3, :3].T + mesh.source_to_world[:3, 3]
    world = _world_vertices(mesh)
    dist = np.min(np.linalg.norm(mapped[:, None] - world[None], axis=-1), axis=1)
    assert dist.max() < 1e-6
    if ext in ("glb", "gltf"):
        # glTF is +Y up: the box's 0.5-high axis (file z) becomes world -y, its 1.0 axis (file y) world z.
        np.testing.assert_allclose(hi - lo, [1.0, 0.25, 0.5], atol=1e-9)
    else:
        np.testing.assert_allclose(hi - lo, [1.0, 0.5, 0.25], atol=1e-9)
    if ext in ("ply", "glb", "gltf", "obj"):
        assert mesh.has_color()


def test_up_axis_override_and_nothing_rescaled_silently(tmp_path):
    box = _offset_box()
    path = tmp_path / "box.obj"
    box.export(path)
    mesh = load_mesh(path, up_axis="y")
    np.testing.assert_allclose(mesh.source_to_world[:3, :3] * 2.0, Y_UP_TO_Z_UP[:3, :3], atol=1e-12)
    # The source geometry itself is untouched: only the scene graph carries the normalisation.
    geom = next(iter(mesh.scene.geometry.values()))
    assert np.abs(np.asarray(geom.vertices)).max() > 5.0
    with pytest.raises(InputError, match="up axis"):
        load_mesh(path, up_axis="x")


def test_upright_copy_of_a_y_up_obj_loads_as_the_original_read_y_up(tmp_path):
    """recipes/default_model/third_party.py turns +Y-up OBJ files upright by rewriting `v`/`vn` lines: the copy, read
    +Z up, must land in the world exactly where the original lands when read with `up_axis="y"`."""
    from recipes.default_model.third_party import y_up_obj_to_z_up

    box = _offset_box()
    box.apply_transform(trimesh.transformations.rotation_matrix(0.4, [1.0, 2.0, 3.0]))  # no symmetry left
    original = tmp_path / "box.obj"
    box.export(original)
    text = original.read_text().replace("\n", "\r\n")  # line endings are kept as they are
    upright = tmp_path / "box_upright.obj"
    upright.write_bytes(y_up_obj_to_z_up(text).encode())
    assert upright.read_bytes().count(b"\r\n") == text.count("\r\n")
    np.testing.assert_allclose(
        _world_vertices(load_mesh(upright)), _world_vertices(load_mesh(original, up_axis="y")), atol=1e-9
    )
    assert y_up_obj_to_z_up("v 1 2 -3 0.5 0.5 0.5\nvn 0 1 0\nvt 0.25 0.75\nf 1 2 3\n") == (
        "v 1 3 2 0.5 0.5 0.5\nvn 0 -0 1\nvt 0.25 0.75\nf 1 2 3\n"
    )


def test_normalize_scene_in_memory():
    sphere = trimesh.creation.icosphere(radius=3.0)
    sphere.apply_translation([1.0, 2.0, 3.0])
    scene, s2w = normalize_scene(sphere)
    np.testing.assert_allclose(scene.bounds, [[-0.5] * 3, [0.5] * 3], atol=1e-9)
    np.testing.assert_allclose(s2w @ np.array([1.0, 2.0, 3.0, 1.0]), [0, 0, 0, 1], atol=1e-9)
    assert sphere.bounds[0, 0] == pytest.approx(-2.0)  # the input is not modified


def test_example_mesh_keeps_texture_and_vertex_colours(example_mesh):
    mesh = load_mesh(example_mesh)
    kinds = {name: getattr(g.visual, "kind", None) for name, g in mesh.scene.geometry.items()}
    assert kinds["body"] == "texture"
    assert mesh.scene.geometry["body"].visual.material.baseColorTexture is not None
    assert kinds["roof"] == "vertex"
    lo, hi = mesh.world_bounds()
    assert np.max(hi - lo) == pytest.approx(1.0)
    assert hi[2] - lo[2] < hi[0] - lo[0]  # upright: the house is wider than tall


def test_third_party_blender_exports_load(third_party_meshes):
    """Suzanne as Blender writes it: GLB (+Y up), OBJ (+Y up), STL, PLY with mixed tris/quads."""
    for ext, path in third_party_meshes.items():
        mesh = load_mesh(path, up_axis="y" if ext == "obj" else None)
        assert mesh.num_faces == 968, ext  # 500 faces, quads triangulated
        lo, hi = mesh.world_bounds()
        assert np.max(hi - lo) == pytest.approx(1.0)
        # Suzanne is 2 wide (x), ~1.4 tall (z) and ~1.2 deep (y) in Blender's +Z-up frame.
        assert hi[2] - lo[2] > hi[1] - lo[1], ext
        assert mesh.has_color() == (ext != "stl"), ext


# ------------------------------------------------------------------------------------------------
# Malformed input: one InputError line naming the file and the reason, no big allocation.
# ------------------------------------------------------------------------------------------------


def _ply_header(n_vertex: int, n_face: int, fmt: str = "binary_little_endian") -> bytes:
    return (
        f"ply\nformat {fmt} 1.0\nelement vertex {n_vertex}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {n_face}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode()


def _glb(doc: dict, version: int = 2, bin_chunk: bytes = b"") -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js
    if bin_chunk:
        body += struct.pack("<II", len(bin_chunk), 0x004E4942) + bin_chunk
    return b"glTF" + struct.pack("<II", version, 12 + len(body)) + body


MALFORMED = {
    "empty.obj": (b"", "empty"),
    "indices.obj": (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "out of range|outside"),
    "nan.obj": (b"v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN or infinite"),
    "inf.off": (b"OFF\n3 1 0\n0 0 inf\n1 0 0\n0 1 0\n3 0 1 2\n", "NaN or infinite"),
    "indices.ply": (
        _ply_header(3, 1, "ascii") + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
        "out of range|outside",
    ),
    "billions.ply": (_ply_header(3_000_000_000, 1) + b"\0" * 64, "claims"),
    "huge.ply": (_ply_header(50_000_000, 10) + b"\0" * 64, "claims"),
    "billions.off": (b"OFF\n2000000000 2000000000 0\n0 0 0\n", "claims"),
    "truncated.stl": (b"\0" * 80 + struct.pack("<I", 1_000_000_000) + b"\0" * 100, "claims"),
    "pointcloud.ply": (
        _ply_header(3, 0, "ascii").replace(b"element face 0\nproperty list uchar int vertex_indices\n", b"")
        + b"0 0 0\n1 0 0\n0 1 0\n",
        "point cloud",
    ),
    "v1.glb": (_glb({"asset": {"version": "1.0"}}, version=1), "glTF version 1|only glTF 2"),
    "v1.gltf": (json.dumps({"asset": {"version": "1.0"}, "meshes": {}}).encode(), "only glTF 2"),
    "nover.gltf": (json.dumps({"meshes": {}, "accessors": {}}).encode(), "only glTF 2"),
    "accessor.glb": (
        _glb(
            {
                "asset": {"version": "2.0"},
                "buffers": [{"byteLength": 36}],
                "bufferViews": [{"buffer": 0, "byteLength": 36}],
                "accessors": [{"bufferView": 0, "componentType": 5126, "type": "VEC3", "count": 150_000_000}],
            },
            bin_chunk=b"\0" * 36,
        ),
        "accessor 0 claims",
    ),
    "garbage.glb": (b"not a gltf at all", "magic"),
    "garbage.stl": (b"\x01\x02\x03" * 10, "STL"),
    "model.fbx": (b"Kaydara FBX Binary", "unsupported mesh format"),
    "lines.obj": (b"v 0 0 0\nv 1 0 0\nl 1 2\n", "no triangle faces|no geometry|contains no"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_meshes_raise_one_clear_line(tmp_path, name):
    data, pattern = MALFORMED[name]
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=pattern) as info:
            load_mesh(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "\n" not in msg and name in msg
    assert peak < 64 * 2**20, f"{name}: {peak / 2**20:.0f} MiB allocated while rejecting"


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_mesh(tmp_path / "nope.obj")
    (tmp_path / "dir.obj").mkdir()
    with pytest.raises(InputError, match="not a file"):
        load_mesh(tmp_path / "dir.obj")


def test_texture_bombs_are_refused_from_their_headers(tmp_path):
    """An OBJ whose texture claims 13000^2 pixels (169 MP; the issue's GLB with six such reached
    8.8 GB): one line before anything is decoded; a textured box within the budget still loads."""
    import trimesh
    from PIL import Image

    box = trimesh.creation.box()
    box.visual = trimesh.visual.TextureVisuals(
        uv=np.random.default_rng(0).random((len(box.vertices), 2)),
        image=Image.new("RGB", (8, 8), (200, 10, 10)),
    )
    folder = tmp_path / "obj"
    folder.mkdir()
    box.export(folder / "box.obj")
    textures = [p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg")]
    assert textures, list(folder.iterdir())
    assert load_mesh(folder / "box.obj").has_color
    textures[0].write_bytes(png_claiming(13000, 13000))
    with pytest.raises(InputError, match="13000x13000 pixels"):
        load_mesh(folder / "box.obj")


def test_files_an_obj_names_but_cannot_be_read_are_listed_not_read(tmp_path):
    """A texture outside the mesh's folder is never read (trimesh's file resolver keeps to the folder),
    and, like a missing one, is listed in `unread_files` instead of being dropped without a word."""
    from PIL import Image

    Image.new("RGB", (4, 4), (0, 255, 0)).save(tmp_path / "secret.png")
    folder = tmp_path / "obj"
    folder.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(folder / "red.png")
    tri = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3\n"
    for name, texture in (("inside", "red.png"), ("outside", "../secret.png"), ("gone", "nothere.png")):
        (folder / f"{name}.mtl").write_text(f"newmtl m\nKd 1 1 1\nmap_Kd {texture}\n")
        (folder / f"{name}.obj").write_text(f"mtllib {name}.mtl\n{tri}")
    (folder / "nomtl.obj").write_text(f"mtllib absent.mtl\n{tri}")

    def image(mesh):
        return next(iter(mesh.scene.geometry.values())).visual.material.image

    inside = load_mesh(folder / "inside.obj")
    assert inside.unread_files == () and image(inside).getpixel((0, 0)) == (255, 0, 0)
    outside = load_mesh(folder / "outside.obj")
    assert outside.unread_files == ("../secret.png",) and image(outside) is None
    assert load_mesh(folder / "gone.obj").unread_files == ("nothere.png",)
    assert load_mesh(folder / "nomtl.obj").unread_files == ("absent.mtl",)
    # a stretched copy (render-dataset's --shape-augment) is still drawn without them, and says so
    from render.meshes import stretched

    assert stretched(load_mesh(folder / "gone.obj"), [1.0, 2.0, 0.5]).unread_files == ("nothere.png",)
