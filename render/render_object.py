"""Render one object into an orbit dataset folder (`views/*.png` + `transforms.json`).

    render_object("chair.glb", "out/chair", static_orbit(21), 256)                 # an orbit
    render_object("chair.glb", "out/gt", cameras="gen/transforms.json")           # exact cameras

The dataset records the renderer's name and settings, the mesh's `source_to_world` and a white
background (the colour RGBA views are composited on). The folder is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from render.cameras import Orbit
from render.common import InputError
from render.dataset import WHITE, OrbitDataset, read_orbit_dataset, write_orbit_dataset
from render.meshes import LoadedMesh, load_mesh
from render.renderers import Renderer, RenderResult, get_renderer


def as_mesh(mesh_or_path: LoadedMesh | str | Path) -> LoadedMesh:
    """A `LoadedMesh` as is, or the mesh file at a path loaded and normalised."""
    if isinstance(mesh_or_path, LoadedMesh):
        return mesh_or_path
    return load_mesh(mesh_or_path)


def as_renderer(renderer: str | Renderer, settings: dict[str, Any] | None = None) -> Renderer:
    if isinstance(renderer, Renderer):
        return renderer
    return get_renderer(renderer, **(settings or {}))


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_render(
    out_dir: str | Path,
    mesh: LoadedMesh,
    result: RenderResult,
    orbit: Orbit,
    renderer: Renderer,
    object_info: dict[str, Any] | None = None,
    light_seed: int | None = None,
    cameras: OrbitDataset | None = None,
    extra: dict[str, Any] | None = None,
    command: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a `RenderResult` of `mesh` as an orbit dataset at `out_dir` (atomically).

    Depth and normals, when present, go to `depth.npy` (N, H, W) float32 and `normals.npy`
    (N, H, W, 3) float32 beside the views. With `cameras`, the dataset keeps that dataset's exact
    intrinsics and camera-to-world matrices (which need not look at the origin).
    """
    info = {"source": mesh.source}
    info.update(object_info or {})
    meta_extra: dict[str, Any] = {"light_seed": light_seed}
    files: dict[str, bytes] = {}
    if result.depth is not None:
        files["depth.npy"] = _npy_bytes(result.depth.astype(np.float32))
        meta_extra["depth_file"] = "depth.npy"
    if result.normals is not None:
        files["normals.npy"] = _npy_bytes(result.normals.astype(np.float32))
        meta_extra["normals_file"] = "normals.npy"
    frame_extra = None
    if cameras is not None:
        meta_extra.update(cameras.intrinsics.to_transforms())
        frame_extra = [
            {"transform_matrix": np.asarray(m, np.float64).tolist()} for m in cameras.camera_to_world
        ]
        info["cameras_from"] = str(cameras.root)
    meta_extra.update(extra or {})
    return write_orbit_dataset(
        out_dir,
        result.rgba,
        orbit,
        source_to_world=mesh.source_to_world,
        background=WHITE,
        renderer={"name": renderer.name, "settings": renderer.settings()},
        object_info=info,
        extra=meta_extra,
        extra_files=files,
        frame_extra=frame_extra,
        command=command,
        overwrite=overwrite,
    )


def render_object(
    mesh_or_path: LoadedMesh | str | Path,
    out_dir: str | Path,
    orbit: Orbit | None = None,
    resolution: int | None = 256,
    renderer: str | Renderer = "fast",
    object_info: dict[str, Any] | None = None,
    *,
    renderer_settings: dict[str, Any] | None = None,
    cameras: str | Path | OrbitDataset | None = None,
    light_seed: int | None = None,
    depth: bool = False,
    normals: bool = False,
    command: str | None = "render",
    overwrite: bool = False,
) -> Path:
    """Render a mesh (file or `LoadedMesh`) into an orbit dataset folder; return the folder.

    Args:
        mesh_or_path: a mesh file (OBJ/PLY/STL/OFF/GLB/glTF) or an already loaded mesh.
        out_dir: the dataset folder to write, replaced whole if it is new, empty or an earlier render
            (as `mv3d render --out`); any other existing folder only with `overwrite`.
        orbit: the cameras (`static_orbit`, `dynamic_orbit`, ...); ignored with `cameras`.
        resolution: square image size in pixels; ignored with `cameras`.
        renderer: "fast", "blender", or a renderer instance.
        object_info: provenance stored under "object" in transforms.json (id, source, ...).
        renderer_settings: keyword settings for a renderer given by name.
        cameras: an orbit dataset folder, its transforms.json, or an `OrbitDataset`: render exactly
            its cameras, intrinsics and image size.
        light_seed: None for the default lights, an integer for a random light setup.
        depth, normals: also store depth.npy / normals.npy.
        command, overwrite: the output folder's owner and whether to replace a folder it does not own
            (`render.dataset.write_orbit_dataset`, `render.common.check_output`); the default marks the
            folder as `mv3d render`'s output. None: replace any existing folder whole, unchecked.
    Returns:
        `out_dir`, with `views/000.png ...` ((H, W, 4) uint8 RGBA each) and `transforms.json`.
    """
    mesh = as_mesh(mesh_or_path)
    rend = as_renderer(renderer, renderer_settings)
    try:
        if cameras is not None:
            ds = (
                cameras
                if isinstance(cameras, OrbitDataset)
                else read_orbit_dataset(cameras, check_images=False)
            )
            result = rend.render_cameras(
                mesh, ds.camera_to_world, ds.intrinsics, depth=depth, normals=normals, light_seed=light_seed
            )
            return write_render(
                out_dir,
                mesh,
                result,
                ds.orbit,
                rend,
                object_info,
                light_seed,
                cameras=ds,
                command=command,
                overwrite=overwrite,
            )
        if orbit is None or resolution is None:
            raise InputError(
                "render_object needs an orbit and a resolution, or cameras from an orbit dataset"
            )
        result = rend.render(
            mesh, orbit, int(resolution), depth=depth, normals=normals, light_seed=light_seed
        )
        return write_render(
            out_dir, mesh, result, orbit, rend, object_info, light_seed, command=command, overwrite=overwrite
        )
    finally:
        if rend is not renderer:  # built here: release its GL context / worker
            rend.close()
