"""Mesh export (GLB, OBJ+MTL+PNG, PLY), Blender scenes, and turntable renders of a mesh.

* `export_mesh` writes what trimesh writes: GLB, or a one-file .gltf (in glTF's +Y-up axes) with a PBR
  base-colour texture (or vertex colours), OBJ with its MTL and PNG texture, PLY with vertex colours
  (textures are sampled to vertices). Every file is written atomically; for OBJ the texture and MTL go
  first, so an OBJ on disk is complete.
* `export_blend` builds a .blend (mesh, material with its texture packed in, a camera on the orbit,
  lights) with bpy in a subprocess of this interpreter: bpy keeps global state and must not share a
  process with pyrender.
* `turntable` renders the mesh around an orbit with the fast renderer (render/renderers) and writes a
  GIF or MP4 with imageio; `side_by_side` puts a generated orbit next to the mesh's turntable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from render.common import InputError, atomic_output, atomic_write_bytes, atomic_write_text
from render.images import on_background
from render.meshes import Y_UP_TO_Z_UP, map_vertex_colours

MESH_FORMATS = ("glb", "obj", "ply")


def mesh_format(path: Path, format: str | None = None) -> str:
    """The mesh format of `path` ("glb", "obj", "ply"), from `format` or the file suffix."""
    fmt = (format or Path(path).suffix.lstrip(".")).lower()
    if fmt == "gltf":
        fmt = "glb"
    if fmt not in MESH_FORMATS:
        # a scene or a video is not a mesh format, but it is what a user asking for one most likely wants
        hint = {"blend": "--blend", "gif": "--turntable", "mp4": "--turntable"}.get(fmt)
        where = f" (`mv3d export MESH {hint} {Path(path).name}` writes it)" if hint else ""
        raise InputError(
            f"{path}: mesh format '{fmt or '(no extension)'}': expected one of {', '.join(MESH_FORMATS)}{where}"
        )
    return fmt


def mesh_output_path(path: Path, format: str | None = None) -> Path:
    """The file `export_mesh` writes for `path` and `format`: `path`, or `path` with the format's
    suffix where its suffix names another format (`--out m.glb --format obj` writes m.obj)."""
    path = Path(path)
    fmt = mesh_format(path, format)
    if path.suffix.lower().lstrip(".") not in (fmt, "gltf" if fmt == "glb" else fmt):
        path = path.with_suffix("." + fmt)
    return path


def _refuse_folders(targets) -> None:
    """`InputError` for the first of the files `targets` that is a folder (mv3d never replaces one)."""
    for target in targets:
        if target.is_dir():
            raise InputError(
                f"{target}: is a folder: expected a file path (mv3d never replaces a folder by a file)"
            )


def check_mesh_output(path: Path, format: str | None = None) -> Path:
    """Refuse, before any work, a mesh output whose files known in advance (the mesh file and, for an
    OBJ, its MTL) would replace a folder; return the mesh file's path (`mesh_output_path`)."""
    main = mesh_output_path(path, format)
    _refuse_folders((main, main.with_suffix(".mtl")) if main.suffix.lower() == ".obj" else (main,))
    return main


def _companion_name(stem: str, name: str, taken: set[str]) -> str:
    """The name of an OBJ's texture file: the OBJ's stem, then trimesh's name for it made safe.

    trimesh names a texture after its material, and a mesh file names its materials: "../x", "a/b",
    300 characters or a name that another OBJ's stem starts with. Always prefixed (two meshes exported
    into one folder keep their own textures), reduced to letters, digits, "-" and "_", short enough
    for any file system, and unique within the OBJ.
    """
    import re

    suffix = Path(name).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        suffix = ".png"
    given = Path(name).suffix
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", name[: len(name) - len(given)] if given else name)
    base = base[: max(8, 200 - len(stem))] or "texture"
    new = f"{stem}_{base}{suffix}"
    i = 1
    while new.lower() in taken or new.lower() == f"{stem}.mtl".lower():
        new = f"{stem}_{base}_{i}{suffix}"
        i += 1
    taken.add(new.lower())
    return new


def _as_vertex_coloured(mesh):
    """A copy with vertex colours (textures sampled at the vertices' UVs), for PLY."""
    out = mesh.copy()
    if out.visual.kind == "texture":
        out.visual = out.visual.to_color()
    elif out.visual.kind == "face":
        out.visual.vertex_colors = out.visual.vertex_colors
    return out


