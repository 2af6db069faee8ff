"""View metrics: PSNR, SSIM, mask IoU, CLIP-S and a weight-free multi-view consistency measure.

Conventions (those of the SVD and SV3D papers' novel-view tables):

* Images are float tensors (B, 3, H, W) in [0, 1], RGBA views alpha-composited on WHITE first
  (`to_tensor`). Generated and ground-truth views must have the same size; resize before scoring.
* Every metric returns one value per image, shape (B,), so a caller can average over views, objects,
  or both, and run paired tests on per-object values.
* Silhouettes come from alpha: a pixel is foreground when alpha > 0.5 (uint8 alpha > 127).

LPIPS lives in `eval.lpips` (it needs weight files).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from render.cameras import Orbit, opengl_to_opencv
from render.common import InputError

#: Alpha threshold that turns an RGBA view into a silhouette (alpha > 0.5 is foreground).
MASK_THRESHOLD = 0.5
#: PSNR is capped at this value (identical images would give +inf and poison averages).
PSNR_MAX_DB = 100.0

# OpenAI CLIP's normalisation; used when the weights folder carries no preprocessor_config.json.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_tensor(rgba: np.ndarray, background: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """uint8 views (N, H, W, 4) RGBA or (N, H, W, 3) RGB -> float (N, 3, H, W) in [0, 1] on `background`.

    A single image (H, W, C) gives (1, 3, H, W).
    """
    arr = np.asarray(rgba)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (3, 4):
        raise InputError(f"views of shape {arr.shape}: expected (N, H, W, 3 or 4) images")
    rgb = arr[..., :3].astype(np.float32) / 255.0
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        bg = np.asarray(background, np.float32).reshape(1, 1, 1, 3)
        rgb = rgb * alpha + bg * (1.0 - alpha)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()


def masks_from_alpha(rgba: np.ndarray, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
    """Silhouettes (N, H, W) bool from uint8 RGBA (N, H, W, 4); RGB views are all foreground."""
    arr = np.asarray(rgba)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[-1] == 3:
        return torch.ones(arr.shape[:3], dtype=torch.bool)
    return torch.from_numpy(arr[..., 3].astype(np.float32) / 255.0 > threshold)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise InputError(
            f"view metrics got shapes {tuple(pred.shape)} and {tuple(target.shape)}: expected two equal (B, C, H, W)"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,), for images in [0, 1] (peak 1).

    10 log10(1 / MSE), the MSE over all channels and pixels; capped at `PSNR_MAX_DB`.
    """
    _check_pair(pred, target)
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_MAX_DB / 10)))).clamp_max(PSNR_MAX_DB)


#: SSIM's Gaussian window (Wang et al. 2004): 11 taps, sigma 1.5.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, (B,), in [-1, 1] (1 for identical images).

    Wang et al. 2004, eq. 13, with the usual constants: 11x11 Gaussian window (sigma 1.5), K1 0.01,
    K2 0.03, data range 1, population (not sample) variances; the map is averaged over channels and the
    valid pixels only (those whose whole window lies in the image), as the reference MATLAB code and
    scikit-image's `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)` do.
    torchmetrics is not used: it ignores `kernel_size` for Gaussian windows and averages over the
    reflect-padded border too (about 1% off on 128 px photographs). Images need at least 11 px a side.
    """
    _check_pair(pred, target)
    _, c, h, w = pred.shape
    if min(h, w) < SSIM_WINDOW:
        raise InputError(f"SSIM of {h}x{w} images: expected at least {SSIM_WINDOW} pixels a side")
    x, y = pred.double(), target.double()
    t = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    gx, gy = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, "valid" (no padding)
        return torch.nn.functional.conv2d(torch.nn.functional.conv2d(z, gx, groups=c), gy, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return smap.flatten(1).mean(1).float()


def mask_iou(pred_mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of silhouettes (B, H, W) bool, (B,) in [0, 1]; two empty masks give 1."""
    if pred_mask.shape != target_mask.shape:
        raise InputError(
            f"mask shapes {tuple(pred_mask.shape)} and {tuple(target_mask.shape)}: expected equal"
        )
    p, t = pred_mask.bool().flatten(1), target_mask.bool().flatten(1)
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# ------------------------------------------------------------------------------------------------
# CLIP-S
# ------------------------------------------------------------------------------------------------


