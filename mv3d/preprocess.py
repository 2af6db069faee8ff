"""Input preprocessing: any reasonable picture of one object -> a framed square RGBA image.

The video prior was trained on orbit renders: an object whose largest extent is 1, centred, seen by a
33.8 degree camera at the default distance (render/cameras.py), composited on white. A user's picture
is brought to the same framing in four steps:

1. **Decode** robustly (`load_image`): 16-bit, palette or colour-key tRNS, grayscale, CMYK, WebP,
   EXIF-rotated and very large files, an embedded ICC profile converted to sRGB, the first frame of an
   animation (with a note); bad files raise `InputError` with one line.
2. **Matte** (`mv3d.matting`): an RGBA file's own alpha (unless it is opaque almost everywhere: then
   the file is treated as opaque, with a note); otherwise, by default, the colour-distance matte when
   the border is plain and the learned matte (the shipped ISNet, or rembg / transparent-background
   installed with their weights on disk; nothing is ever downloaded) when it is not. The finished
   matte is checked (`matting.matte_notes`): thin, fragmented, tiny, touching the border.
3. **Frame**: crop to the object's bounding box and centre it in a square so that its larger side
   fills `1 - 2 * margin` of the square, as a default `mv3d render` view does.
4. **Resize** with Lanczos on premultiplied alpha (no dark or light fringes) and composite on the
   training background.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mv3d.matting import check_method, matte, matte_notes, unmix
from render.common import InputError

#: Smallest accepted image side in pixels: below this there is no object to see.
MIN_IMAGE_SIDE = 16
#: Largest accepted image, in pixels, read from the file header before anything is decoded. 20000^2 =
#: 400 megapixels covers honest photos, scans and renders (a 200 MP phone sensor, a 12000^2 render)
#: while a decompression bomb (a tiny file claiming e.g. 100000^2 pixels) is refused before it can
#: allocate gigabytes. Pillow's own guard (89 MP warning, 179 MP error) would reject a 12000^2 render.
MAX_IMAGE_PIXELS = 20000 * 20000
#: Largest image decoded at full size: a baseline JPEG is reduced while decoding (DCT scaling, 1/8 of the
#: side at most), any other format (PNG, WebP, TIFF, progressive JPEG, ...) is decoded whole first, which
#: costs 3 to 4 bytes a pixel plus a float copy of the working size. 10000^2 = 100 megapixels keeps one input under about 1 GB
#: (a 1.5 MB PNG claiming 400 megapixels cost 3.2 GB in generate).
MAX_DECODED_PIXELS = 10000 * 10000
#: Working resolution for matting: images are reduced (JPEG: at decode time) to about this side's
#: square in pixels (or twice the output resolution's, if larger) before anything else.
WORK_SIDE = 1024
#: Margin measured on `mv3d render` default views (fast renderer, azimuth 0, elevation 10, 24
#: procedural objects): the larger side of an object's bounding box fills 0.31-0.59 of the image,
#: median 0.535, upper quartile 0.55 (objects seen end-on fill less). A photo usually shows an object's
#: largest side, so the input is framed at the upper quartile: fill 0.55 = 1 - 2 * 0.225. The bbox
#: centre of the renders is within 0.01 of the image centre (see tests/test_preprocess.py).
DEFAULT_MARGIN = 0.225
#: Alpha (of 1) above which a pixel counts as object for the bounding box used in framing.
BBOX_ALPHA = 0.5
#: An alpha channel with fewer transparent (alpha < 0.5) pixels than this fraction of the image is not a
#: cut-out: scikit-image's horse.png (a black horse on white) has 12 of 131k. The image is then matted
#: as an opaque picture, with a note. A real cut-out leaves far more than 1% of its frame clear.
MIN_TRANSPARENT_FRACTION = 0.01

_EXIF_ORIENTATION = 0x0112


@dataclass
class PreprocessResult:
    """A framed input image.

    Attributes:
        rgba: (R, R, 4) uint8, straight alpha: the object centred with the default render framing.
        composited: (R, R, 3) float32 in [0, 1]: `rgba` composited on `background`.
        warnings: human-readable notes (background not plain, object touching the border, ...).
        matte_method: "alpha" (the file's own), "border-colour", "isnet", "rembg",
            "transparent-background" or "none" (see `mv3d.matting`).
        source_size: (width, height) of the decoded image after EXIF rotation.
        bbox: (x0, y0, x1, y1) of the object in the working image (pixels, exclusive end).
    """

    rgba: np.ndarray
    composited: np.ndarray
    warnings: list[str] = field(default_factory=list)
    matte_method: str = "alpha"
    source_size: tuple[int, int] = (0, 0)
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)


# ------------------------------------------------------------------------------------------------
# 1. Decoding
# ------------------------------------------------------------------------------------------------


def _describe(source) -> str:
    return str(source) if not hasattr(source, "mode") else "image"


def _open_checked(path: Path):
    """Open `path` lazily with Pillow (header only) after checking it is a non-empty file."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise InputError(f"{path}: file does not exist: expected an image file (PNG, JPEG, WebP, ...)")
    if path.is_dir():
        raise InputError(f"{path}: is a folder: expected an image file (PNG, JPEG, WebP, ...)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty: expected an image file")
    try:
        # Pillow's bomb check runs inside open() against its own global limit. Our own bound, checked
        # just below against the header size, replaces it, so silence the warning and let the error
        # threshold (2x MAX_IMAGE_PIXELS) sit above our bound for the duration of the call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as exc:
        raise InputError(
            f"{path}: not an image Pillow can read: expected PNG, JPEG, WebP, TIFF, BMP, ..."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path}: image is larger than {MAX_IMAGE_PIXELS // 10**6} megapixels (a decompression bomb?)"
        ) from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return im


def _check_size(w: int, h: int, where: str) -> None:
    if w * h > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{where}: image is {w}x{h} = {w * h / 1e6:.0f} megapixels: expected at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (larger files are refused as possible decompression bombs)"
        )
    if min(w, h) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{where}: image is {w}x{h} pixels: too small, expected at least {MIN_IMAGE_SIDE} pixels a side"
        )


