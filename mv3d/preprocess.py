"""Input preprocessing: any reasonable picture of one object -> a framed square RGBA image.

The video prior was trained on orbit renders: an object whose largest extent is 1, centred, seen by a
33.8 degree camera at the default distance (render/cameras.py), composited on white. A user's picture
is brought to the same framing in four steps:

1. **Decode** robustly (`load_image`): 16-bit, palette + tRNS, grayscale, CMYK, WebP, EXIF-rotated and
   very large files; bad files raise `InputError` with one line.
2. **Matte** (`matte`): an RGBA file's own alpha; otherwise rembg or transparent-background when the
   user has installed them *and* their weights are already on disk (never downloaded); otherwise an
   offline segmentation of an object on a plain background (`segment_plain_background`).
3. **Frame**: crop to the object's bounding box and centre it in a square so that its larger side
   fills `1 - 2 * margin` of the square, as a default `mv3d render` view does.
4. **Resize** with Lanczos on premultiplied alpha (no dark or light fringes) and composite on the
   training background.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.common import InputError

#: Smallest accepted image side in pixels: below this there is no object to see.
MIN_IMAGE_SIDE = 16
#: Largest accepted image, in pixels, read from the file header before anything is decoded. 20000^2 =
#: 400 megapixels covers honest photos, scans and renders (a 200 MP phone sensor, a 12000^2 render)
#: while a decompression bomb (a tiny file claiming e.g. 100000^2 pixels) is refused before it can
#: allocate gigabytes. Pillow's own guard (89 MP warning, 179 MP error) would reject a 12000^2 render.
MAX_IMAGE_PIXELS = 20000 * 20000
#: Working resolution for matting: images are reduced (JPEG: at decode time) to at most this many
#: pixels on the longer side (or twice the output resolution, if larger) before anything else.
WORK_SIDE = 1024
#: Margin measured on `mv3d render` default views (fast renderer, azimuth 0, elevation 10, 24
#: procedural objects): the larger side of an object's bounding box fills 0.31-0.59 of the image,
#: median 0.535, upper quartile 0.55 (objects seen end-on fill less). A photo usually shows an object's
#: largest side, so the input is framed at the upper quartile: fill 0.55 = 1 - 2 * 0.225. The bbox
#: centre of the renders is within 0.01 of the image centre (see tests/test_preprocess.py).
DEFAULT_MARGIN = 0.225
#: Alpha (of 1) above which a pixel counts as object for the bounding box used in framing.
BBOX_ALPHA = 0.5
#: Border colour spread (CIE76 delta E, 90th percentile) above which the background is called not plain.
PLAIN_BORDER_DELTA_E = 12.0

_EXIF_ORIENTATION = 0x0112


@dataclass
class PreprocessResult:
    """A framed input image.

    Attributes:
        rgba: (R, R, 4) uint8, straight alpha: the object centred with the default render framing.
        composited: (R, R, 3) float32 in [0, 1]: `rgba` composited on `background`.
        warnings: human-readable notes (background not plain, object touching the border, ...).
        matte_method: "alpha" (the file's own), "rembg", "transparent-background" or "border-colour".
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


def load_image(source, max_side: int = WORK_SIDE) -> tuple[np.ndarray, bool, tuple[int, int]]:
    """Decode an image file or PIL image to a working-size float RGBA array.

    Args:
        source: a path or a `PIL.Image.Image`.
        max_side: the longer side is reduced to at most about this many pixels (never enlarged). JPEGs
            are reduced while decoding (`Image.draft`, DCT scaling), other formats right after.

    Returns:
        rgba: (H, W, 4) float32 in [0, 1], straight alpha (opaque for images without alpha), with the
            EXIF orientation applied.
        has_alpha: whether the file carries transparency (an alpha channel or a palette tRNS).
        size: (width, height) of the full image after EXIF rotation.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        im, where = source, "image"
    else:
        where = str(source)
        im = _open_checked(Path(source))
    w, h = im.size
    _check_size(w, h, where)
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
    if im.mode in ("P", "1", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    factor = max(im.size) // max_side
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
    rgba, has_alpha = _to_float_rgba(im, sixteen_bit)
    return rgba, has_alpha, (w, h)


# ------------------------------------------------------------------------------------------------
# 2. Matting
# ------------------------------------------------------------------------------------------------


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0.0, 1.0)).astype(np.float32)


def _border(a: np.ndarray, width: int) -> np.ndarray:
    """The pixels of a strip `width` wide around the image, (P, C)."""
    return np.concatenate(
        [
            a[:width].reshape(-1, a.shape[-1]),
            a[-width:].reshape(-1, a.shape[-1]),
            a[width:-width, :width].reshape(-1, a.shape[-1]),
            a[width:-width, -width:].reshape(-1, a.shape[-1]),
        ]
    )


def _lab_distance(lab: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Colour distance (..., 3) Lab -> (...) from the background colour, with darkening counting half.

    A soft cast shadow (darker, same hue) should stay background, as the renders the model learnt
    from have none; a pixel lighter than the background, or of another hue, counts in full (a dark
    grey object on white still differs by more than 20).
    """
    d = lab - bg
    d_light = np.where(d[..., 0] < 0, 0.5, 1.0) * d[..., 0]
    return np.sqrt(d_light**2 + d[..., 1] ** 2 + d[..., 2] ** 2)


def segment_plain_background(rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Offline matte of one object on a plain background, by colour distance from the border colour.

    Steps: the background colour is the median of a border strip (robust to an object touching the
    edge); every pixel's Lab distance to it (darkening counts half, so soft shadows stay background)
    is compared with a threshold set from the border's own spread (noise, gradients, JPEG artefacts),
    between 10 and 35 delta E; opening and closing
    remove speckles and cracks; connected components at least a tenth the size of the largest are
    kept (an object in a few pieces survives, dust does not); small enclosed holes are filled, large
    holes of exactly the background colour are kept (a mug handle); edge pixels get the coverage
    their colour implies between the background and the nearest interior object colour, and their
    colours are un-mixed from the background.

    Args:
        rgb: (H, W, 3) float in [0, 1].

    Returns:
        alpha (H, W) float32 in [0, 1], and warnings.
    """
    from scipy import ndimage

    h, w = rgb.shape[:2]
    notes: list[str] = []
    lab = _rgb_to_lab(rgb)
    bw = max(2, round(0.01 * min(h, w)))
    border = _border(lab, bw)
    bg = np.median(border, axis=0)
    d_border = _lab_distance(border, bg)
    spread = float(np.percentile(d_border, 90))
    if spread > PLAIN_BORDER_DELTA_E:
        notes.append(
            f"the background is not plain (border colours vary by delta E {spread:.0f}, expected under "
            f"{PLAIN_BORDER_DELTA_E:.0f}): the automatic matte may be wrong; give an RGBA image with a "
            "transparent background, or install rembg with its model for photos"
        )
    # The threshold follows the border's own noise, within [10, 35]: a busy background cannot push it
    # so high that the object vanishes (the result is then a best effort, with the warning above).
    thresh = min(35.0, max(10.0, 2.5 * float(np.percentile(d_border, 95))))
    dist = _lab_distance(lab, bg)
    mask = dist > thresh
    r = max(1, round(0.004 * min(h, w)))
    ball = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_opening(mask, ball, iterations=r)
    mask = ndimage.binary_closing(mask, ball, iterations=r, border_value=0)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError(
            "no object found: the image is one plain colour (expected an object on a plain background)"
        )
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    mask = np.isin(labels, keep)
    if mask.sum() < max(16, 1e-4 * h * w):
        busy = " (and the background is not plain)" if notes else ""
        raise InputError(
            f"no object found: nothing differs from the background colour enough to segment{busy}"
        )
    # Fill enclosed holes, except big holes that are exactly background: those are real see-through holes.
    holes = ndimage.binary_fill_holes(mask) & ~mask
    hl, hn = ndimage.label(holes)
    if hn:
        area = mask.sum()
        hsizes = ndimage.sum_labels(holes, hl, index=np.arange(1, hn + 1))
        hdist = ndimage.median(dist, hl, index=np.arange(1, hn + 1))
        fill = np.flatnonzero((hsizes < 0.02 * area) | (np.asarray(hdist) > 0.5 * thresh)) + 1
        mask |= np.isin(hl, fill)
    if mask.mean() > 0.95:
        notes.append("the object fills the whole image: no background was found to remove")
    # Soft edge: inside the eroded mask alpha is 1, outside the dilated mask 0. In the band between, a
    # pixel mixes the object colour next to it with the background: its coverage is its distance from
    # the background over that of the nearest interior pixel (the colour line), not a fixed threshold,
    # which would count every edge pixel more than t / (object contrast) covered and grow the matte.
    inner = ndimage.binary_erosion(mask, ball, iterations=1, border_value=1)
    outer = ndimage.binary_dilation(mask, ball, iterations=1)
    ramp = np.clip((dist - 0.5 * thresh) / thresh, 0.0, 1.0)
    if inner.any():
        _, (iy, ix) = ndimage.distance_transform_edt(~inner, return_indices=True)
        ref = dist[iy, ix]
        ramp = np.where(ref > 2.0 * thresh, np.clip(dist / np.maximum(ref, 1e-6), 0.0, 1.0), ramp)
    alpha = np.where(inner, 1.0, np.where(outer, ramp, 0.0)).astype(np.float32)
    return alpha, notes


def _unmix_background(rgb: np.ndarray, alpha: np.ndarray, bg_rgb: np.ndarray) -> np.ndarray:
    """Foreground colour F from C = a F + (1 - a) B at soft edge pixels (keeps a grey halo off white)."""
    a = alpha[..., None]
    soft = (a > 0.05) & (a < 0.999)
    fg = (rgb - (1.0 - a) * bg_rgb) / np.maximum(a, 1e-3)
    return np.where(soft, np.clip(fg, 0.0, 1.0), rgb).astype(np.float32)


def _rembg_model_available() -> str | None:
    """Name of a rembg model already on disk (rembg would download it otherwise), or None."""
    try:
        import importlib.util

        if importlib.util.find_spec("rembg") is None:
            return None
    except (ImportError, ValueError):
        return None
    home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net"))
    for name in ("isnet-general-use", "u2net", "birefnet-general", "u2netp"):
        if (home / f"{name}.onnx").is_file():
            return name
    return None


def _transparent_background_available() -> bool:
    """Whether transparent-background is importable and its checkpoint is already on disk."""
    try:
        import importlib.util

        if importlib.util.find_spec("transparent_background") is None:
            return False
    except (ImportError, ValueError):
        return False
    home = Path(os.environ.get("TRANSPARENT_BACKGROUND_FILE_PATH", Path.home() / ".transparent-background"))
    return home.is_dir() and any(home.glob("ckpt_*.pth"))


def matte(rgb: np.ndarray, method: str = "auto") -> tuple[np.ndarray, str, list[str]]:
    """Alpha matte of an opaque image (H, W, 3) float in [0, 1] -> (alpha (H, W), method used, warnings).

    `method` is "auto" (a learned remover whose weights are on disk, else the border-colour fallback),
    "rembg", "transparent-background" or "border-colour".
    """
    from PIL import Image

    methods = ("auto", "rembg", "transparent-background", "border-colour")
    if method not in methods:
        raise InputError(f"matte method {method!r}: expected one of {', '.join(methods)}")
    u8 = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    rembg_model = _rembg_model_available() if method in ("auto", "rembg") else None
    if rembg_model is not None:
        import rembg

        out = rembg.remove(u8, session=rembg.new_session(rembg_model))
        return np.asarray(out.convert("RGBA"), np.float32)[..., 3] / 255.0, "rembg", []
    if method in ("auto", "transparent-background") and _transparent_background_available():
        from transparent_background import Remover

        out = Remover().process(u8, type="rgba")
        return np.asarray(out.convert("RGBA"), np.float32)[..., 3] / 255.0, "transparent-background", []
    if method in ("rembg", "transparent-background"):
        raise InputError(f"matte method {method!r}: the package or its weights are not installed locally")
    alpha, notes = segment_plain_background(rgb)
    return alpha, "border-colour", notes


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
        matte_method: for opaque images: "auto", "rembg", "transparent-background", "border-colour".

    Returns:
        `PreprocessResult` with rgba (R, R, 4) uint8 and composited (R, R, 3) float32.
    """
    where = _describe(source)
    rgba, has_alpha, size = load_image(source, max(WORK_SIDE, 2 * int(resolution)))
    notes: list[str] = []
    alpha = rgba[..., 3]
    if has_alpha and alpha.min() < 254.5 / 255.0:
        if alpha.max() <= 0.5 / 255.0:
            raise InputError(f"{where}: no object found: the image is fully transparent")
        method = "alpha"
    else:
        try:
            alpha, method, notes = matte(rgba[..., :3], matte_method)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        if method == "border-colour":
            bg_rgb = np.median(_border(rgba[..., :3], max(2, round(0.01 * min(alpha.shape)))), axis=0)
            rgba = np.concatenate([_unmix_background(rgba[..., :3], alpha, bg_rgb), alpha[..., None]], -1)
        else:
            rgba = np.concatenate([rgba[..., :3], alpha[..., None]], -1)
    bbox = object_bbox(rgba[..., 3])
    if bbox is None:
        raise InputError(f"{where}: no object found")
    h, w = alpha.shape
    x0, y0, x1, y1 = bbox
    if x0 == 0 or y0 == 0 or x1 == w or y1 == h:
        notes.append("the object touches the image border: it may be cut off")
    framed = frame_object(rgba, int(resolution), margin, bbox)
    out = to_uint8(framed)
    bg = np.asarray(background, dtype=np.float32)
    if bg.shape != (3,) or np.any(bg < 0) or np.any(bg > 1):
        raise InputError(f"background {background}: expected three numbers in [0, 1]")
    a = out[..., 3:4].astype(np.float32) / 255.0
    composited = (out[..., :3].astype(np.float32) / 255.0 * a + bg * (1.0 - a)).astype(np.float32)
    return PreprocessResult(out, composited, notes, method, size, bbox)