def _with_white_base_colour(mesh):
    """`mesh`, or a copy whose textured PBR material without a base-colour factor gets a white one.

    glTF's missing factor means white, but trimesh turns it into an MTL `Kd 0.4`, and OBJ readers
    (trimesh and pyrender, three.js) multiply `map_Kd` by `Kd`: the texture would show at 40%.
    """
    from trimesh.visual.material import PBRMaterial

    material = getattr(mesh.visual, "material", None)
    if mesh.visual.kind != "texture" or not isinstance(material, PBRMaterial):
        return mesh
    if material.baseColorFactor is not None:
        return mesh
    out = mesh.copy()
    out.visual.material = material.copy()
    out.visual.material.baseColorFactor = [255, 255, 255, 255]
    return out


def export_mesh(mesh, path: str | Path, format: str | None = None, y_up: bool = False) -> Path:
    """Write `mesh` (trimesh.Trimesh) to `path`; returns the path of the main file.

    Args:
        format: "glb", "obj" or "ply"; None takes it from the suffix. A path whose suffix does not
            match the format gets the format's suffix.
        y_up: the mesh is already +Y up (the source coordinates of a +Y-up file, such as a glTF):
            GLB stores it as it is. False: it is in mv3d's +Z-up world, which GLB turns +Y up.
    """
    import trimesh

    path = check_mesh_output(Path(path), format)
    fmt = mesh_format(path, format)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: refusing to write an empty mesh")
    if fmt == "glb":
        # glTF is +Y up; mv3d's world is +Z up. Store the spec's axes so that Blender, viewers and
        # render.meshes.load_mesh (which reads glTF as +Y up) all see the object upright.
        from trimesh.visual.color import srgb_to_linear

        gltf_axes = mesh.copy()
        if gltf_axes.visual.kind in ("vertex", "face"):
            # glTF's COLOR_0 is linear (the specification's "linear multiplier"): Blender and three.js
            # decode it so, and sRGB values (the views', PLY's) stored as they are show washed out;
            # render.meshes.read_trimesh undoes this
            map_vertex_colours(gltf_axes, srgb_to_linear)
        if not y_up:
            gltf_axes.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))
        scene = trimesh.Scene(gltf_axes)
        if path.suffix.lower() == ".gltf":
            # A .gltf is JSON (here one file, its buffers and texture embedded as data URIs), not a GLB.
            files = trimesh.exchange.gltf.export_gltf(scene, include_normals=True, embed_buffers=True)
            data = files["model.gltf"]
        else:
            data = trimesh.exchange.gltf.export_glb(scene, include_normals=True)
        atomic_write_bytes(path, data)
    elif fmt == "ply":
        atomic_write_bytes(
            path, trimesh.exchange.ply.export_ply(_as_vertex_coloured(mesh), encoding="binary")
        )
    else:
        stem = path.stem
        text, files = trimesh.exchange.obj.export_obj(
            _with_white_base_colour(mesh),
            include_texture=True,
            return_texture=True,
            mtl_name=f"{stem}.mtl",
            include_normals=True,
        )
        # trimesh names the texture after the material, which a mesh file sets: the files are named
        # here instead, next to the OBJ and prefixed with its stem (_companion_name).
        mtl_name = f"{stem}.mtl"
        taken: set[str] = set()
        renamed = {name: _companion_name(stem, name, taken) for name in files if name != mtl_name}
        # the texture names are known only now: all checked before any is written, no half-written OBJ
        _refuse_folders(path.with_name(n) for n in (*renamed.values(), mtl_name))
        for name, new in renamed.items():
            atomic_write_bytes(path.with_name(new), files[name])
        if mtl_name in files:
            lines = []
            for line in files[mtl_name].decode("utf-8").splitlines():
                # texture statements ("map_Kd NAME"): the whole argument is one of trimesh's names
                key, _, arg = line.partition(" ")
                is_map = key.lower().startswith("map_") or key.lower() in ("bump", "disp", "decal", "norm")
                lines.append(f"{key} {renamed[arg]}" if is_map and arg in renamed else line)
            atomic_write_text(path.with_name(mtl_name), "\n".join(lines) + "\n")
        atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------------------------------
# Blender
# --------------------------------------------------------------------------------------------------

