"""Image helpers every package shares: reading views as RGBA and compositing them on a background.

Convention (docs/architecture.md): images on disk are straight-alpha RGBA PNGs; in memory a view is
(H, W, 4) uint8 (or (N, H, W, 4) for an orbit), and a composited image is float32 RGB in [0, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from render.common import InputError

#: The background views are composited on unless a dataset records another (white, as SV3D's renders).
WHITE = (1.0, 1.0, 1.0)


#: Largest view image decoded (read from its header first): 4096^2 pixels, 64 MiB as RGBA. Views are
#: 576^2 for SV3D and at most 1024^2 in mv3d's own datasets; a small PNG claiming 13000^2 pixels
#: would cost 676 MB per copy.
MAX_VIEW_PIXELS = 4096 * 4096
#: Largest texture decoded from a mesh file (GLB/glTF/OBJ/PLY), per image: 8192^2 pixels (256 MiB as
#: RGBA), the largest texture size in common use; and at most `MAX_TEXTURE_TOTAL` pixels over one file.
MAX_TEXTURE_PIXELS = 8192 * 8192
MAX_TEXTURE_TOTAL = 4 * MAX_TEXTURE_PIXELS


def load_rgba(
    path: str | Path, size: tuple[int, int] | None = None, max_pixels: int = MAX_VIEW_PIXELS
) -> np.ndarray:
    """Read an image as (H, W, 4) uint8 RGBA (an RGB file gets an opaque alpha).

    The header's size is checked before anything is decoded: at most `max_pixels`, and exactly
    `size` = (width, height) when given (an orbit dataset's views all have its transforms.json size).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if size is not None and (w, h) != tuple(size):
                raise InputError(f"{path}: view image is {w}x{h} pixels: expected {size[0]}x{size[1]}")
            if w * h > max_pixels:
                raise InputError(
                    f"{path}: view image is {w}x{h} pixels: expected at most {max_pixels:,} pixels"
                )
            return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: view image does not exist") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: cannot read view image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: view image is too large ({exc})") from exc


@contextlib.contextmanager
def image_budget(
    where: str, max_pixels: int = MAX_TEXTURE_PIXELS, max_total: int = MAX_TEXTURE_TOTAL
) -> Iterator[None]:
    """Inside the block, every image Pillow opens (a mesh file's textures, opened by trimesh) is checked
    against a pixel budget from its header, before it is decoded; a refusal raises `InputError` when
    the block ends, even where trimesh catches the error and would go on without the texture.

    Not thread-safe (it swaps `PIL.Image.open`); mesh loading runs one file per process.
    """
    from PIL import Image

    original = Image.open
    refused: list[str] = []
    total = [0]

    def checked_open(fp, *args, **kwargs):
        im = original(fp, *args, **kwargs)
        w, h = im.size
        total[0] += w * h
        if w * h > max_pixels or total[0] > max_total:
            im.close()
            limit = f"at most {max_pixels:,} pixels each and {max_total:,} in all"
            refused.append(f"{where}: an embedded image of {w}x{h} pixels: expected {limit}")
            raise InputError(refused[-1])
        return im

    Image.open = checked_open
    try:
        yield
    except InputError:
        raise
    except Exception:
        if refused:
            raise InputError(refused[0]) from None
        raise
    finally:
        Image.open = original
    if refused:
        raise InputError(refused[0])


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
