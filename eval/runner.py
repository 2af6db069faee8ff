"""The benchmark runner: ground-truth orbits -> generated orbits -> scores, cached per object.

For every object of SOURCES (the same specs as `mv3d render-dataset`):

1. render the ground-truth orbit (N views, static, one elevation) with a render/ renderer, with depth;
2. take view 0 (azimuth 0) as the input image;
3. run the model ("ours") and each baseline on it: `generator(input_rgba (H, W, 4) uint8, orbit, seed)
   -> (N, R, R, 4|3) uint8`; views of another size are resized to the ground truth's;
4. score every view against its ground truth (PSNR, SSIM, mask IoU, LPIPS and CLIP-S when their
   weights are given, reprojection error through the ground-truth mesh), and summarise over all views
   and over the novel views only (frames 1..N-1: frame 0 is the input and flatters every method);
5. optionally reconstruct a mesh from each method's views and score it against the ground-truth mesh.

Each object's result is written atomically to `OUT/objects/<id>/result.json` together with the views
(orbit datasets `gt/`, `ours/`, `<baseline>/`), so an interrupted run resumes where it stopped and a
changed setting recomputes only what it invalidates. `metrics.json` (per object and aggregate, with
versions, model hash and settings), `report.md` and the figures are written at the end
(`eval.report`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eval.layout import GT_VIEWS, METRICS_FORMAT, safe_id
from eval.report import write_report
from render.cameras import Orbit
from render.common import (
    MAX_IMAGE_SIDE,
    InputError,
    atomic_output,
    atomic_write_json,
    check_output,
    check_range,
    lock_folder,
    output_marker,
    versions,
    write_output_marker,
)
from render.meshes import world_trimesh


class ObjectLoadError(InputError):
    """An object of the benchmark cannot be loaded; the run records it and goes on with the others."""


class Generator(Protocol):
    """What the runner calls: one input view + the orbit to generate -> N views."""

    def __call__(self, image_rgba: np.ndarray, orbit: Orbit, seed: int) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------
# Baselines: an explicit name -> factory table
# ------------------------------------------------------------------------------------------------


def copy_generator(image_rgba: np.ndarray, orbit: Orbit, seed: int) -> np.ndarray:
    """The "copy" baseline: the input view repeated for every camera (a model that ignores the camera)."""
    return np.repeat(np.asarray(image_rgba)[None], len(orbit), axis=0)


def _copy_factory(provided: Mapping[str, Generator]) -> Generator:
    return copy_generator


def _no_camera_factory(provided: Mapping[str, Generator]) -> Generator:
    if "no-camera" not in provided:
        raise InputError(
            "baseline 'no-camera' needs a model: it is the model run with every camera set to the input's "
            "(pass baseline_generators={'no-camera': gen}; the CLI builds it from the model)"
        )
    return provided["no-camera"]


#: Baseline name -> factory(generators provided by the caller) -> generator.
BASELINES: dict[str, Callable[[Mapping[str, Generator]], Generator]] = {
    "copy": _copy_factory,
    "no-camera": _no_camera_factory,
}


def build_baselines(
    names: Sequence[str], provided: Mapping[str, Generator] | None = None
) -> dict[str, Generator]:
    """Generators for the named baselines; unknown names are an `InputError`."""
    out = {}
    for name in names:
        if name not in BASELINES:
            raise InputError(f"baseline '{name}': expected one of {', '.join(BASELINES)}")
        out[name] = BASELINES[name](provided or {})
    return out


# ------------------------------------------------------------------------------------------------
# Settings and helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """Everything that changes the numbers; recorded in metrics.json and part of every cache key."""

    views: int = 21
    elevation: float = 10.0
    resolution: int = 256
    seed: int = 0
    renderer: str = "fast"
    baselines: tuple[str, ...] = ("copy",)
    reconstruct: bool = False
    lpips: str | None = None  # "alex" / "vgg" when LPIPS weights were given
    clip: str | None = None  # the CLIP weights path when given
    mesh_points: int = 100_000
    iou_resolution: int = 64
    f_thresholds: tuple[float, ...] = (0.01, 0.02, 0.05)
    model: str = "unknown"
    model_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    protocol: str = "mv3d"  # a name in eval.protocols.PROTOCOLS
    mesh_metrics: int | None = None  # eval.mesh_metrics.MESH_METRICS_VERSION when meshes are scored
    # {"lpips": digest, "clip": digest} of the scorers' weights when given (`weights_digest`): other
    # weights under the same name or path give other numbers, so they key the cache too
    scorer_weights: dict[str, str] | None = None

    def key(self) -> str:
        d = asdict(self)
        if d["protocol"] == "mv3d":  # results cached before protocols existed stay valid
            del d["protocol"]
        if d["mesh_metrics"] is None:  # view-only results do not depend on the mesh metrics
            del d["mesh_metrics"]
        if d["scorer_weights"] is None:  # results scored without LPIPS or CLIP-S stay valid
            del d["scorer_weights"]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_digest(module: Any) -> str:
    """sha256 (16 hex digits) of a torch module's state: parameter and buffer names and bytes, sorted."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def resize_views(views: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3|4) uint8 -> (N, size, size, 4) uint8; RGB gets opaque alpha.

    Resized with antialiased bilinear filtering on premultiplied colour, so transparent pixels do not
    bleed their (meaningless) colour into the silhouette edge.
    """
    import torch

    v = np.asarray(views)
    if v.ndim != 4 or v.shape[-1] not in (3, 4) or v.dtype != np.uint8:
        raise InputError(
            f"generated views of shape {v.shape} and dtype {v.dtype}: expected (N, H, W, 3|4) uint8"
        )
    if v.shape[-1] == 3:
        v = np.concatenate([v, np.full(v.shape[:3] + (1,), 255, np.uint8)], axis=-1)
    if v.shape[1:3] == (size, size):
        return v
    t = torch.from_numpy(v.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    t = torch.cat([t[:, :3] * t[:, 3:], t[:, 3:]], dim=1)
    t = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    a = t[:, 3:].clamp(0, 1)
    rgb = torch.where(a > 1e-4, t[:, :3] / a.clamp_min(1e-4), torch.zeros_like(t[:, :3])).clamp(0, 1)
    out = torch.cat([rgb, a], 1).permute(0, 2, 3, 1).numpy()
    return np.round(out * 255).astype(np.uint8)


def _nanmean(x) -> float | None:
    a = np.asarray(x, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------


@dataclass
class Scorers:
    """The weight-bearing metrics, built once per run (None = skipped)."""

    lpips: Any = None  # eval.lpips.LPIPS
    clip: Any = None  # eval.view_metrics.CLIPScorer


def score_views(
    pred: np.ndarray, gt: np.ndarray, orbit: Orbit, gt_depth: np.ndarray, scorers: Scorers
) -> dict[str, list[float | None]]:
    """Per-view metrics of `pred` against `gt`, both (N, R, R, 4) uint8: {metric: N values}."""
    from eval import view_metrics as vm

    p, g = vm.to_tensor(pred), vm.to_tensor(gt)
    out: dict[str, list[float]] = {
        "psnr": vm.psnr(p, g).tolist(),
        "ssim": vm.ssim(p, g).tolist(),
        "mask_iou": vm.mask_iou(vm.masks_from_alpha(pred), vm.masks_from_alpha(gt)).tolist(),
    }
    if scorers.lpips is not None:
        from eval.lpips import lpips

        out["lpips"] = lpips(p, g, scorers.lpips).tolist()
    if scorers.clip is not None:
        out["clip_s"] = vm.clip_similarity(p, g, scorers.clip).tolist()
    # Reprojection of view i into view i+1 through the ground-truth geometry (see the function's doc).
    # NaN (a pair with no co-visible pixel) is stored as null: metrics.json stays strict JSON.
    errors = vm.reprojection_error(pred, orbit, gt_depth)
    out["reproj_err"] = [float(e) if np.isfinite(e) else None for e in errors]
    return out


def summarise(
    per_view: Mapping[str, Sequence[float]],
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Means over all views and over novel views (frames 1..N-1)."""
    all_ = {k: _nanmean(v) for k, v in per_view.items()}
    novel = {k: _nanmean(list(v)[1:]) if len(v) > 1 else None for k, v in per_view.items()}
    return all_, novel


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def evaluate_object(
    source: Any,
    obj_dir: Path,
    methods: Mapping[str, Generator],
    settings: EvalSettings,
    renderer: Any,
    scorers: Scorers,
    reconstruct_fn: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Render, generate, score and (optionally) reconstruct one object; returns its result dict."""
    from eval.mesh_metrics import gt_samples, mesh_metrics, occupancy
    from eval.protocols import get_protocol, syncdreamer_mesh_scores, syncdreamer_view_scores
    from render.dataset import write_orbit_dataset

    protocol = get_protocol(settings.protocol)
    syncdreamer = protocol.name == "syncdreamer"
    orbit = protocol.orbit(settings.views, settings.elevation)
    try:
        loaded = source.load()
    except InputError as exc:
        raise ObjectLoadError(str(exc)) from exc
    except Exception as exc:  # a reader's own failure on a malformed file: this object only
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ObjectLoadError(f"{source.object_id}: cannot load the mesh: {reason}") from exc
    try:
        res = renderer.render(loaded, orbit, settings.resolution, depth=True)
    except Exception as exc:  # a file's materials can break the rasteriser (a shader that fails to build)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ObjectLoadError(f"{source.object_id}: cannot render the ground truth: {reason}") from exc
    gt = np.asarray(res.rgba)
    if syncdreamer:
        gt_depth = None  # the protocol has no reprojection error
    elif res.depth is not None:
        gt_depth = np.where(np.asarray(res.depth) > 0, np.asarray(res.depth, np.float64), np.inf)
    else:
        from eval.view_metrics import depth_maps

        gt_depth = depth_maps(world_trimesh(loaded), orbit, settings.resolution)
    info = {"id": str(source.object_id), "spec": str(getattr(source, "spec", ""))}
    write_orbit_dataset(obj_dir / "gt", gt, orbit, source_to_world=loaded.source_to_world, object_info=info)
    from eval.view_metrics import reprojection_error

    result: dict[str, Any] = {
        "object_id": str(source.object_id),
        "spec": info["spec"],
        "meta": json.loads(json.dumps(getattr(source, "meta", {}) or {}, default=str)),
        "settings_key": settings.key(),
        "azimuth_deg": [float(a) for a in orbit.azimuth_deg],
        # Floor of the consistency measure: the ground truth's own reprojection error (lighting and
        # resampling only).
        "gt_reproj_err": None if syncdreamer else _nanmean(reprojection_error(gt, orbit, gt_depth)),
        "methods": {},
    }
    gt_mesh = world_trimesh(loaded) if reconstruct_fn is not None else None

    @functools.cache
    def gt_occupancy() -> np.ndarray:  # voxelised once for every method's mesh, when one is scored
        return occupancy(gt_mesh, settings.iou_resolution)

    @functools.cache
    def gt_sampled():  # the ground truth's surface samples and their tree: drawn once for every method
        return gt_samples(gt_mesh, settings.mesh_points, settings.seed)

    def score_mesh(mesh) -> dict[str, float]:
        if syncdreamer:
            return syncdreamer_mesh_scores(
                mesh,
                gt_mesh,
                orbit,
                settings.resolution,
                voxel_size=float(protocol.voxel_size),
                thresholds=settings.f_thresholds,
                iou_resolution=settings.iou_resolution,
                iou_half_extent=protocol.iou_half_extent,
            )
        return mesh_metrics(
            mesh,
            gt_mesh,
            thresholds=settings.f_thresholds,
            num_points=settings.mesh_points,
            resolution=settings.iou_resolution,
            seed=settings.seed,
            gt_occupancy=gt_occupancy(),
            gt_sampled=gt_sampled(),
        )

    for name, gen in methods.items():
        views = resize_views(gen(gt[0].copy(), orbit, settings.seed), settings.resolution)
        if len(views) != len(orbit):
            raise InputError(
                f"method '{name}' returned {len(views)} views for an orbit of {len(orbit)}: expected as many"
            )
        if syncdreamer:
            per_view = syncdreamer_view_scores(views, gt, scorers.lpips)
        else:
            per_view = score_views(views, gt, orbit, gt_depth, scorers)
        write_orbit_dataset(obj_dir / name, views, orbit, object_info={**info, "method": name})
        m_all, m_novel = summarise(per_view)
        entry: dict[str, Any] = {"per_view": per_view, "all": m_all, "novel": m_novel}
        if reconstruct_fn is not None:
            pred_mesh = _try_reconstruct(reconstruct_fn, obj_dir / name)
            if isinstance(pred_mesh, str):
                entry["mesh"] = {"failed": pred_mesh}
            else:
                with atomic_output(obj_dir / f"{name}_mesh.ply") as tmp:
                    pred_mesh.export(tmp, file_type="ply")
                mm = score_mesh(pred_mesh)
                if not syncdreamer:
                    from eval.view_metrics import depth_maps

                    # Self-consistency: the views reprojected through the mesh made from them.
                    self_depth = depth_maps(pred_mesh, orbit, settings.resolution)
                    mm["reproj_self"] = _nanmean(reprojection_error(views, orbit, self_depth))
                entry["mesh"] = mm
        result["methods"][name] = entry
    if reconstruct_fn is not None:
        # The reconstruction's own ceiling: the same method run on the ground-truth views (SV3D reports
        # this as "meshes fitted to ground-truth renders").
        gt_mesh_views = _try_reconstruct(reconstruct_fn, obj_dir / "gt")
        result["gt_views_mesh"] = (
            {"failed": gt_mesh_views} if isinstance(gt_mesh_views, str) else score_mesh(gt_mesh_views)
        )
    return result


def _try_reconstruct(reconstruct_fn: Callable[[Path], Any], views_dir: Path) -> Any:
    """The mesh of one method's views, or the one-line reason it could not be made (a str).

    Views can admit no mesh at all: 21 copies of an input whose silhouette misses the image centre carve
    nothing, since no point is inside every silhouette. That is a result of the method, not a broken run:
    it is recorded as `{"failed": reason}` (listed in the report, left out of the means: the aggregate's
    `n` counts the meshes scored), and the other methods and objects go on.
    """
    from tqdm.auto import tqdm

    try:
        return reconstruct_fn(views_dir)
    except InputError as exc:
        tqdm.write(f"mv3d eval: no mesh from {views_dir}: {exc}")
        return str(exc)


def aggregate(objects: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, std, median and count over objects, per method, per group (all / novel / mesh), per metric."""
    agg: dict[str, Any] = {}
    for obj in objects.values():
        for metric, value in (obj.get("gt_views_mesh") or {}).items():
            if metric != "failed":
                agg.setdefault(GT_VIEWS, {}).setdefault("mesh", {}).setdefault(metric, []).append(value)
        for method, entry in obj["methods"].items():
            for group in ("all", "novel", "mesh"):
                for metric, value in (entry.get(group) or {}).items():
                    if metric != "failed":  # a method whose views gave no mesh (`_try_reconstruct`)
                        agg.setdefault(method, {}).setdefault(group, {}).setdefault(metric, []).append(value)
    out: dict[str, Any] = {}
    for method, groups in agg.items():
        for group, metrics in groups.items():
            for metric, values in metrics.items():
                a = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
                stats = {"n": int(a.size)}
                if a.size:
                    stats.update(mean=float(a.mean()), std=float(a.std()), median=float(np.median(a)))
                out.setdefault(method, {}).setdefault(group, {})[metric] = stats
    return out


def source_stamp(source: Any) -> list[int] | None:
    """[size, modification time in ns] of the file an object is read from (a mesh file, a Sweet Home 3D
    catalogue), or None when it is not a local file. A cached result of another stamp is scored again: a
    mesh edited in place keeps its path, hence its object id."""
    kind, location = getattr(source, "kind", None), str(getattr(source, "location", ""))
    if kind == "sh3f":
        location = location.rpartition("#")[0]
    elif kind != "file":
        return None
    try:
        st = os.stat(location)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _earlier_eval(out_dir: Path) -> bool:
    """Whether `out_dir` is a report folder an `mv3d eval` wrote before eval marked its folders: its
    metrics.json or one of its objects' result.json says so."""
    candidates = [out_dir / "metrics.json", *sorted((out_dir / "objects").glob("*/result.json"))[:1]]
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and ("mv3d_eval_format" in data or "settings_key" in data):
            return True
    return False


def check_report_folder(out_dir: str | Path) -> Path:
    """Refuse, before any work, a report folder that holds what `mv3d eval` did not write.

    The folder may be new, empty, or an earlier `mv3d eval` report (marked with `OUTPUT_MARKER`, or
    unmarked with an eval's metrics.json or result.json), which is resumed; anything else is refused
    (`render.common.check_output`), so that a user's own report.md or figures are never replaced.
    """
    out_dir = Path(out_dir).expanduser()
    legacy = out_dir.is_dir() and output_marker(out_dir) is None and _earlier_eval(out_dir)
    return check_output(out_dir, "eval", overwrite=legacy, field="out_dir", overwrite_option=False)


def run_benchmark(
    sources: Sequence[Any],
    out_dir: str | Path,
    generator: Generator,
    views: int = 21,
    elevation: float = 10.0,
    resolution: int | None = None,
    baselines: Sequence[str] = ("copy",),
    reconstruct_fn: Callable[[Path], Any] | None = None,
    seed: int = 0,
    *,
    baseline_generators: Mapping[str, Generator] | None = None,
    renderer: str = "fast",
    lpips_model: Any = None,
    clip_scorer: Any = None,
    model_name: str = "unknown",
    model_hash: str | None = None,
    clip_path: str | None = None,
    mesh_points: int = 100_000,
    iou_resolution: int = 64,
    figures: bool = True,
    progress: bool = True,
    extra_settings: Mapping[str, Any] | None = None,
    up_axis: str | None = None,
    select: str | None = None,
    protocol: str = "mv3d",
) -> dict[str, Any]:
    """Evaluate `generator` (and baselines) on SOURCES; write OUT/metrics.json, report.md, figures.

    Args:
        sources: specs for `render.sources.resolve_sources` or ObjectSource-like objects
            (`object_id`, `spec`, `meta`, `load() -> LoadedMesh`).
        out_dir: report folder: new, empty or an earlier eval report (`check_report_folder`; results
            already there are reused when settings match); marked as eval's output.
        generator: "ours": `(input_rgba (H, W, 4) uint8, orbit, seed) -> (N, R, R, 4|3) uint8`.
        views, elevation: the ground-truth orbit (static, frame 0 at azimuth 0).
        resolution: ground-truth and scoring image size; None: the generator's own `resolution`
            attribute (so a low-resolution model is not scored on views upsampled for the purpose),
            or 256 when it has none.
        baselines: names from `BASELINES`; "no-camera" needs `baseline_generators["no-camera"]`.
        reconstruct_fn: optional `(orbit dataset folder) -> trimesh.Trimesh` in the world frame; when
            given, each method's views are meshed and scored with `eval.mesh_metrics`.
        seed: passed to every generator call (same seed, same numbers).
        lpips_model, clip_scorer: `eval.lpips.LPIPS` / `eval.view_metrics.CLIPScorer`, or None to skip.
        extra_settings: JSON-serialisable facts that change the numbers (how a baseline or the
            reconstruction was made); recorded in metrics.json and part of the cache key.
        up_axis: "y" or "z", the up axis of the mesh files and folders among the specs (None: each
            format's own; `render.sources.file_source`: another axis gives another object id).
        select: keep only the objects a selection lists (`render.sources.read_selection`), e.g. a
            committed split's test ids.
        protocol: a name in `eval.protocols.PROTOCOLS`. "syncdreamer" fixes the orbit (16 views,
            elevation 30, 256 px, its cameras; `views`, `elevation` and `resolution` are then not
            used), the view metrics (PSNR, SSIM, LPIPS with the VGG backbone over all views) and the
            mesh metrics (depth-map points, Chamfer, F-score at 0.1 / 0.2 / 0.5, volume IoU at 64^3).

    Returns:
        The metrics.json dictionary.
    """
    from tqdm.auto import tqdm

    from eval.mesh_metrics import MESH_METRICS_VERSION
    from eval.protocols import get_protocol
    from render.renderers import get_renderer

    proto = get_protocol(protocol)
    if proto.views is not None:
        views, elevation, resolution = proto.views, float(proto.elevation), proto.resolution
        iou_resolution = proto.iou_resolution
    lpips_net = getattr(lpips_model, "net_name", None) if lpips_model is not None else None
    if proto.lpips_net is not None and lpips_net not in (None, proto.lpips_net):
        raise InputError(
            f"LPIPS backbone '{lpips_net}' with protocol {proto.name}: expected '{proto.lpips_net}' "
            f"(--lpips-net {proto.lpips_net})"
        )
    if views < 2:
        raise InputError(f"views {views}: expected at least 2 (view 0 is the input)", field="views")
    if not -90.0 <= elevation <= 90.0:  # before any work, not at the first object's orbit
        raise InputError(f"elevation {elevation:g}: expected degrees in [-90, 90]", field="elevation")
    if resolution is None:
        resolution = int(getattr(generator, "resolution", None) or 256)
    check_range("resolution", resolution, 16, MAX_IMAGE_SIDE, "pixels")  # before any render
    if "ours" in baselines or GT_VIEWS in baselines:
        raise InputError(f"baseline names 'ours' and '{GT_VIEWS}' are reserved")
    methods: dict[str, Generator] = {"ours": generator, **build_baselines(baselines, baseline_generators)}
    if proto.views is not None:  # a fixed-length model (SV3D's 21 frames) shows the protocol's views
        from eval.protocols import fit_generator

        methods = {name: fit_generator(gen) for name, gen in methods.items()}
    settings = EvalSettings(
        views=int(views),
        elevation=float(elevation),
        resolution=int(resolution),
        seed=int(seed),
        renderer=renderer,
        baselines=tuple(baselines),
        reconstruct=reconstruct_fn is not None,
        lpips=lpips_net,
        clip=clip_path if clip_scorer is not None else None,
        mesh_points=int(mesh_points),
        iou_resolution=int(iou_resolution),
        f_thresholds=tuple(proto.f_thresholds),
        model=str(model_name),
        model_hash=model_hash,
        extra=dict(extra_settings or {}),
        protocol=proto.name,
        mesh_metrics=MESH_METRICS_VERSION if reconstruct_fn is not None else None,
        scorer_weights={
            name: weights_digest(getattr(scorer, "model", scorer))
            for name, scorer in (("lpips", lpips_model), ("clip", clip_scorer))
            if scorer is not None
        }
        or None,
    )
    from render.sources import read_selection, resolve_sources

    objs = resolve_sources(list(sources), up_axis=up_axis, select=select)
    # A selection may name objects the sources do not hold (another catalogue, a misspelt id): they are
    # listed in metrics.json and the report, never dropped without a word.
    not_found = sorted(read_selection(select) - {str(o.object_id) for o in objs}) if select else []
    if not_found:
        tqdm.write(
            f"mv3d eval: the selection {select} names {len(not_found)} objects the sources do not hold "
            f"(first: {not_found[0]}); listed in the report"
        )
    out_dir = check_report_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out_dir, "eval")  # a second eval on this --out stops here, before writing
    scorers = Scorers(lpips=lpips_model, clip=clip_scorer)
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    rend = None
    try:
        write_output_marker(out_dir, "eval")
        for src in tqdm(objs, desc="eval", unit="object", disable=not progress):
            obj_dir = out_dir / "objects" / safe_id(src.object_id)
            cached = obj_dir / "result.json"
            stamp = source_stamp(src)
            if cached.is_file():
                try:
                    prev = json.loads(cached.read_text())
                except (OSError, json.JSONDecodeError):
                    prev = None
                if (
                    isinstance(prev, dict)
                    and prev.get("settings_key") == settings.key()
                    # results written before stamps were recorded have none and stay valid
                    and prev.get("source_stamp", stamp) == stamp
                ):
                    results[str(src.object_id)] = prev
                    continue
            if rend is None:
                rend = get_renderer(renderer)
            try:
                result = evaluate_object(src, obj_dir, methods, settings, rend, scorers, reconstruct_fn)
            except ObjectLoadError as exc:
                # One broken mesh in a large set should not cost the whole run; it is listed in
                # metrics.json and the report, and retried on the next run.
                failed[str(src.object_id)] = str(exc)
                tqdm.write(f"mv3d eval: skipping {src.object_id}: {exc}")
                continue
            result["source_stamp"] = stamp
            atomic_write_json(cached, result)  # written last: its presence means the object is done
            results[str(src.object_id)] = result
        if not results:
            raise InputError(
                f"no object could be loaded ({len(failed)} failed; first: {next(iter(failed.values()))})"
            )
        metrics = {
            "mv3d_eval_format": METRICS_FORMAT,
            "settings": asdict(settings),
            "protocol": {"name": proto.name, "headline": proto.headline, "sources": proto.sources},
            "model": {"name": settings.model, "hash": model_hash},
            "versions": versions(),
            "methods": list(methods),
            "objects": results,
            "failed": failed,
            "not_found": not_found,
            "aggregate": aggregate(results),
        }
        atomic_write_json(out_dir / "metrics.json", metrics)
        write_report(metrics, out_dir, figures=figures)
    finally:
        if rend is not None:
            rend.close()
        lock.close()
    return metrics
