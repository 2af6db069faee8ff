"""Evaluation protocols: which cameras, images and metrics make a number comparable with a paper's table.

Two protocols, an explicit name -> protocol table (`PROTOCOLS`):

* ``mv3d`` (the default): mv3d's own benchmark (`eval.runner`): N views at one elevation on SV3D's
  field of view, scored on the novel views with PSNR, SSIM (data range 1), LPIPS (either backbone),
  CLIP-S, mask IoU and a reprojection error; meshes by area-uniform surface samples.
* ``syncdreamer``: the Google-Scanned-Objects protocol of SyncDreamer (Liu et al., arXiv 2309.03453),
  which later single-image-to-3D papers report on the same 30 GSO objects. Read from the authors'
  released evaluation code (``eval_nvs.py``, ``eval_mesh.py``, ``blender_script.py``):

  - cameras: 16 views, azimuths 0, 22.5, ..., 337.5 degrees, elevation 30 degrees, distance 1.5, a
    35 mm lens on a 32 mm sensor (field of view 2 atan(16 / 35) = 49.13 degrees), 256 x 256 px, the
    object scaled so that its largest bounding-box side is 1 and centred (the unit box);
  - views: RGBA composited on white, in [0, 1]; PSNR = 10 log10(1 / MSE), the MSE over all pixels and
    channels of one view; SSIM: torchmetrics' ``structural_similarity_index_measure`` with its defaults
    (Gaussian window 11, sigma 1.5, data range taken from the pair), one view at a time; LPIPS with the
    VGG backbone on [-1, 1] (Zhang et al., arXiv 1801.03924); every metric averaged over ALL 16 views,
    then over objects;
  - meshes: the ground truth scaled to the unit box; points are the visible surface: each mesh's depth
    maps from the 16 cameras unprojected, then voxel-downsampled at 0.01 (Open3D's
    ``voxel_down_sample``: the mean of the points in each occupied voxel); Chamfer distance = the mean
    of the two directions' mean nearest-neighbour L2 distance; volume IoU of the inside of both meshes
    at 64^3 voxel centres over [-1, 1]^3 (the grid of ``mesh2sdf.compute(..., 64)`` the authors call);
  - F-score at 0.1, 0.2 and 0.5 on those point sets, the thresholds SF3D (Boss et al., arXiv
    2408.00653) and SPAR3D (Huang et al., arXiv 2501.04689) report on GSO.

  The predicted mesh is scored as produced, in mv3d's world frame, where the ground-truth object fills
  the unit box: a wrong scale or pose costs, as in the papers, where the reconstruction shares the
  renders' frame. Which side of an object faces view 0 follows mv3d's camera convention and the
  mesh's up axis (``--up-axis``), not SyncDreamer's per-object rotations of GSO, so per-object numbers
  match theirs only where the input view does.

All functions here are pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from render.cameras import Orbit, static_orbit
from render.common import InputError

__all__ = [
    "PROTOCOLS",
    "EvalProtocol",
    "composite_white",
    "depth_points",
    "fit_generator",
    "pad_orbit",
    "syncdreamer_mesh_scores",
    "syncdreamer_view_scores",
    "unit_box",
    "voxel_down_sample",
]

#: SyncDreamer's camera: a 35 mm lens on a 32 mm wide sensor, 256 px square.
SYNCDREAMER_FOV_DEG = math.degrees(2.0 * math.atan(16.0 / 35.0))


@dataclass(frozen=True)
class EvalProtocol:
    """How one protocol renders and scores.

    Attributes:
        name: the key in `PROTOCOLS`, recorded in metrics.json and on every report row.
        views, elevation, resolution, radius, fov_deg: the ground-truth orbit (None: the caller's).
        lpips_net: the LPIPS backbone the protocol prescribes (None: any).
        headline: the view group its papers report, "all" or "novel".
        f_thresholds: F-score distance thresholds.
        iou_resolution, iou_half_extent: volume IoU grid (voxel centres over [-h, h]^3).
        voxel_size: down-sampling of the depth point clouds (None: surface samples instead).
        sources: the papers it follows, by arXiv id.
    """

    name: str
    views: int | None
    elevation: float | None
    resolution: int | None
    radius: float | None
    fov_deg: float | None
    lpips_net: str | None
    headline: str
    f_thresholds: tuple[float, ...]
    iou_resolution: int
    iou_half_extent: float
    voxel_size: float | None
    sources: str

    def orbit(self, views: int, elevation: float) -> Orbit:
        """The ground-truth orbit: the protocol's cameras, or `views` at `elevation` for mv3d's own."""
        if self.views is None:
            return static_orbit(views, elevation_deg=elevation)
        return static_orbit(
            self.views, elevation_deg=float(self.elevation), fov_deg=float(self.fov_deg), radius=self.radius
        )


PROTOCOLS: dict[str, EvalProtocol] = {
    "mv3d": EvalProtocol(
        name="mv3d",
        views=None,
        elevation=None,
        resolution=None,
        radius=None,
        fov_deg=None,
        lpips_net=None,
        headline="novel",
        f_thresholds=(0.01, 0.02, 0.05),
        iou_resolution=64,
        iou_half_extent=0.55,
        voxel_size=None,
        sources="mv3d's own benchmark",
    ),
    "syncdreamer": EvalProtocol(
        name="syncdreamer",
        views=16,
        elevation=30.0,
        resolution=256,
        radius=1.5,
        fov_deg=SYNCDREAMER_FOV_DEG,
        lpips_net="vgg",
        headline="all",
        f_thresholds=(0.1, 0.2, 0.5),
        iou_resolution=64,
        iou_half_extent=1.0,
        voxel_size=0.01,
        sources="SyncDreamer (arXiv 2309.03453) GSO protocol; F-scores as SF3D (arXiv 2408.00653) and "
        "SPAR3D (arXiv 2501.04689)",
    ),
}


def get_protocol(name: str) -> EvalProtocol:
    """The protocol called `name`; an unknown name is one `InputError`."""
    if name not in PROTOCOLS:
        raise InputError(f"protocol {name}: expected one of {', '.join(PROTOCOLS)}", field="protocol")
    return PROTOCOLS[name]


def pad_orbit(orbit: Orbit, num_frames: int) -> tuple[Orbit, np.ndarray]:
    """The orbit grown to `num_frames` views for a model that generates exactly that many.

    Extra views go, one at a time, in the middle of the widest azimuth gap (at the mean elevation and
    radius of its two ends), and the views are sorted by azimuth from the input's, so the model sees an
    orbit as even as it can be and frame 0 stays the input view.

    Returns:
        (padded orbit, keep): ``keep[i]`` is the padded frame that shows the original view i.
    """
    n = len(orbit)
    if num_frames < n:
        raise InputError(
            f"a model of {num_frames} views cannot show an orbit of {n}: expected at most {num_frames}"
        )
    az0 = float(orbit.azimuth_deg[0])
    rel = list((np.asarray(orbit.azimuth_deg, np.float64) - az0) % 360.0)
    el, rad = list(np.asarray(orbit.elevation_deg, np.float64)), list(np.asarray(orbit.radius, np.float64))
    while len(rel) < num_frames:
        order = np.argsort(rel, kind="stable")
        a = np.asarray(rel)[order]
        gaps = np.diff(np.append(a, a[0] + 360.0))
        j = int(np.argmax(gaps))
        i0, i1 = int(order[j]), int(order[(j + 1) % len(order)])
        rel.append(float((a[j] + gaps[j] / 2.0) % 360.0))
        el.append((el[i0] + el[i1]) / 2.0)
        rad.append((rad[i0] + rad[i1]) / 2.0)
    order = np.argsort(rel, kind="stable")  # the input (0 degrees, index 0) stays first
    keep = np.argsort(order)[:n]
    padded = Orbit(
        azimuth_deg=(np.asarray(rel)[order] + az0) % 360.0,
        elevation_deg=np.asarray(el)[order],
        radius=np.asarray(rad)[order],
        fov_deg=orbit.fov_deg,
        kind="custom",
    )
    return padded, keep


def fit_generator(generator):
    """`generator` (``(image, orbit, seed) -> views``) made to accept any orbit of at most its
    ``num_frames`` views: a fixed-length model (21 for SV3D) asked for a protocol's 16 views generates
    the `pad_orbit` and returns the 16 that were asked for."""
    num_frames = getattr(generator, "num_frames", None)
    if num_frames is None:
        return generator

    def generate(image_rgba: np.ndarray, orbit: Orbit, seed: int) -> np.ndarray:
        if len(orbit) == int(num_frames):
            return generator(image_rgba, orbit, seed)
        padded, keep = pad_orbit(orbit, int(num_frames))
        return np.asarray(generator(image_rgba, padded, seed))[keep]

    return generate


# ------------------------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------------------------


def composite_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 4) RGBA (or (N, H, W, 3) RGB) -> float32 (N, H, W, 3) in [0, 1] on white:
    rgb * alpha + (1 - alpha), in float32 as SyncDreamer's ``color_map_forward``."""
    x = np.asarray(rgba).astype(np.float32) / 255.0
    if x.shape[-1] == 3:
        return x
    rgb, alpha = x[..., :3], x[..., 3:]
    return rgb * alpha + (1.0 - alpha)


def syncdreamer_view_scores(
    pred: np.ndarray, gt: np.ndarray, lpips_model=None, psnr_max_db: float = 100.0
) -> dict[str, list[float]]:
    """Per-view PSNR, SSIM and (with `lpips_model`, VGG) LPIPS under the SyncDreamer protocol.

    Args:
        pred, gt: uint8 (N, H, W, 4|3) views.
        lpips_model: an `eval.lpips.LPIPS` (it maps [0, 1] to [-1, 1] itself), or None to skip LPIPS.
        psnr_max_db: cap for identical views (the papers' formula is infinite there; JSON is not).

    Returns:
        {"psnr": N, "ssim": N[, "lpips": N]} floats.
    """
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, g = composite_white(pred), composite_white(gt)
    if p.shape != g.shape:
        raise InputError(f"views of shapes {p.shape} and {g.shape}: expected the same (N, H, W, C)")
    mse = ((g.reshape(len(g), -1, 3) - p.reshape(len(p), -1, 3)) ** 2).mean(axis=(1, 2))
    psnr = [float(min(10.0 * np.log10(1.0 / m), psnr_max_db)) if m > 0 else psnr_max_db for m in mse]
    pt = torch.from_numpy(np.ascontiguousarray(p)).permute(0, 3, 1, 2)
    gtt = torch.from_numpy(np.ascontiguousarray(g)).permute(0, 3, 1, 2)
    # one view at a time: with data_range=None torchmetrics takes the range from the batch it is given
    ssim = [float(structural_similarity_index_measure(pt[i : i + 1], gtt[i : i + 1])) for i in range(len(pt))]
    out = {"psnr": psnr, "ssim": ssim}
    if lpips_model is not None:
        from eval.lpips import lpips

        with torch.no_grad():
            out["lpips"] = lpips(pt, gtt, lpips_model).tolist()
    return out


# ------------------------------------------------------------------------------------------------
# Meshes
# ------------------------------------------------------------------------------------------------


def unit_box(vertices: np.ndarray) -> np.ndarray:
    """(V, 3) vertices scaled so that the largest bounding-box side is 1, then centred on the box's
    centre (SyncDreamer's ``norm_coords``)."""
    v = np.asarray(vertices, np.float64)
    extent = float((v.max(0) - v.min(0)).max())
    if not extent > 0:
        raise InputError("mesh with a zero-size bounding box: expected a 3D object")
    v = v / extent
    return v - (v.max(0) + v.min(0)) / 2.0


def depth_points(mesh, orbit: Orbit, resolution: int) -> np.ndarray:
    """(P, 3) world points of the surface seen by the orbit's cameras: every pixel centre with depth,
    unprojected (the depth maps are `eval.view_metrics.depth_maps`, OpenCV pinhole, pixel centres at
    +0.5)."""
    from eval.view_metrics import depth_maps
    from render.cameras import opengl_to_opencv

    depth = depth_maps(mesh, orbit, resolution)
    intr = orbit.intrinsics(resolution)
    c2w = orbit.camera_to_world()
    ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float64) + 0.5
    pts = []
    for i in range(len(orbit)):
        hit = np.isfinite(depth[i])
        z = depth[i][hit]
        cam = np.stack([(xs[hit] - intr.cx) / intr.fl_x * z, (ys[hit] - intr.cy) / intr.fl_y * z, z], -1)
        cv = opengl_to_opencv(c2w[i])
        pts.append(cam @ cv[:3, :3].T + cv[:3, 3])
    return np.concatenate(pts) if pts else np.zeros((0, 3))