class _CLIPImageTower(torch.nn.Module):
    """The image half of a full `CLIPModel`, with `CLIPVisionModelWithProjection`'s output field."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.config = clip.config.vision_config

    def forward(self, pixel_values: torch.Tensor):
        from types import SimpleNamespace

        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return SimpleNamespace(image_embeds=self.visual_projection(pooled))


class CLIPScorer:
    """CLIP image embeddings from a LOCAL transformers checkpoint, for CLIP-S.

    CLIP-S (as in the SVD/SV3D tables) is the cosine similarity of the CLIP image embeddings of a
    generated view and its ground-truth view, in [-1, 1]. The weights are any
    `CLIPVisionModelWithProjection` (or full `CLIPModel`) folder saved by transformers, e.g. a local
    copy of openai/clip-vit-large-patch14. Images are resized so the short side is the model's
    `image_size` (bicubic, antialiased), centre-cropped and normalised with the folder's
    preprocessor_config.json mean/std (OpenAI's when absent).
    """

    def __init__(self, model: torch.nn.Module, image_size: int, mean=_CLIP_MEAN, std=_CLIP_STD, device="cpu"):
        self.model = model.eval().to(device)
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> CLIPScorer:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise InputError(
                f"{path}: no CLIP weights here (expected a transformers folder with config.json and weights, "
                "e.g. a local copy of openai/clip-vit-large-patch14)"
            )
        from transformers import CLIPModel, CLIPVisionModelWithProjection

        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path / 'config.json'}: not valid JSON ({exc})") from exc
        try:
            if model_type == "clip":
                # A full CLIP (text + vision): its projection width lives on the top-level config, so
                # the vision tower and projection are taken from the loaded CLIPModel.
                model = _CLIPImageTower(CLIPModel.from_pretrained(str(path), local_files_only=True))
            else:
                model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: cannot load CLIP vision weights ({str(exc).splitlines()[0]})") from exc
        mean, std = _CLIP_MEAN, _CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        return cls(model, model.config.image_size, mean, std, device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, S, S) normalised CLIP input."""
        _, _, h, w = images.shape
        s = self.image_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = torch.nn.functional.interpolate(
            images.float(), size=(nh, nw), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[:, :, top : top + s, left : left + s]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Unit-norm image embeddings (B, D) of images (B, 3, H, W) in [0, 1]."""
        out = []
        for i in range(0, images.shape[0], batch_size):
            x = self.preprocess(images[i : i + batch_size]).to(self.device)
            emb = self.model(pixel_values=x).image_embeds.float()
            out.append(torch.nn.functional.normalize(emb, dim=-1).cpu())
        return torch.cat(out)


def clip_similarity(pred: torch.Tensor, target: torch.Tensor, scorer: CLIPScorer) -> torch.Tensor:
    """CLIP-S per image pair, (B,) in [-1, 1]: cosine of CLIP image embeddings of pred and target."""
    _check_pair(pred, target)
    return (scorer.embed(pred) * scorer.embed(target)).sum(-1)


# ------------------------------------------------------------------------------------------------
# Multi-view consistency without weights: reprojection through a mesh
# ------------------------------------------------------------------------------------------------


def depth_maps(mesh, orbit: Orbit, resolution: int) -> np.ndarray:
    """Depth (N, R, R) of `mesh` (a trimesh.Trimesh in the world frame) from every orbit camera; inf = empty."""
    from render.raster import depth_map

    intr = orbit.intrinsics(resolution)
    c2w = orbit.camera_to_world()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    return np.stack([depth_map(v, f, c2w[i], intr) for i in range(len(orbit))])


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample img (H, W, C) at pixel coordinates uv (P, 2) (pixel centres at +0.5), edge-clamped."""
    h, w = img.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bot = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def reprojection_error(
    views: np.ndarray,
    orbit: Orbit,
    depths: np.ndarray,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    depth_tolerance: float = 0.02,
    stride: int = 1,
) -> np.ndarray:
    """Colour disagreement of neighbouring views after warping one into the other through a mesh.

    For each pair (i, j = i + stride mod N): every pixel of view j where the mesh is visible is lifted
    to 3D with `depths[j]`, projected into camera i, and kept only if it is visible there too (its
    depth in camera i matches `depths[i]` at that pixel within `depth_tolerance` relative depth, so
    occluded points are not compared). The error is the mean absolute RGB difference (in [0, 1],
    averaged over channels and kept pixels) between view j and view i sampled bilinearly there.

    Views of a consistent object agree up to view-dependent shading, so ground-truth renders through
    the ground-truth mesh score near 0; views that drift, flicker or turn the wrong way score higher.
    With the ground-truth mesh this also penalises generated views that do not line up with the true
    shape; with a mesh reconstructed from the generated views it measures their self-consistency.
    No learned weights are involved.

    Args:
        views: (N, H, W, 3|4) uint8, composited on `background` when RGBA.
        orbit: the N cameras of the views.
        depths: (N, H, W) depth along each camera's axis, inf where the mesh is absent (`depth_maps`).
        stride: neighbour distance in frames.

    Returns:
        (N,) error of each pair (i, i + stride); NaN where the pair shares no visible pixel.
    """
    views = np.asarray(views)
    n, h, w = views.shape[:3]
    if depths.shape != (n, h, w) or len(orbit) != n:
        raise InputError(
            f"reprojection: {n} views of {h}x{w}, depths {depths.shape}, {len(orbit)} cameras: expected to match"
        )
    rgb = to_tensor(views, background).permute(0, 2, 3, 1).numpy().astype(np.float64)
    intr = orbit.intrinsics(w, h)
    k_inv = np.linalg.inv(intr.matrix())
    c2w_cv = opengl_to_opencv(orbit.camera_to_world())
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=float)], -1).reshape(-1, 3)
    rays = pix @ k_inv.T  # camera-frame directions with z = 1
    errors = np.full(n, np.nan)
    for i in range(n):
        j = (i + stride) % n
        dj = depths[j].reshape(-1)
        valid = np.isfinite(dj)
        if not valid.any():
            continue
        pts_cam = rays[valid] * dj[valid, None]
        pts_world = pts_cam @ c2w_cv[j, :3, :3].T + c2w_cv[j, :3, 3]
        w2c_i = np.linalg.inv(c2w_cv[i])
        pi = pts_world @ w2c_i[:3, :3].T + w2c_i[:3, 3]
        z = pi[:, 2]
        uv = np.stack([intr.fl_x * pi[:, 0] / z + intr.cx, intr.fl_y * pi[:, 1] / z + intr.cy], -1)
        inb = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        px = np.clip(uv[:, 0].astype(int), 0, w - 1)
        py = np.clip(uv[:, 1].astype(int), 0, h - 1)
        di = depths[i][py, px]
        visible = inb & np.isfinite(di) & (np.abs(di - z) <= depth_tolerance * z)
        if not visible.any():
            continue
        src = _bilinear(rgb[i], uv[visible])
        dst = rgb[j].reshape(-1, 3)[valid][visible]
        errors[i] = float(np.abs(src - dst).mean())
    return errors
