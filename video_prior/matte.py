"""RGBA views from generated frames: the matte post-processing of `MultiViewPipeline`.

A model that generates RGB paints the object on its training background: `alpha_from_background` cuts
a soft matte from the distance to that colour. A model that generates RGBA paints its own matte:
`unmix_background` only recovers straight colours from the composited ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ALPHA_HIGH", "ALPHA_LOW", "alpha_from_background", "matte_views", "to_uint8", "unmix_background"]

#: Soft threshold on the distance of a generated pixel from the white background (max over RGB, in
#: [0, 1]): below ALPHA_LOW it is background (alpha 0), above ALPHA_HIGH object (alpha 1), linear in
#: between. JPEG-free 8-bit decodes of a white background stay well under 0.02.
ALPHA_LOW = 0.02
ALPHA_HIGH = 0.10


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) to uint8, rounded half up."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def unmix_background(rgb: np.ndarray, alpha: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """Straight-alpha RGBA from colours composited on `background` and their alpha.

    Args:
        rgb: (N, H, W, 3) float in [0, 1], composited on the background.
        alpha: (N, H, W) float in [0, 1].
    Returns:
        (N, H, W, 4) uint8 RGBA whose composite on the background reproduces `rgb`.
    """
    bg = np.asarray(background, dtype=np.float32)
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    fg = np.where(a > 1e-3, (rgb - (1.0 - a) * bg) / np.maximum(a, 1e-3), 0.0)
    return np.concatenate([to_uint8(fg), to_uint8(a)], axis=-1)


def alpha_from_background(
    rgb: np.ndarray,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    low: float = ALPHA_LOW,
    high: float = ALPHA_HIGH,
) -> np.ndarray:
    """RGBA views from RGB views generated on the (white) training background, with a soft-threshold alpha.

    The model paints the object on its training background; a pixel's alpha is a linear ramp of its
    distance from the background colour (max over channels) between `low` and `high`. Holes enclosed by
    the object are filled (a white highlight or label inside the object is not background; carving it
    away would punch holes in the reconstruction), and colours at soft edges are un-mixed from the
    background, so the RGBA composited back on it reproduces the generated image.

    Args:
        rgb: (N, H, W, 3) float in [0, 1].
        background: RGB in [0, 1].
    Returns:
        (N, H, W, 4) uint8 RGBA, straight alpha.
    """
    from scipy import ndimage

    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    bg = np.asarray(background, dtype=np.float32)
    dist = np.abs(rgb - bg).max(axis=-1)
    alpha = np.clip((dist - low) / (high - low), 0.0, 1.0)
    for i in range(alpha.shape[0]):
        solid = alpha[i] > 0.5
        holes = ndimage.binary_fill_holes(solid) & ~solid
        alpha[i][holes] = 1.0
    return unmix_background(rgb, alpha, bg)


def matte_views(frames: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """(N, H, W, C) generated frames in [0, 1] -> (N, H, W, 4) uint8 straight RGBA: an alpha model's
    own matte (C = 4) un-mixed from the background, else one cut by `alpha_from_background` (C = 3)."""
    if frames.shape[-1] == 4:
        return unmix_background(frames[..., :3], frames[..., 3], background)
    return alpha_from_background(frames, background)