def voxel_down_sample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """The mean of the points in each occupied voxel, (P', 3), voxels anchored half a voxel below the
    points' minimum (Open3D's ``PointCloud.voxel_down_sample``); sorted by voxel index."""
    p = np.asarray(points, np.float64)
    if len(p) == 0:
        return p.reshape(0, 3)
    origin = p.min(0) - voxel_size / 2.0
    keys = np.floor((p - origin) / voxel_size).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, p)
    return sums / counts[:, None]


def _nearest(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(dst).query(src, k=1)[0]


def syncdreamer_mesh_scores(
    pred,
    gt,
    orbit: Orbit | None = None,
    resolution: int = 256,
    voxel_size: float = 0.01,
    thresholds: Sequence[float] = (0.1, 0.2, 0.5),
    iou_resolution: int = 64,
    iou_half_extent: float = 1.0,
) -> dict[str, float]:
    """Chamfer distance, F-scores and volume IoU of `pred` against `gt` under the SyncDreamer protocol.

    Args:
        pred: trimesh.Trimesh in mv3d's world frame, scored as it is.
        gt: trimesh.Trimesh; scaled to the unit box (`unit_box`) first.
        orbit: the cameras whose depth maps give the points (None: the protocol's 16).
        resolution: depth map size in pixels.
        voxel_size: point down-sampling (`voxel_down_sample`).
        thresholds: F-score distances.
        iou_resolution, iou_half_extent: the volume IoU grid (`eval.mesh_metrics.occupancy`).

    Returns:
        {"chamfer", "f_score@t" for each t, "volume_iou"}.
    """
    import trimesh

    from eval.mesh_metrics import occupancy

    orbit = PROTOCOLS["syncdreamer"].orbit(16, 30.0) if orbit is None else orbit
    gt = trimesh.Trimesh(unit_box(gt.vertices), np.asarray(gt.faces), process=False)
    pts_p = voxel_down_sample(depth_points(pred, orbit, resolution), voxel_size)
    pts_g = voxel_down_sample(depth_points(gt, orbit, resolution), voxel_size)
    if len(pts_p) == 0 or len(pts_g) == 0:
        raise InputError(
            f"{'predicted' if len(pts_p) == 0 else 'ground-truth'} mesh is seen by none of the cameras"
        )
    d_pg, d_gp = _nearest(pts_p, pts_g), _nearest(pts_g, pts_p)
    out = {"chamfer": float((d_pg.mean() + d_gp.mean()) / 2.0)}
    for t in thresholds:
        precision, recall = float((d_pg < t).mean()), float((d_gp < t).mean())
        out[f"f_score@{t:g}"] = (
            0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        )
    a = occupancy(pred, iou_resolution, iou_half_extent)
    b = occupancy(gt, iou_resolution, iou_half_extent)
    union = int(np.logical_or(a, b).sum())
    out["volume_iou"] = 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
    return out