_BLEND_SCRIPT = r"""
import json, math, sys
import bpy
from mathutils import Matrix, Vector

args = json.loads(sys.argv[-1])
bpy.ops.wm.read_factory_settings(use_empty=True)
src = args["mesh"]
ext = src.rsplit(".", 1)[-1].lower()
before = set(bpy.data.objects)
if ext in ("glb", "gltf"):
    bpy.ops.import_scene.gltf(filepath=src)
elif ext == "obj":
    bpy.ops.wm.obj_import(filepath=src, forward_axis="Y", up_axis="Z")
elif ext == "ply":
    bpy.ops.wm.ply_import(filepath=src, forward_axis="Y", up_axis="Z")
else:
    raise SystemExit("unsupported mesh format " + ext)
meshes = [o for o in bpy.data.objects if o not in before and o.type == "MESH"]
if not meshes:
    raise SystemExit("no mesh was imported from " + src)
for obj in meshes:
    if not obj.data.materials:
        # PLY: vertex colours only; a material that shows them. A mesh without colours (STL, OFF,
        # --texture none) gets a plain grey one: a colour node with no attribute to read renders black.
        coloured = bool(obj.data.color_attributes)
        mat = bpy.data.materials.new("mv3d_vertex_colour" if coloured else "mv3d_grey")
        mat.use_nodes = True
        if coloured:
            nodes = mat.node_tree.nodes
            bsdf = nodes.get("Principled BSDF")
            attr = nodes.new("ShaderNodeVertexColor")
            attr.layer_name = obj.data.color_attributes[0].name
            mat.node_tree.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
        obj.data.materials.append(mat)
scene = bpy.context.scene
cam_data = bpy.data.cameras.new("mv3d_camera")
cam_data.sensor_fit = "HORIZONTAL"
cam_data.angle = math.radians(args["fov_deg"])
cam = bpy.data.objects.new("mv3d_camera", cam_data)
scene.collection.objects.link(cam)
scene.camera = cam
# mv3d cameras are OpenGL camera-to-world with +Z up: Blender's own convention, used as is.
for i, c2w in enumerate(args["cameras"]):
    cam.matrix_world = Matrix(c2w)
    cam.keyframe_insert("location", frame=i + 1)
    cam.keyframe_insert("rotation_euler", frame=i + 1)
cam.matrix_world = Matrix(args["cameras"][0])
scene.frame_start, scene.frame_end = 1, len(args["cameras"])
scene.frame_set(1)
for name, direction, energy in args["lights"]:
    light = bpy.data.lights.new(name, type="SUN")
    light.energy = energy
    obj = bpy.data.objects.new(name, light)
    # A sun shines down its local -Z: point local +Z against the travel direction.
    obj.rotation_euler = Vector([-v for v in direction]).to_track_quat("Z", "Y").to_euler()
    scene.collection.objects.link(obj)
scene.render.resolution_x = scene.render.resolution_y = args["resolution"]
# Textures into the file (an OBJ's PNG is otherwise a path next to the mesh): the .blend stands alone.
bpy.ops.file.pack_all()
bpy.ops.wm.save_as_mainfile(filepath=args["out"], compress=True)
print("MV3D_BLEND_OK", sum(len(o.data.vertices) for o in meshes))
"""


