"""Blender (Cycles) renderer, for photoreal datasets: bpy in a worker process.

bpy keeps global state (one scene per process) and can crash the interpreter on bad input, so every
`render_cameras` call runs Blender in a child process of the same Python (`sys.executable -m
render.renderers.blender JOB.json`): the parent never imports bpy, a crash becomes an error message,
and parallel jobs do not share Blender state.

The parent writes the normalised scene as a GLB (converted to glTF's +Y up, which Blender's importer
turns back into +Z up: the world frame is unchanged) and a JSON job with the cameras; the worker
imports it, adds the same world-fixed lights as the fast renderer (`light_setup`) plus a uniform grey
world (no sky texture or HDRI file needed), places one Blender camera per view at exactly the OpenGL
camera-to-world (Blender cameras also look down -Z with +Y up), sets the lens from the intrinsics
(sensor fit horizontal, principal point as lens shift), renders with Cycles on the CPU with a
transparent film, and writes RGBA PNGs the parent reads back.

Depth and normals are geometric, not photometric: they are rasterised by the fast renderer for the
same cameras (identical geometry and cameras give identical maps), which avoids EXR passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from render.cameras import Intrinsics
from render.common import InputError, check_range
from render.meshes import Y_UP_TO_Z_UP, LoadedMesh
from render.renderers import MAX_METALLIC, Renderer, RenderResult, light_setup

#: Grey given to geometry without a material, as in the fast renderer.
DEFAULT_GREY = (0.8, 0.8, 0.8)
#: Cycles samples per pixel at most (a dataset view needs tens; 10**6 ran for days a view).
MAX_SAMPLES = 65536
#: HDRIs that ship inside bpy (Blender's studio lights, CC0): usable offline as `world="hdri:NAME"`.
BUNDLED_HDRIS = ("city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")


class BlenderRenderer(Renderer):
    """Cycles (CPU) through bpy in a worker process.

    Args:
        samples: Cycles samples per pixel (few by default: datasets want many views fast).
        world_strength: strength of the uniform grey world light.
        sun_strength: strength of the key light (the others are scaled as in `light_setup`).
        denoise: run Blender's denoiser (OpenImageDenoise) if available.
        timeout_s: seconds the worker may run per call before it is killed.
        threads: CPU threads for Cycles (0: Blender's default, all cores).
        world: the environment light: "uniform" (a grey world), "sky" (Blender's procedural sky
            texture), "hdri:NAME" with NAME one of `BUNDLED_HDRIS` (shipped with bpy), or
            "hdri:/path/to/file.exr|.hdr". With a light seed the sky/HDRI is rotated about +Z at random.
        max_metallic: cap on material metallic factors, as in the fast renderer (`MAX_METALLIC`).
    """

    name = "blender"

    def __init__(
        self,
        samples: int = 16,
        world_strength: float = 0.4,
        sun_strength: float = 2.0,
        denoise: bool = False,
        timeout_s: float = 600.0,
        threads: int = 0,
        world: str = "uniform",
        max_metallic: float = MAX_METALLIC,
    ) -> None:
        check_range("blender samples", int(samples), 1, MAX_SAMPLES, "samples per pixel")
        if world not in ("uniform", "sky") and not world.startswith("hdri:"):
            raise InputError(f"blender world {world!r}: expected uniform, sky, or hdri:NAME|PATH")
        if world.startswith("hdri:"):
            name = world[5:]
            if name not in BUNDLED_HDRIS and not Path(name).is_file():
                raise InputError(
                    f"blender world {world!r}: expected hdri:NAME with NAME one of {', '.join(BUNDLED_HDRIS)}, "
                    "or hdri:PATH to an existing .exr/.hdr file"
                )
        self.world = world
        self.samples = int(samples)
        self.world_strength = float(world_strength)
        self.sun_strength = float(sun_strength)
        self.denoise = bool(denoise)
        self.timeout_s = float(timeout_s)
        self.threads = int(threads)
        self.max_metallic = float(max_metallic)

    def settings(self) -> dict[str, Any]:
        return {
            "engine": "cycles-cpu",
            "samples": self.samples,
            "world_strength": self.world_strength,
            "sun_strength": self.sun_strength,
            "denoise": self.denoise,
            "max_metallic": self.max_metallic,
            "vertex_colours": "sRGB (made linear for shading; until 2026-12-05 read as linear)",
            "view_transform": "Standard",
            "world": self.world,
            "lights": "world-fixed sun lamps (render.renderers.light_setup) + the world light",
        }

    def render_cameras(
        self,
        mesh: LoadedMesh,
        camera_to_world: np.ndarray,
        intrinsics: Intrinsics,
        *,
        depth: bool = False,
        normals: bool = False,
        light_seed: int | None = None,
    ) -> RenderResult:
        from render.images import load_rgba

        c2w = np.asarray(camera_to_world, dtype=np.float64).reshape(-1, 4, 4)
        with tempfile.TemporaryDirectory(prefix="mv3d-blender-") as tmp:
            tmp = Path(tmp)
            scene = mesh.scene.copy()
            for name, geom in list(scene.geometry.items()):
                if getattr(geom.visual, "kind", None) == "face":
                    # glTF stores colours per vertex: give every face its own vertices first, or
                    # shared corners would blend the colours of neighbouring faces.
                    flat = geom.copy()
                    flat.unmerge_vertices()
                    scene.geometry[name] = flat
            # glTF is +Y up; Blender's importer maps it back to +Z up, i.e. to our world frame.
            scene.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))
            scene.export(str(tmp / "scene.glb"), file_type="glb")
            job = {
                "scene": str(tmp / "scene.glb"),
                "out_dir": str(tmp / "views"),
                "cameras": c2w.tolist(),
                "intrinsics": [intrinsics.fl_x, intrinsics.fl_y, intrinsics.cx, intrinsics.cy],
                "width": int(intrinsics.width),
                "height": int(intrinsics.height),
                "samples": self.samples,
                "denoise": self.denoise,
                "threads": self.threads,
                "world_strength": self.world_strength,
                "sun_strength": self.sun_strength,
                "lights": light_setup(light_seed),
                "world": self.world,
                "world_rotation_deg": 0.0
                if light_seed is None
                else float(np.random.default_rng(light_seed).uniform(0, 360)),
                "default_grey": list(DEFAULT_GREY),
                "max_metallic": self.max_metallic,
            }
            (tmp / "job.json").write_text(json.dumps(job))
            env = dict(os.environ)
            env.setdefault("PYTHONUNBUFFERED", "1")
            cmd = [sys.executable, "-m", "render.renderers.blender", str(tmp / "job.json")]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, env=env)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"Blender worker exceeded {self.timeout_s:.0f} s for {mesh.source}"
                ) from exc
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
                if any("No module named 'bpy'" in line for line in tail):
                    raise InputError(
                        "the Blender renderer needs bpy; install it with: pip install 'mv3d[blender]'"
                    )
                raise RuntimeError(
                    f"Blender worker failed (exit {proc.returncode}) for {mesh.source}: " + " | ".join(tail)
                )
            rgba = np.stack([load_rgba(tmp / "views" / f"{i:03d}.png") for i in range(len(c2w))])
        result = RenderResult(rgba=rgba)
        if depth or normals:
            from render.renderers.fast import FastRenderer

            with FastRenderer() as fast:
                geo = fast.render_cameras(mesh, c2w, intrinsics, depth=depth, normals=normals)
            result.depth, result.normals = geo.depth, geo.normals
        return result


# ------------------------------------------------------------------------------------------------
# The worker: runs in the child process only.
# ------------------------------------------------------------------------------------------------


def _cap_metallic(material, cap: float) -> None:  # pragma: no cover - runs in a subprocess
    """Cap the Principled BSDF's metallic input of a Blender material at `cap` (`MAX_METALLIC`)."""
    if not material.use_nodes or material.node_tree is None:
        return
    tree = material.node_tree
    for node in list(tree.nodes):
        if node.type != "BSDF_PRINCIPLED":
            continue
        metallic = node.inputs["Metallic"]
        if not metallic.is_linked:
            metallic.default_value = min(float(metallic.default_value), cap)
            continue
        # A metallic texture: clamp what it feeds in with a MINIMUM node.
        link = metallic.links[0]
        clamp = tree.nodes.new("ShaderNodeMath")
        clamp.operation = "MINIMUM"
        clamp.inputs[1].default_value = cap
        tree.links.new(link.from_socket, clamp.inputs[0])
        tree.links.new(clamp.outputs[0], metallic)


def _worker(job_path: str) -> None:  # pragma: no cover - runs in a subprocess
    import bpy
    from mathutils import Matrix

    job = json.loads(Path(job_path).read_text())
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=job["scene"], loglevel=50)
    scene = bpy.context.scene

    grey = bpy.data.materials.new("mv3d_default_grey")
    grey.use_nodes = True
    bsdf = grey.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*job["default_grey"], 1.0)
        bsdf.inputs["Roughness"].default_value = 0.8
    for material in bpy.data.materials:
        _cap_metallic(material, job["max_metallic"])
    for obj in scene.objects:
        if obj.type != "MESH":
            continue
        if not any(m is not None for m in obj.data.materials):
            obj.data.materials.clear()
            obj.data.materials.append(grey)
        # The scene's vertex colours are sRGB (render.meshes.LoadedMesh) and went into the GLB as they
        # are; the importer reads COLOR_0 as linear. Read them back as the sRGB they are.
        for attr in obj.data.color_attributes:
            values = np.empty(len(attr.data) * 4, dtype=np.float32)
            attr.data.foreach_get("color", values)
            attr.data.foreach_set("color_srgb", values)

    world = bpy.data.worlds.new("mv3d_world")
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    bg = nodes.get("Background")
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = job["world_strength"]
    kind = job["world"]
    if kind != "uniform":
        if kind == "sky":
            tex = nodes.new("ShaderNodeTexSky")
            # The sun disc alone is thousands of times brighter than the sky: it would blow out the
            # sunlit side with few samples. The sky's own light (and the sun lamps) remain.
            tex.sun_disc = False
        else:
            name = kind[5:]
            hdri_dir = Path(bpy.utils.system_resource("DATAFILES", path="studiolights/world"))
            path = hdri_dir / f"{name}.exr" if "/" not in name and "." not in name else Path(name)
            tex = nodes.new("ShaderNodeTexEnvironment")
            tex.image = bpy.data.images.load(str(path), check_existing=True)
        rotation = float(np.deg2rad(job["world_rotation_deg"]))
        if "Vector" in tex.inputs:  # environment image: rotate its lookup direction
            coords = nodes.new("ShaderNodeTexCoord")
            mapping = nodes.new("ShaderNodeMapping")
            mapping.inputs["Rotation"].default_value[2] = rotation
            links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
            links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
        elif hasattr(tex, "sun_rotation"):  # procedural sky: turn the sun instead
            tex.sun_rotation = rotation
        links.new(tex.outputs["Color"], bg.inputs["Color"])
    scene.world = world

    for i, light in enumerate(job["lights"]):
        data = bpy.data.lights.new(f"mv3d_sun_{i}", type="SUN")
        data.energy = job["sun_strength"] * light["intensity"]
        data.color = light["color"]
        obj = bpy.data.objects.new(f"mv3d_sun_{i}", data)
        scene.collection.objects.link(obj)
        # A sun shines down its local -Z: point -Z along the light direction.
        z = -np.asarray(light["direction"], dtype=np.float64)
        helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2] = x, y, z
        obj.matrix_world = Matrix(m.tolist())

    w, h = job["width"], job["height"]
    fl_x, fl_y, cx, cy = job["intrinsics"]
    cam_data = bpy.data.cameras.new("mv3d_camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = fl_x * cam_data.sensor_width / w
    # Lens shift is in units of the larger image side; +x moves the frame right (the image content left).
    cam_data.shift_x = (w / 2.0 - cx) / max(w, h)
    cam_data.shift_y = (cy - h / 2.0) / max(w, h)
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam = bpy.data.objects.new("mv3d_camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = job["samples"]
    scene.cycles.use_denoising = bool(job["denoise"])
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.seed = 0
    if job["threads"]:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = job["threads"]
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0, fl_x / fl_y
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"

    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for i, c2w in enumerate(job["cameras"]):
        cam.matrix_world = Matrix(c2w)  # Blender cameras look down -Z with +Y up: OpenGL c2w as is
        scene.render.filepath = str(out / f"{i:03d}.png")
        bpy.ops.render.render(write_still=True)


if __name__ == "__main__":  # pragma: no cover
    _worker(sys.argv[1])