def _to_float_rgba(im, sixteen_bit: bool = False) -> tuple[np.ndarray, bool]:
    """Any Pillow mode -> ((H, W, 4) float32 in [0, 1] straight alpha, has_alpha).

    `sixteen_bit`: the image was decoded as 16-bit gray (I;16) before being reduced in mode "I".
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow clips (not scales) 16-bit gray when converting to "L": scale here instead.
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            scale = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
        else:
            sixteen_bit = sixteen_bit or mode.startswith("I;16") or a.max(initial=0) > 255
            scale = 65535.0 if sixteen_bit else 255.0
        g = np.clip(a / scale, 0.0, 1.0).astype(np.float32)
        return np.stack([g, g, g, np.ones_like(g)], axis=-1), False
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
    if mode in ("RGBa", "La"):
        im = im.convert("RGBA")  # premultiplied modes: Pillow un-premultiplies
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    return rgba, has_alpha


def _colour_key_to_alpha(im, sixteen_bit_file: bool):
    """A gray or RGB image with a PNG colour key (`im.info["transparency"]`) -> "LA" or "RGBA", the
    pixels equal to the key transparent.

    16-bit gray (mode I;16) is compared at full depth and its gray kept to 8 bits, as every other input
    is. A 16-bit RGB PNG reaches here already reduced to its high bytes (Pillow), so its 16-bit key is
    compared by its high bytes too: a colour within 1/256 of the key is cut with it.
    """
    from PIL import Image

    key = im.info["transparency"]
    if im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.int64)
        gray = np.round(a / 257.0).astype(np.uint8)  # 65535 -> 255
        alpha = np.where(a == int(key), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray, alpha], axis=-1), "LA")
    if im.mode == "RGB" and isinstance(key, tuple) and sixteen_bit_file:
        rgb = np.asarray(im)
        key8 = np.array([int(v) >> 8 for v in key], np.uint8)
        alpha = np.where((rgb == key8).all(axis=-1), 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return im.convert("LA" if im.mode == "L" else "RGBA")


def _to_srgb(im, icc: bytes | None, notes: list[str]):
    """`im` converted from its embedded ICC profile to sRGB, alpha kept; `im` itself when it has no
    profile, an sRGB one, or a mode the profile cannot apply to.

    mv3d holds sRGB everywhere (docs/architecture.md): a photo tagged Adobe RGB (skimage's rocket.jpg),
    Display P3 (phones) or a print CMYK profile read as sRGB has washed-out or shifted colours. A
    profile named sRGB is left alone (the transform would only move values by rounding). A profile
    that cannot be read or does not fit the image's colours is one note, never an error: the image is
    still usable as sRGB.
    """
    if not icc or im.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return im
        colour = im.convert({"RGBA": "RGB", "LA": "L"}.get(im.mode, im.mode))
        out = ImageCms.profileToProfile(colour, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        notes.append(
            f"the image's ICC colour profile cannot be applied ({exc}): its colours are read as sRGB"
        )
        return im
    if im.mode in ("RGBA", "LA"):
        out.putalpha(im.getchannel("A"))
    return out


def load_image(source, max_side: int = WORK_SIDE) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """Decode an image file or PIL image to a working-size float RGBA array (`_decode` without its notes).

    Args:
        source: a path or a `PIL.Image.Image`.
        max_side: the image is reduced by a whole factor to about `max_side ** 2` pixels, a square
            picture to about `max_side` on each side (never enlarged). JPEGs are reduced while decoding
            (`Image.draft`, DCT scaling), other formats right after.

    Returns:
        rgba: (H, W, 4) float32 in [0, 1], straight alpha (opaque for images without alpha), with the
            EXIF orientation applied.
        has_alpha: whether the file carries transparency (an alpha channel or a palette tRNS).
        size: (width, height) of the full image after EXIF rotation.
    """
    rgba, has_alpha, size, _ = _decode(source, max_side)
    return rgba, has_alpha, size


def _decode(source, max_side: int = WORK_SIDE) -> tuple[np.ndarray, bool, tuple[int, int], list[str]]:
    """`load_image`, plus the notes a user should see about the file (frames left out, colour profile)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return _decode_opened(source, "image", max_side)
    # Closed here: Pillow keeps a multi-frame file (GIF, TIFF pages) open after loading its first frame.
    with _open_checked(Path(source)) as im:
        return _decode_opened(im, str(source), max_side)


def _decode_opened(im, where: str, max_side: int) -> tuple[np.ndarray, bool, tuple[int, int], list[str]]:
    """`_decode` of an opened (lazy) Pillow image; `where` names it in errors."""
    from PIL import Image

    notes: list[str] = []
    w, h = im.size
    _check_size(w, h, where)
    # Pillow decodes a 16-bit RGB PNG to 8 bits but keeps its colour key in 16 bits; only the tile's
    # raw mode, before loading, says which depth the key is in.
    sixteen_bit_file = im.format == "PNG" and any(str(t[3]).endswith(";16B") for t in im.tile or [])
    # A progressive JPEG is decoded whole too, in effect: libjpeg keeps every DCT coefficient of the
    # full-size image (2 bytes a sample: 2.4 GB at 400 megapixels) to add each scan to, whatever draft()
    # scales the output to (a 144 MP progressive file cost 470 MB against 320 MB for a baseline one).
    progressive = im.format == "JPEG" and bool(im.info.get("progressive") or im.info.get("progression"))
    if (im.format != "JPEG" or progressive) and w * h > MAX_DECODED_PIXELS:
        kind = "progressive JPEG" if progressive else im.format or "image"
        raise InputError(
            f"{where}: {kind} of {w}x{h} = {w * h / 1e6:.0f} megapixels: expected at most "
            f"{MAX_DECODED_PIXELS / 1e6:.0f} megapixels for formats decoded whole (a baseline JPEG up to "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f}); reduce it first"
        )
    orientation = 1
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make an otherwise good image unusable
        orientation = 1
    try:
        if im.format == "JPEG" and max(w, h) > 2 * max_side:
            # DCT-domain downscale by 1/2, 1/4 or 1/8: a 12000^2 JPEG decodes at 1500^2.
            im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else None, (max_side, max_side))
        im.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: image is larger than {MAX_IMAGE_PIXELS // 10**6} megapixels") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{where}: image data is truncated or corrupt ({exc})") from exc
    if getattr(im, "is_animated", False):  # GIF, APNG, WebP animations, multi-page TIFF
        notes.append("the file holds several frames (an animation or pages): only the first is used")
    icc = im.info.get("icc_profile")
    if im.mode in ("P", "1", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode in ("L", "RGB", "I;16", "I;16B") and "transparency" in im.info:
        # A PNG colour key (tRNS on a gray or RGB image) is a cut-out like a palette's tRNS: its
        # transparent pixels carry the key colour, which a matte would otherwise take for the object.
        im = _colour_key_to_alpha(im, sixteen_bit_file)
    # Reduce by pixel count, not by the longer side: a panorama's object fills its height, and an
    # 8000x2000 picture reduced by its width (by 7) kept 285 rows for it where a square picture keeps
    # 1024; by pixel count (by 3) it keeps 666, in about a square picture's memory. Never below
    # MIN_IMAGE_SIDE on the shorter side: a 20000x16 strip would be matted as a single row of pixels.
    factor = min(math.isqrt(im.size[0] * im.size[1]) // max_side, min(im.size) // MIN_IMAGE_SIDE)
    sixteen_bit = im.mode.startswith("I;16")
    if factor >= 2:
        if im.mode.startswith("I;16"):
            im = im.convert("I")
        im = im.reduce(factor)  # box filter over factor x factor blocks: fast and alias-free
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    if transpose is not None:
        im = im.transpose(transpose)
        if orientation >= 5:
            w, h = h, w
    im = _to_srgb(im, icc, notes)
    rgba, has_alpha = _to_float_rgba(im, sixteen_bit)
    return rgba, has_alpha, (w, h), notes


# ------------------------------------------------------------------------------------------------
# 3-4. Framing and resizing
# ------------------------------------------------------------------------------------------------


def object_bbox(alpha: np.ndarray, threshold: float = BBOX_ALPHA) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive end, of pixels with alpha > threshold (any alpha > 0 if none)."""
    for t in (threshold, 0.0):
        ys, xs = np.nonzero(alpha > t)
        if ys.size:
            return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return None


def measure_framing(alpha: np.ndarray) -> tuple[float, float, float]:
    """(fill, cx, cy) of an object: its bbox's larger side over the image side, and the bbox centre
    in units of the image side (0.5, 0.5 = centred). Used to match preprocessing to renders."""
    box = object_bbox(alpha)
    if box is None:
        return 0.0, 0.5, 0.5
    h, w = alpha.shape
    x0, y0, x1, y1 = box
    return max(x1 - x0, y1 - y0) / max(h, w), 0.5 * (x0 + x1) / w, 0.5 * (y0 + y1) / h


def frame_object(
    rgba: np.ndarray,
    resolution: int,
    margin: float = DEFAULT_MARGIN,
    bbox: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Crop to the object and centre it in a `resolution`^2 square, the larger bbox side filling
    `1 - 2 * margin` of it; Lanczos resize of premultiplied alpha.

    Args:
        rgba: (H, W, 4) float in [0, 1], straight alpha.
    Returns:
        (R, R, 4) float32 in [0, 1], straight alpha.
    """
    from PIL import Image

    if not 0 <= margin < 0.5:
        raise InputError(f"framing margin {margin}: expected a value in [0, 0.5)")
    if resolution < MIN_IMAGE_SIDE:
        raise InputError(f"resolution {resolution}: expected at least {MIN_IMAGE_SIDE} pixels")
    alpha = rgba[..., 3]
    bbox = object_bbox(alpha) if bbox is None else bbox
    if bbox is None:
        raise InputError("no object found: the image is fully transparent")
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) / (1.0 - 2.0 * margin)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    # Pad so that the square lies inside the array (transparent outside the picture).
    left, top = cx - side / 2, cy - side / 2
    h, w = alpha.shape
    pad = int(np.ceil(max(0.0, -left, -top, left + side - w, top + side - h))) + 2
    prem = np.concatenate([rgba[..., :3] * alpha[..., None], alpha[..., None]], axis=-1)
    prem = np.pad(prem, ((pad, pad), (pad, pad), (0, 0)))
    box = (left + pad, top + pad, left + pad + side, top + pad + side)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(prem[..., c]), "F").resize(
                (resolution, resolution), Image.Resampling.LANCZOS, box=box
            )
        )
        for c in range(4)
    ]
    out = np.stack(channels, axis=-1)
    a = np.clip(out[..., 3], 0.0, 1.0)
    rgb = np.clip(out[..., :3], 0.0, a[..., None])  # Lanczos overshoot: colour cannot exceed coverage
    straight = np.where(a[..., None] > 1.0 / 255.0, rgb / np.maximum(a[..., None], 1e-6), 0.0)
    return np.concatenate([np.clip(straight, 0, 1), a[..., None]], axis=-1).astype(np.float32)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preprocess_image(
    source,
    resolution: int = 576,
    margin: float = DEFAULT_MARGIN,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    matte_method: str = "auto",
) -> PreprocessResult:
    """A picture of one object -> the framed, matted, resized model input.

    Args:
        source: an image path or a `PIL.Image.Image`.
        resolution: side R of the square output.
        margin: fraction of the side left free on each side of the object's larger bbox side;
            the default matches `mv3d render`'s default framing.
        background: RGB in [0, 1] to composite on (the training background, white).
        matte_method: for opaque images (`mv3d.matting.matte`): "auto" (colour on a plain border,
            learned otherwise), "learned", "color", "none"; the file's own alpha always wins.

    Returns:
        `PreprocessResult` with rgba (R, R, 4) uint8 and composited (R, R, 3) float32.
    """
    check_method(matte_method)  # before decoding, and even for a cut-out, whose alpha wins
    where = _describe(source)
    rgba, has_alpha, size, notes = _decode(source, max(WORK_SIDE, 2 * int(resolution)))
    alpha = rgba[..., 3]
    if has_alpha and alpha.min() < 254.5 / 255.0:
        if alpha.max() <= 0.5 / 255.0:
            raise InputError(f"{where}: no object found: the image is fully transparent")
        clear = int((alpha < 0.5).sum())
        if clear < MIN_TRANSPARENT_FRACTION * alpha.size:
            # Not a cut-out (a stray transparent pixel or two): matte it like an opaque picture,
            # composited on white so that the few clear pixels do not show as black.
            notes.append(
                f"the alpha channel is opaque almost everywhere ({clear} of {alpha.size} pixels transparent): "
                "ignored, the picture is matted as an opaque image"
            )
            rgba = rgba.copy()
            rgba[..., :3] = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
            has_alpha = False
    if has_alpha and alpha.min() < 254.5 / 255.0:
        method = "alpha"
    else:
        try:
            m = matte(rgba[..., :3], matte_method)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        method, alpha = m.method, m.alpha
        notes += m.notes
        rgb = rgba[..., :3] if m.background is None else unmix(rgba[..., :3], alpha, m.background)
        rgba = np.concatenate([rgb, alpha[..., None]], -1)
        if method != "none":
            notes += [n for n in matte_notes(alpha) if n not in notes]
    bbox = object_bbox(rgba[..., 3])
    if bbox is None:
        raise InputError(f"{where}: no object found")
    h, w = alpha.shape
    x0, y0, x1, y1 = bbox
    touching = x0 == 0 or y0 == 0 or x1 == w or y1 == h
    if method == "alpha" and touching:
        notes.append("the object touches the image border: it may be cut off")
    framed = frame_object(rgba, int(resolution), margin, bbox)
    out = to_uint8(framed)
    bg = np.asarray(background, dtype=np.float32)
    if bg.shape != (3,) or np.any(bg < 0) or np.any(bg > 1):
        raise InputError(f"background {background}: expected three numbers in [0, 1]")
    a = out[..., 3:4].astype(np.float32) / 255.0
    composited = (out[..., :3].astype(np.float32) / 255.0 * a + bg * (1.0 - a)).astype(np.float32)
    return PreprocessResult(out, composited, notes, method, size, bbox)
