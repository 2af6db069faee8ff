"""Image helpers every package shares: reading views as RGBA and compositing them on a background.

Convention (docs/architecture.md): images on disk are straight-alpha RGBA PNGs; in memory a view is
(H, W, 4) uint8 (or (N, H, W, 4) for an orbit), and a composited image is float32 RGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from render.common import InputError

#: The background views are composited on unless a dataset records another (white, as SV3D's renders).
WHITE = (1.0, 1.0, 1.0)


def load_rgba(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 4) uint8 RGBA (an RGB file gets an opaque alpha)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: view image does not exist") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read view image ({exc})") from exc


def composite(rgba: np.ndarray, background: Sequence[float] = WHITE) -> np.ndarray:
    """Alpha-composite uint8 RGBA (..., H, W, 4) on an RGB background in [0, 1] -> float32 (..., 3)."""
    rgba = np.asarray(rgba)
    rgb = rgba[..., :3].astype(np.float32) / 255.0
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape((1,) * (rgb.ndim - 1) + (3,))
    return rgb * alpha + bg * (1.0 - alpha)


def on_background(rgba: np.ndarray, background: Sequence[float] = WHITE) -> np.ndarray:
    """`composite` as uint8 (..., 3), rounded to nearest: what a GIF, an MP4 or a contact sheet shows."""
    return (composite(rgba, background) * 255).round().astype(np.uint8)