def export_blend(
    mesh_path: str | Path,
    out_blend: str | Path,
    orbit=None,
    resolution: int = 512,
    up_axis: str | None = None,
) -> Path:
    """Write a .blend with the mesh at `mesh_path`, its material, a camera on `orbit`, and lights.

    `mesh_path` is any mesh file mv3d reads (GLB/glTF, OBJ, PLY, STL, OFF), +Y up for glTF and +Z up
    for the others unless `up_axis` ("y" or "z") says otherwise.
    The camera is keyframed along the orbit (frame i + 1 is view i); default orbit: 21 views at 10
    degrees elevation, the default framing. Needs bpy (`pip install 'mv3d[blender]'`).
    """
    from render.cameras import static_orbit
    from render.common import optional_import
    from render.renderers import light_setup

    optional_import("bpy", "blender", "writing .blend files")
    mesh_path = Path(mesh_path).resolve()
    out_blend = Path(out_blend)
    if not mesh_path.is_file():
        raise InputError(f"{mesh_path}: mesh file does not exist")
    if out_blend.suffix.lower() != ".blend":
        raise InputError(f"{out_blend}: expected a path ending in .blend")
    orbit = orbit or static_orbit(21)
    lights = [
        (f"mv3d_light_{i}", lt["direction"], 3.0 * lt["intensity"]) for i, lt in enumerate(light_setup(None))
    ]
    with atomic_output(out_blend) as tmp, tempfile.TemporaryDirectory(prefix="mv3d-blend-") as work:
        tmp_blend = tmp.with_name(tmp.name + ".blend")
        source = mesh_path
        if up_axis is not None or mesh_path.suffix.lower() not in (".glb", ".gltf", ".obj", ".ply"):
            # STL, OFF (the other formats mv3d reads) and a file whose up axis is not its format's:
            # Blender's script imports GLB, OBJ and PLY in their formats' axes, so these go through a
            # GLB of the mesh in mv3d's axes.
            from render.meshes import read_trimesh

            source = export_mesh(read_trimesh(mesh_path, up_axis=up_axis), Path(work) / "mesh.glb")
        args = {
            "mesh": str(source),
            "out": str(tmp_blend),
            "fov_deg": float(orbit.fov_deg),
            "cameras": orbit.camera_to_world().tolist(),
            "lights": lights,
            "resolution": int(resolution),
        }
        proc = subprocess.run(
            [sys.executable, "-c", _BLEND_SCRIPT, json.dumps(args)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or "MV3D_BLEND_OK" not in proc.stdout or not tmp_blend.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InputError(f"{mesh_path}: Blender could not build {out_blend.name}: {tail[0]}")
        tmp_blend.replace(tmp)
    return out_blend


# --------------------------------------------------------------------------------------------------
# Turntables
# --------------------------------------------------------------------------------------------------


def render_turntable(
    mesh, num_frames: int = 36, resolution: int = 256, elevation: float = 10.0
) -> np.ndarray:
    """(num_frames, H, W, 4) uint8 RGBA views of `mesh` (trimesh, world frame) around a static orbit."""
    import trimesh

    from render.cameras import static_orbit
    from render.meshes import LoadedMesh
    from render.renderers import get_renderer

    if num_frames < 1:
        raise InputError(f"turntable frame count {num_frames}: expected at least 1")
    scene = mesh if isinstance(mesh, trimesh.Scene) else trimesh.Scene(mesh)
    loaded = LoadedMesh(scene=scene, source_to_world=np.eye(4), source="reconstruction")
    orbit = static_orbit(int(num_frames), elevation_deg=float(elevation))
    with get_renderer("fast") as renderer:
        return renderer.render(loaded, orbit, int(resolution)).rgba


def write_animation(frames: np.ndarray, out_path: str | Path, fps: float = 12.0) -> Path:
    """Write (T, H, W, 3) uint8 frames as a looping GIF or an MP4, atomically."""
    import imageio.v3 as iio

    out_path = Path(out_path)
    ext = out_path.suffix.lower()
    if ext not in (".gif", ".mp4"):
        raise InputError(f"{out_path}: animation format '{ext or '(none)'}': expected .gif or .mp4")
    with atomic_output(out_path) as tmp:
        tmp_file = tmp.with_name(tmp.name + ext)
        if ext == ".gif":
            iio.imwrite(tmp_file, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            iio.imwrite(tmp_file, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
        tmp_file.replace(tmp)
    return out_path


def turntable(
    mesh,
    out_path: str | Path,
    num_frames: int = 36,
    resolution: int = 256,
    elevation: float = 10.0,
    fps: float = 12.0,
) -> Path:
    """Render `mesh` around a turntable orbit and write it as a GIF or MP4 (white background)."""
    rgba = render_turntable(mesh, num_frames, resolution, elevation)
    return write_animation(on_background(rgba), out_path, fps)


def side_by_side(
    views_rgba: np.ndarray, mesh_frames: np.ndarray, out_path: str | Path | None = None, fps: float = 6.0
) -> np.ndarray:
    """Generated orbit views (N, H, W, 4) next to mesh turntable frames (N, H', W', 4), one frame per view.

    Both are composited on white and resized to the views' height; returns (N, H, W + W'', 3) uint8
    and writes a GIF/MP4 when `out_path` is given.
    """
    from PIL import Image

    views_rgba = np.asarray(views_rgba)
    mesh_frames = np.asarray(mesh_frames)
    if len(views_rgba) != len(mesh_frames):
        raise InputError(
            f"side by side: {len(views_rgba)} views but {len(mesh_frames)} mesh frames: expected as many of each"
        )
    left = on_background(views_rgba) if views_rgba.shape[-1] == 4 else views_rgba
    right = on_background(mesh_frames) if mesh_frames.shape[-1] == 4 else mesh_frames
    h = left.shape[1]
    if right.shape[1] != h:
        w = round(right.shape[2] * h / right.shape[1])
        right = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.LANCZOS)) for f in right])
    frames = np.concatenate([left, right], axis=2)
    if out_path is not None:
        write_animation(frames, out_path, fps)
    return frames
