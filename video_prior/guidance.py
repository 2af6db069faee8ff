"""Classifier-free guidance with a per-frame scale (SV3D), as pure functions.

CFG (Ho & Salimans 2022, eq. 6, on denoised outputs): D = D_u + w (D_c - D_u). SVD and SV3D give every
frame its own w: SVD ramps it linearly over time, SV3D uses a triangle over the orbit (1.0 at the input
view and at the last frame, which are near the input, and the largest scale at the opposite side of
the object, where the network has the least information from the input).
"""

from __future__ import annotations

import torch

from render.common import InputError

GUIDANCE_KINDS = ("constant", "linear", "triangle")


def guidance_scales(
    kind: str,
    num_frames: int,
    min_scale: float = 1.0,
    max_scale: float = 2.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-frame guidance scales, shape (num_frames,).

    * "constant": every frame `max_scale` (plain CFG).
    * "linear": from `min_scale` at frame 0 to `max_scale` at the last frame (SVD).
    * "triangle": t = linspace(0, 1, F), w = min + (max - min) (1 - |2 t - 1|): `min_scale` at both ends,
      `max_scale` in the middle (SV3D; 21 frames: 1.0, 1.15, ..., 2.5 at frame 10, ..., 1.0). For an even
      number of frames the two middle frames share the highest value, just below `max_scale`.
    """
    if num_frames < 1:
        raise InputError(f"number of frames {num_frames}: expected at least 1")
    t = (
        torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
        if num_frames > 1
        else torch.zeros(1, dtype=torch.float64)
    )
    if kind == "constant":
        w = torch.full_like(t, max_scale)
    elif kind == "linear":
        w = min_scale + (max_scale - min_scale) * t
    elif kind == "triangle":
        w = min_scale + (max_scale - min_scale) * (1.0 - (2.0 * t - 1.0).abs())
    else:
        raise InputError(f"guidance schedule '{kind}': expected one of {', '.join(GUIDANCE_KINDS)}")
    return w.to(dtype)


def apply_cfg(
    denoised_uncond: torch.Tensor, denoised_cond: torch.Tensor, scales: torch.Tensor
) -> torch.Tensor:
    """Guided estimate D_u + w_f (D_c - D_u) with one weight per frame.

    Args:
        denoised_uncond, denoised_cond: (B, F, C, h, w) outputs of the unconditional and conditional branches.
        scales: (F,) per-frame weights (or (B, F) per sample and frame).
    Returns:
        (B, F, C, h, w).
    """
    if denoised_uncond.shape != denoised_cond.shape:
        raise ValueError(f"shapes {tuple(denoised_uncond.shape)} and {tuple(denoised_cond.shape)} differ")
    f = denoised_cond.shape[1]
    if scales.shape[-1] != f or scales.ndim > 2:
        raise ValueError(
            f"guidance scales of shape {tuple(scales.shape)} for {f} frames: expected ({f},) or (B, {f})"
        )
    w = scales.to(device=denoised_cond.device, dtype=denoised_cond.dtype)
    w = (
        w.reshape((-1, f) + (1,) * (denoised_cond.ndim - 2))
        if w.ndim == 2
        else w.reshape((1, f) + (1,) * (denoised_cond.ndim - 2))
    )
    return denoised_uncond + w * (denoised_cond - denoised_uncond)
