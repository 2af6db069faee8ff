"""Shared fixtures: small meshes, third-party assets, offline environment.

Third-party assets: no mesh files ship with the installed packages here (trimesh's resources hold
none, pyrender's wheel has no models), so `third_party_meshes` asks Blender (the `bpy` module, not
this project) to write its built-in Suzanne with its own exporters: glTF 2 binary with a material,
OBJ + MTL (Blender's default axes: +Y up), binary STL, and binary PLY with vertex colours and mixed
triangle/quad faces. Those are files as real tools write them, with their quirks. Tests using it skip
when bpy is missing.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MESH = REPO / "examples" / "toy_house.glb"

#: Face colours of `colour_cube`, by the outward normal of the face.
CUBE_FACE_COLOURS = {
    (0, -1, 0): (255, 0, 0),  # -Y: red (seen at azimuth 0)
    (1, 0, 0): (0, 255, 0),  # +X: green (azimuth 90)
    (0, 1, 0): (0, 0, 255),  # +Y: blue (azimuth 180)
    (-1, 0, 0): (255, 255, 0),  # -X: yellow (azimuth 270)
    (0, 0, 1): (0, 255, 255),  # +Z: cyan (top)
    (0, 0, -1): (255, 0, 255),  # -Z: magenta (bottom)
}

_BLENDER_EXPORT = r"""
import sys, bpy
out = sys.argv[1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(0, 0, 0))
obj = bpy.context.active_object
mat = bpy.data.materials.new("suzanne_orange")
mat.use_nodes = True
mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.9, 0.4, 0.1, 1.0)
obj.data.materials.append(mat)
bpy.ops.export_scene.gltf(filepath=f"{out}/suzanne.glb", export_format="GLB")
bpy.ops.wm.obj_export(filepath=f"{out}/suzanne.obj")
bpy.ops.wm.stl_export(filepath=f"{out}/suzanne.stl")
attr = obj.data.color_attributes.new("Col", "BYTE_COLOR", "POINT")
for i, v in enumerate(obj.data.vertices):
    attr.data[i].color = ((v.co.x + 1) / 2, (v.co.y + 1) / 2, (v.co.z + 1) / 2, 1.0)
bpy.ops.wm.ply_export(filepath=f"{out}/suzanne.ply", export_colors="SRGB", ascii_format=False)
"""


def colour_cube_mesh():
    """A unit cube whose six faces have the six colours of `CUBE_FACE_COLOURS` (face colours)."""
    import trimesh

    from render.meshes import LoadedMesh, normalize_scene

    box = trimesh.creation.box()
    colours = [CUBE_FACE_COLOURS[tuple(int(round(c)) for c in n)] + (255,) for n in box.face_normals]
    box.visual = trimesh.visual.ColorVisuals(box, face_colors=np.array(colours, np.uint8))
    scene, s2w = normalize_scene(box, source="colour cube")
    return LoadedMesh(scene=scene, source_to_world=s2w, source="colour cube")


@pytest.fixture
def colour_cube():
    return colour_cube_mesh()


@pytest.fixture
def example_mesh() -> Path:
    assert EXAMPLE_MESH.is_file(), "examples/toy_house.glb is missing (python examples/make_example_mesh.py)"
    return EXAMPLE_MESH


def has_bpy() -> bool:
    return importlib.util.find_spec("bpy") is not None


@pytest.fixture(scope="session")
def third_party_meshes(tmp_path_factory) -> dict[str, Path]:
    """{"glb", "obj", "stl", "ply"} -> Blender-exported Suzanne files (see the module docstring)."""
    if not has_bpy():
        pytest.skip("bpy (the blender extra) is not installed: no third-party exporter to write assets")
    out = tmp_path_factory.mktemp("blender_assets")
    proc = subprocess.run(
        [sys.executable, "-c", _BLENDER_EXPORT, str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = {ext: out / f"suzanne.{ext}" for ext in ("glb", "obj", "stl", "ply")}
    for p in files.values():
        assert p.is_file() and p.stat().st_size > 0
    return files


@dataclass(frozen=True)
class CrashingSource:
    """An `ObjectSource` look-alike whose `load` kills its process (as a native crash would).

    Defined here so that spawned worker processes can unpickle it (they inherit sys.path).
    """

    object_id: str
    spec: str
    meta: dict = field(default_factory=dict, hash=False)

    def load(self):
        os._exit(13)


def png_claiming(width: int, height: int, pixel_data: bool = True) -> bytes:
    """A tiny PNG whose header claims `width` x `height` 8-bit RGB pixels (an image bomb: decoding it
    would allocate 3 x width x height bytes). `pixel_data`: a short IDAT chunk after the header; without
    it the file is the signature, IHDR and IEND alone (57 bytes)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64)) if pixel_data else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """`mv3d ARGS` in this process: (exit code, stdout, stderr)."""
    from mv3d.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random 3-view model folder (2 sampling steps by default) for generate's tests."""
    import torch

    from video_prior.components import build_components, model_info_from_config, save_components, tiny_config

    cfg = tiny_config(num_frames=3, sample_size=16)
    cfg["info"]["default_steps"] = 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        comps = build_components(cfg)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_components(comps, model_info_from_config(cfg), path)
    return path
