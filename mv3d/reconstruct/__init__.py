"""Reconstruction: an orbit dataset (N views + cameras) -> a textured mesh in the dataset's world frame.

    result = reconstruct("views/", out=Path("mesh.glb"))             # a generation: its own method
    result = reconstruct("views/", method="hull", texture="vertex")   # space carving only, fast

Methods are an explicit name -> class table (`METHODS`). Each gives geometry; colour comes from the
views by visibility-weighted projection (texture.py), as a UV texture (xatlas) or vertex colours.

Pipeline of the default "field" method:
1. load views (views.py): composite, downsize, drop empty masks, warn about degenerate inputs;
2. visual hull by space carving (hull.py) on the grid;
3. voxel density/colour field fitted by volume rendering, coarse to fine (field.py);
4. marching cubes, clean-up (floaters, degenerate faces, holes), decimation (mesh_ops.py);
5. UV unwrap + texture bake, or vertex colours (texture.py);
6. optionally back to the source mesh's frame; export (mv3d/export.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from render.common import MAX_IMAGE_SIDE, InputError, check_range, check_seed, resolve_device
from render.dataset import OrbitDataset, read_orbit_dataset

TEXTURE_MODES = ("uv", "vertex", "none")


@dataclass
class ReconstructionSettings:
    """What a method needs besides the views."""

    resolution: int = 128
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    max_view_resolution: int = 256
    field_config: Any = None  # field.FieldConfig (None: defaults at `resolution`)
    work_dir: Path | None = None


@dataclass
class ReconstructionResult:
    """A reconstructed mesh.

    Attributes:
        mesh: the (textured) mesh, in the dataset's world frame unless `source_frame` was asked.
        path: where it was written, or None.
        warnings: one-line problems met on the way (degenerate inputs, fallbacks).
        timings: seconds per stage ("load", "hull", "field", "mesh", "texture", "export", "total").
        method: the `METHODS` name that made it.
    """

    mesh: trimesh.Trimesh
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    method: str = ""


class _Timer:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc: Any) -> None:
                timer.timings[name] = timer.timings.get(name, 0.0) + time.perf_counter() - self.t

        return _Ctx()


class HullMethod:
    """Space carving of the silhouettes: seconds, exact silhouettes, no concavities."""

    @staticmethod
    def carve(ds: OrbitDataset, settings: ReconstructionSettings, warnings: list[str], timer: _Timer):
        """Load the views and carve their visual hull: (views, occupancy, grid); the field starts here too."""
        from mv3d.reconstruct.hull import visual_hull
        from mv3d.reconstruct.mesh_ops import Grid
        from mv3d.reconstruct.views import load_views

        with timer("load"):
            vs = load_views(ds, settings.max_view_resolution)
            warnings.extend(vs.warnings)
        grid = Grid(settings.resolution)
        with timer("hull"):
            occ = visual_hull(vs, grid, warnings)
        return vs, occ, grid

    def geometry(
        self, ds: OrbitDataset, settings: ReconstructionSettings, warnings: list[str], timer: _Timer
    ):
        from mv3d.reconstruct.mesh_ops import extract_isosurface

        vs, occ, grid = self.carve(ds, settings, warnings, timer)
        with timer("mesh"):
            mesh = extract_isosurface(occ, grid, 0.5)
        return mesh, vs


class FieldMethod:
    """Voxel density/colour field fitted by volume rendering, initialised from the visual hull."""

    def geometry(
        self, ds: OrbitDataset, settings: ReconstructionSettings, warnings: list[str], timer: _Timer
    ):
        from mv3d.reconstruct.field import SURFACE_LEVEL, FieldConfig, fit_field, surface_field
        from mv3d.reconstruct.mesh_ops import extract_isosurface

        vs, occ, grid = HullMethod.carve(ds, settings, warnings, timer)
        if len(vs) < 3:
            # Photometric consistency needs several views of each point; with fewer the hull is all we know.
            warnings.append(
                f"only {len(vs)} usable views: the field is not fitted, the visual hull is the result"
            )
            with timer("mesh"):
                return extract_isosurface(occ, grid, 0.5), vs
        cfg = settings.field_config or FieldConfig()
        cfg = dataclasses.replace(cfg, resolution=settings.resolution)
        with timer("field"):
            fitted = fit_field(
                vs, occ, grid, cfg, seed=settings.seed, device=settings.device, progress=settings.progress
            )
        with timer("mesh"):
            mesh = extract_isosurface(surface_field(fitted, occ, grid), fitted.grid, SURFACE_LEVEL)
        if len(mesh.faces) == 0:
            warnings.append("the fitted field carved everything away: falling back to the visual hull")
            mesh = extract_isosurface(occ, grid, 0.5)
        return mesh, vs


class NerfstudioMethod:
    """nerfacto trained by an installed nerfstudio (`ns-train`), Poisson mesh by `ns-export`."""

    def geometry(
        self, ds: OrbitDataset, settings: ReconstructionSettings, warnings: list[str], timer: _Timer
    ):
        from mv3d.reconstruct.nerfstudio import INSTALL_HINT, available, nerfstudio_mesh
        from mv3d.reconstruct.views import load_views

        if not available():
            raise InputError(INSTALL_HINT)
        with timer("load"):
            vs = load_views(ds, settings.max_view_resolution)
            warnings.extend(vs.warnings)
        from render.common import temp_dir

        work = settings.work_dir or temp_dir("mv3d-nerfstudio-")
        with timer("field"):
            mesh = nerfstudio_mesh(
                ds, Path(work), device=settings.device if settings.device != "cpu" else "cuda"
            )
        if settings.work_dir is None:
            # The mesh is in memory now. A failed run keeps its folder: the error names its log there.
            shutil.rmtree(work, ignore_errors=True)
        return mesh, vs


def detail_for_views(view_px: int) -> tuple[int, int, int]:
    """(grid resolution, face budget, texture size) that views of `view_px` pixels can resolve.

    A view at the default framing spans about 1.9 world units, the unit cube about 1.1 of them, so the
    object covers roughly 0.6 x view_px pixels across: a grid of about view_px cells over its 1.1-unit
    box, a mesh of a few faces per covered pixel and a texture of a few texels per pixel already hold
    what the views show. Finer settings cost time and add nothing (64 px views: grid 64, 10000 faces,
    512 texels; 128 px and up: grid 128, 20000 faces, 1024 texels).

    The face budget stops at 20000: decimating the grid-128 surface of the reconstruction bench's
    objects (256 px views) to 10000, 20000 or 40000 faces gives the same Chamfer distance and volume IoU
    to the third decimal (the grid, not the faces, limits the geometry; the texture is baked per texel
    from the views either way), while xatlas's chart search grows faster than the face count: 1 to 3 s
    at 20000 faces, 4 to 17 s at 40000.
    """
    px = max(16, int(view_px))
    resolution = 64 if px <= 64 else 128
    faces = int(min(20000, max(5000, round(2.5 * px * px, -3))))
    texture = 512 if px <= 64 else 1024
    return resolution, faces, texture


def source_is_y_up(source_to_world) -> bool:
    """Whether the source file's +Y is mv3d's up (world +Z): a source read +Y up (glTF, `--up-axis y`)."""
    m = np.asarray(source_to_world, np.float64)[:3, :3]
    up = np.linalg.solve(m, np.array([0.0, 0.0, 1.0]))
    return bool(np.allclose(up / np.linalg.norm(up), [0.0, 1.0, 0.0], atol=1e-6))


def _check_source_frame(ds: OrbitDataset) -> None:
    """Refuse, before the work, a `source_to_world` that cannot map a mesh back to its source's frame.

    It must be affine (last row 0 0 0 1: a projective row made trimesh write a sheared, rescaled mesh
    without a word) and invertible.
    """
    s2w = np.asarray(ds.source_to_world, np.float64)
    if not np.array_equal(s2w[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(
            f"{ds.root}: source_to_world last row {s2w[3].tolist()}: expected 0 0 0 1 (an affine transform) "
            "to map the mesh back to the source frame"
        )
    if abs(np.linalg.det(s2w[:3, :3])) < 1e-12:
        raise InputError(
            f"{ds.root}: source_to_world is singular: cannot map the mesh back to the source frame"
        )


#: Reconstruction methods by name (the `--method` choices).
METHODS: dict[str, type] = {"field": FieldMethod, "hull": HullMethod, "nerfstudio": NerfstudioMethod}


def check_method(method: object, field: str = "method", label: str | None = None) -> str:
    """`method` if it names a `METHODS` entry, else `InputError` for `field`, one line for every caller
    (`label`, default `field`, begins it: e.g. "reconstruct_options method"). The name is quoted and cut
    to 40 characters: it may come from a hostile run.json or model info."""
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(
            f"{label or field} {str(method)[:40]!r}: expected one of {', '.join(METHODS)}", field=field
        )
    return method


#: The method of an orbit dataset that records none (a render, a capture).
DEFAULT_METHOD = "field"


def recorded_method(folder: str | Path, problems: list[str] | None = None) -> tuple[str, str | None]:
    """(method, why): the method to mesh `folder` with when the caller names none.

    A generation's `run.json` records the method its mesh was made with (the default model's is hull),
    or for a `--no-mesh` generation the method its model names, so that remaking the mesh gives the same
    kind of mesh; any other folder gets `DEFAULT_METHOD`. `why` says which record was taken (None for
    the default). run.json is a file in the user's folder, not necessarily mv3d's: one that is
    unreadable, too large or names no known method at any level is ignored, with one line (file, what
    is wrong) appended to `problems`.
    """
    from mv3d.generate.record import RUN_FILE, read_run

    found: list[str] = []
    run = read_run(Path(folder), found)
    if run is None:
        if problems is not None:
            problems.extend(f"{p}; ignored, method {DEFAULT_METHOD}" for p in found)
        return DEFAULT_METHOD, None
    rec = run.get("reconstruction")
    settings = rec.get("settings") if isinstance(rec, dict) else None
    method = settings.get("method") if isinstance(settings, dict) else None
    why = "as the generation's own mesh"
    if method is None and "mesh_method" in run:  # a --no-mesh generation: its model's method
        method, why = run["mesh_method"], "the generation's model's (it made no mesh)"
    if method is None:
        return DEFAULT_METHOD, None
    if not isinstance(method, str) or method not in METHODS:
        if problems is not None:
            problems.append(
                f"{Path(folder) / RUN_FILE}: unknown mesh method {str(method)[:40]!r}; "
                f"ignored, method {DEFAULT_METHOD}"
            )
        return DEFAULT_METHOD, None
    return method, f"method {method}, {why}"


def reconstruct(
    views: str | Path | OrbitDataset,
    out: Path | str | None = None,
    method: str | None = None,
    resolution: int | None = None,
    texture: str = "uv",
    target_faces: int | None = None,
    source_frame: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    texture_size: int | None = None,
    max_view_resolution: int = 256,
    field_config: Any = None,
    format: str | None = None,
) -> ReconstructionResult:
    """Reconstruct a textured mesh from an orbit dataset.

    Args:
        views: orbit dataset folder, its transforms.json, or an `OrbitDataset`.
        out: mesh file to write (.glb, .obj, .ply; see `mv3d.export.export_mesh`), or None.
        format: "glb", "obj" or "ply" for `out`; None: from its suffix.
        method: a key of `METHODS`; None: the method the dataset's folder records (`recorded_method`:
            a generation's own, "hull" for the default model's), else `DEFAULT_METHOD` ("field"), as
            `mv3d reconstruct` without --method. `ReconstructionResult.method` says which was used.
        resolution: voxel grid resolution over [-0.55, 0.55]^3 (32 to 512); None: from the views' size
            (`detail_for_views`: 64 for views of 64 px or less, else 128).
        texture: "uv" (xatlas atlas + baked texture), "vertex" (vertex colours) or "none".
        target_faces: decimate to at most this many faces (0: keep all); None: from the views' size.
        texture_size: texture atlas side in texels, 64 to 8192; None: from the views' size.
        source_frame: map the mesh back to the source mesh's units with inverse(source_to_world).
        seed: seeds ray sampling and initialisation.
        device: torch device of the field fit ("cpu", "cuda", "cuda:N" or "auto").
        progress: show a progress bar while the field is fitted.
        max_view_resolution: views larger than this (16 to `MAX_IMAGE_SIDE` pixels) are downsized for
            fitting (texturing too).
        field_config: a `mv3d.reconstruct.field.FieldConfig` (iterations, rays, loss weights); its
            resolution is replaced by `resolution`. None: the defaults.
    Returns:
        `ReconstructionResult`; never an empty mesh (`InputError` instead).
    """
    from mv3d.reconstruct.mesh_ops import clean_mesh, decimate

    if method is not None:
        check_method(method)
    if texture not in TEXTURE_MODES:
        raise InputError(f"texture '{texture}': expected one of {', '.join(TEXTURE_MODES)}", field="texture")
    # checked by the CLI only: a tiny atlas was baked without a word, a view side of 0 or less ended in
    # a misleading "fully opaque" error or a traceback from torch
    if texture_size is not None and (
        isinstance(texture_size, bool)
        or not isinstance(texture_size, (int, np.integer))
        or not 64 <= texture_size <= 8192
    ):
        raise InputError(f"texture_size {texture_size}: expected 64 to 8192 pixels", field="texture_size")
    check_range("max_view_resolution", max_view_resolution, 16, MAX_IMAGE_SIDE, "pixels")
    ds = views if isinstance(views, OrbitDataset) else read_orbit_dataset(views)
    view_px = min(int(max_view_resolution), int(ds.intrinsics.width), int(ds.intrinsics.height))
    auto_res, auto_faces, auto_texture = detail_for_views(view_px)
    resolution = auto_res if resolution is None else resolution
    target_faces = auto_faces if target_faces is None else target_faces
    texture_size = auto_texture if texture_size is None else texture_size
    if not 32 <= int(resolution) <= 512:
        raise InputError(
            f"resolution {resolution}: expected a grid size between 32 and 512", field="resolution"
        )
    if int(target_faces) < 0 or 0 < int(target_faces) < 100:
        raise InputError(
            f"target_faces {target_faces}: expected 0 (no decimation) or at least 100", field="target_faces"
        )
    check_seed(seed)
    if source_frame:
        _check_source_frame(ds)
    # checked for every method (a misspelt --device was accepted without a word by hull), used by field
    device = resolve_device(device)
    if out is not None:
        from mv3d.export import check_mesh_output

        # a bad format, or a folder where the mesh or its MTL would go: refused before the work
        check_mesh_output(Path(out), format)
    timings: dict[str, float] = {}
    timer = _Timer(timings)
    start = time.perf_counter()
    warnings: list[str] = []
    if method is None:
        method, _ = recorded_method(ds.root, warnings)
    settings = ReconstructionSettings(
        resolution=int(resolution),
        seed=seed,
        device=device,
        progress=progress,
        max_view_resolution=max_view_resolution,
        field_config=field_config,
    )
    raw, vs = METHODS[method]().geometry(ds, settings, warnings, timer)
    with timer("mesh"):
        mesh = clean_mesh(raw)
        if len(mesh.faces) == 0:
            raise InputError(
                f"{ds.root}: reconstruction produced an empty mesh (views without a common object)"
            )
        if target_faces:
            mesh = decimate(mesh, int(target_faces))
    with timer("texture"):
        if texture == "uv":
            from mv3d.reconstruct.texture import textured_mesh

            mesh = textured_mesh(mesh, vs, texture_size)
        elif texture == "vertex":
            from mv3d.reconstruct.texture import vertex_colours

            mesh = vertex_colours(mesh, vs)
    if source_frame:
        from render.meshes import MAX_COORDINATE

        s2w = np.asarray(ds.source_to_world, np.float64)
        # affine and invertible: checked before the work (_check_source_frame)
        mesh.apply_transform(np.linalg.inv(s2w))
        if not np.all(np.abs(mesh.vertices) <= MAX_COORDINATE):  # NaN fails too
            raise InputError(
                f"{ds.root}: source_to_world maps the mesh to coordinates beyond {MAX_COORDINATE:g}: "
                "expected the transform of a mesh file mv3d reads"
            )
    path = None
    if out is not None:
        from mv3d.export import export_mesh

        # In the source frame the mesh has the source file's axes: a +Y-up source (a glTF, or a file
        # rendered with --up-axis y) is +Y up already, and GLB must not turn it again.
        y_up = source_frame and source_is_y_up(ds.source_to_world)
        with timer("export"):
            path = export_mesh(mesh, Path(out), format, y_up=y_up)
    timings["total"] = time.perf_counter() - start
    return ReconstructionResult(mesh, path, warnings, timings, method)


def mesh_function(
    method: str, seed: int = 0, device: str = "auto", field: str = "method"
) -> Callable[[Path], Any]:
    """`(orbit dataset folder) -> trimesh.Trimesh` in the world frame by `reconstruct`, for scoring
    (`eval.runner.run_benchmark`'s `reconstruct_fn`): geometry only, since the mesh metrics ignore colour.

    `field` names the method's setting in the error for an unknown one (`mv3d eval`: reconstruct_method).
    """
    check_method(method, field)

    def fn(dataset_dir: Path):
        return reconstruct(
            dataset_dir, method=method, texture="none", seed=seed, device=device, progress=False
        ).mesh

    return fn


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "ReconstructionResult",
    "check_method",
    "detail_for_views",
    "mesh_function",
    "reconstruct",
    "recorded_method",
]
