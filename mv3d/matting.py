"""Foreground mattes for input pictures: which pixels are the object, and how much of each.

Four ways to matte an opaque picture, chosen by `matte(rgb, method)`:

- **colour** (`segment_plain_background`): colour distance from the border colour. Fast (well under a
  second) and accurate on a plain backdrop (median mask IoU 0.968 against the true alpha of renders on
  plain, noisy, JPEG-compressed backgrounds); wrong on a photograph's busy background.
- **learned** (`learned_matte`): the ISNet ("DIS", Qin et al., ECCV 2022) foreground model that ships
  inside mv3d (`mv3d/assets/matte/`, 44 MB, run by onnxruntime on the CPU in about 10 s), or rembg /
  transparent-background when the user has installed them *and* their weights are already on disk
  (mv3d never downloads anything).
- **auto** (the default): colour when the image border is plain (`border_spread` under
  `PLAIN_BORDER_DELTA_E`), learned otherwise, or when the colour matte finds nothing.
- **none**: the whole picture is the object.

`matte_notes` checks a finished matte (thin, fragmented, tiny, touching the border) and says what to
try. `unmix` removes the background colour from soft edge pixels (C = a F + (1 - a) B, solved for F).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from render.common import InputError, file_sha256, optional_import

#: `--matte` choices. "rembg" and "transparent-background" are accepted too (the Python API's older names).
MATTE_CHOICES = ("auto", "learned", "color", "none")
#: Border colour spread (CIE76 delta E, 90th percentile) above which the background is called not plain.
PLAIN_BORDER_DELTA_E = 12.0
#: Folder of the shipped learned matte: the ONNX file and `isnet.json` (its source, licence, sha256).
MATTE_ASSETS = Path(__file__).resolve().parent / "assets" / "matte"
#: The description of the shipped weights (file name, sha256, input size, normalisation).
ISNET_INFO = MATTE_ASSETS / "isnet.json"
#: What to try when a matte is unsure; appended to every such warning.
TRY_HINT = (
    "try a photo with the object whole and away from the edges on a plainer background, "
    "--matte color or --matte learned, or an RGBA image with the background already removed"
)


@dataclass
class Matte:
    """An alpha matte and how it was made.

    Attributes:
        alpha: (H, W) float32 in [0, 1].
        method: "border-colour", "isnet", "rembg", "transparent-background" or "none".
        notes: human-readable warnings (background not plain, unsure matte, ...).
        background: (3,) or (H, W, 3) float32 RGB of the background behind each pixel, for `unmix`;
            None when unknown (then edge colours are kept as they are).
    """

    alpha: np.ndarray
    method: str
    notes: list[str] = field(default_factory=list)
    background: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------
# Colour-distance matte (plain backgrounds)
# ------------------------------------------------------------------------------------------------


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(rgb, 0.0, 1.0)).astype(np.float32)


def border_pixels(a: np.ndarray, width: int) -> np.ndarray:
    """The pixels of a strip `width` wide around the image, (P, C)."""
    return np.concatenate(
        [
            a[:width].reshape(-1, a.shape[-1]),
            a[-width:].reshape(-1, a.shape[-1]),
            a[width:-width, :width].reshape(-1, a.shape[-1]),
            a[width:-width, -width:].reshape(-1, a.shape[-1]),
        ]
    )


def border_width(shape: tuple[int, ...]) -> int:
    """Width in pixels of the border strip that samples the background: 1% of the shorter side, >= 2."""
    return max(2, round(0.01 * min(shape[:2])))


def _lab_distance(lab: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Colour distance (..., 3) Lab -> (...) from the background colour, with darkening counting half.

    A soft cast shadow (darker, same hue) should stay background, as the renders the model learnt
    from have none; a pixel lighter than the background, or of another hue, counts in full (a dark
    grey object on white still differs by more than 20).
    """
    d = lab - bg
    d_light = np.where(d[..., 0] < 0, 0.5, 1.0) * d[..., 0]
    return np.sqrt(d_light**2 + d[..., 1] ** 2 + d[..., 2] ** 2)


def border_spread(rgb: np.ndarray) -> float:
    """How much the border's colours vary: the 90th percentile of their delta E from the border median.

    Under `PLAIN_BORDER_DELTA_E` the background is plain (a backdrop, a table top, a gradient with
    noise and JPEG artefacts); a photograph's scene is far above (skimage's chelsea.png: 33).
    """
    border = border_pixels(_rgb_to_lab(rgb), border_width(rgb.shape))
    bg = np.median(border, axis=0)
    return float(np.percentile(_lab_distance(border, bg), 90))


def segment_plain_background(rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Offline matte of one object on a plain background, by colour distance from the border colour.

    Steps: the background colour is the median of a border strip (robust to an object touching the
    edge); every pixel's Lab distance to it (darkening counts half, so soft shadows stay background)
    is compared with a threshold set from the border's own spread (noise, gradients, JPEG artefacts),
    between 10 and 35 delta E; opening and closing
    remove speckles and cracks; connected components at least a tenth the size of the largest are
    kept (an object in a few pieces survives, dust does not); small enclosed holes are filled, large
    holes of exactly the background colour are kept (a mug handle); edge pixels get the coverage
    their colour implies between the background and the nearest interior object colour.

    Args:
        rgb: (H, W, 3) float in [0, 1].

    Returns:
        alpha (H, W) float32 in [0, 1], and warnings.
    """
    from scipy import ndimage

    h, w = rgb.shape[:2]
    notes: list[str] = []
    lab = _rgb_to_lab(rgb)
    border = border_pixels(lab, border_width(rgb.shape))
    bg = np.median(border, axis=0)
    d_border = _lab_distance(border, bg)
    spread = float(np.percentile(d_border, 90))
    if spread > PLAIN_BORDER_DELTA_E:
        notes.append(
            f"the background is not plain (border colours vary by delta E {spread:.0f}, expected under "
            f"{PLAIN_BORDER_DELTA_E:.0f}): the colour matte may be wrong; use --matte learned (or auto), "
            "or give an RGBA image with a transparent background"
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


def unmix(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Foreground colour F from C = a F + (1 - a) B at soft edge pixels (keeps a halo of B off the edge).

    Args:
        rgb: (H, W, 3) float in [0, 1], the picture C.
        alpha: (H, W) float in [0, 1].
        background: B, (3,) one colour or (H, W, 3) per pixel.

    Returns:
        (H, W, 3) float32: F where 0.05 < a < 0.999, C elsewhere.
    """
    a = alpha[..., None]
    soft = (a > 0.05) & (a < 0.999)
    fg = (rgb - (1.0 - a) * background) / np.maximum(a, 1e-3)
    return np.where(soft, np.clip(fg, 0.0, 1.0), rgb).astype(np.float32)


def nearest_background(rgb: np.ndarray, alpha: np.ndarray, clear: float = 0.05) -> np.ndarray | None:
    """(H, W, 3): for each pixel, the colour of the nearest pixel with alpha <= `clear` (the local
    background behind a soft edge on a busy photo); None when no pixel is that clear."""
    from scipy import ndimage

    bg = alpha <= clear
    if not bg.any():
        return None
    _, (iy, ix) = ndimage.distance_transform_edt(~bg, return_indices=True)
    return rgb[iy, ix]


# ------------------------------------------------------------------------------------------------
# Learned matte: the shipped ISNet, or rembg / transparent-background with their weights on disk
# ------------------------------------------------------------------------------------------------


def rembg_model_available() -> str | None:
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


def transparent_background_available() -> bool:
    """Whether transparent-background is importable and its checkpoint is already on disk."""
    try:
        import importlib.util

        if importlib.util.find_spec("transparent_background") is None:
            return False
    except (ImportError, ValueError):
        return False
    home = Path(os.environ.get("TRANSPARENT_BACKGROUND_FILE_PATH", Path.home() / ".transparent-background"))
    return home.is_dir() and any(home.glob("ckpt_*.pth"))


def isnet_info() -> dict:
    """The shipped ISNet's description (`mv3d/assets/matte/isnet.json`): file, sha256, source, licence."""
    return json.loads(ISNET_INFO.read_text())


_SESSIONS: dict[str, object] = {}


def isnet_session():
    """An onnxruntime session of the shipped ISNet (CPU), loaded once per process after its sha256 is
    checked against `isnet.json` (a truncated copy or a Git LFS pointer fails here with one line)."""
    info = isnet_info()
    path = MATTE_ASSETS / info["file"]
    key = str(path)
    if key in _SESSIONS:
        return _SESSIONS[key]
    ort = optional_import("onnxruntime", "matte", "the learned matte")
    if not path.is_file() or file_sha256(path) != info["sha256"]:
        raise InputError(
            f"{path}: the learned matte's weights are missing or damaged (expected sha256 "
            f"{info['sha256'][:12]}...): reinstall mv3d, or rebuild the file with "
            "mv3d/assets/matte/build_isnet.py (needs npm), or use --matte color"
        )
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are not the user's
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # share the CPU as the rest of the process is told to
        opts.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = session
    return session


def isnet_alpha(rgb: np.ndarray) -> np.ndarray:
    """The shipped ISNet's foreground probability for an RGB image.

    The network sees the picture stretched to its fixed input size (1024^2, as DIS trains and infers),
    each channel scaled as (255 x - 128) / 256, i.e. x - 0.5 (DIS: mean 0.5, std 1); its first output
    is already a sigmoid, 1024^2, resized back to the picture's size.

    Args:
        rgb: (H, W, 3) float in [0, 1].

    Returns:
        (H, W) float32 in [0, 1].
    """
    from PIL import Image

    info = isnet_info()
    side = int(info["input_size"])
    session = isnet_session()
    h, w = rgb.shape[:2]
    u8 = Image.fromarray((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")
    x = np.asarray(u8.resize((side, side), Image.Resampling.BILINEAR), np.float32)
    x = (x - float(info["mean"])) / float(info["std"])
    inp = session.get_inputs()[0].name
    out = session.run([session.get_outputs()[0].name], {inp: x.transpose(2, 0, 1)[None]})[0][0, 0]
    prob = Image.fromarray(np.clip(out, 0.0, 1.0).astype(np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(prob, np.float32), 0.0, 1.0)


def clean_alpha(alpha: np.ndarray) -> np.ndarray:
    """Keep one object of a learned matte: its main piece and the pieces next to it.

    A salient-object network marks everything salient: on skimage's rocket.jpg the rocket and the launch
    towers on either side. The main piece (alpha > 0.5) is the one with the largest area / (1 + (d /
    0.1)^2), d the distance from the image centre to its nearest pixel in units of the side (a photo of
    an object centres it); pieces of at least 2% of the matte within 3% of the side of it are kept (a
    handle, a wheel), the rest with their soft rims set to 0. (H, W) -> (H, W) float32.
    """
    from scipy import ndimage

    solid = alpha > 0.5
    h, w = solid.shape
    labels, n = ndimage.label(solid)
    if n <= 1:
        return alpha.astype(np.float32)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(solid, labels, index=index)
    big = index[sizes >= 0.02 * sizes.sum()]
    if big.size == 0:
        # Dust only (a page of text: hundreds of letters, none 2% of the matte): no piece stands out as
        # the object, so there is nothing to choose between; `matte_notes` then says it is tiny or thin.
        return alpha.astype(np.float32)
    main = big[0]
    if big.size > 1:
        yy, xx = np.mgrid[0:h, 0:w]
        centre = np.hypot((yy + 0.5) / h - 0.5, (xx + 0.5) / w - 0.5)
        dist = np.asarray(ndimage.minimum(centre, labels, big))
        main = big[int(np.argmax(sizes[big - 1] / (1.0 + (dist / 0.1) ** 2)))]
    near = ndimage.binary_dilation(labels == main, iterations=max(1, round(0.03 * min(h, w))))
    keep = [i for i in big if i == main or np.any(near & (labels == i))]
    drop = solid & ~np.isin(labels, keep)
    # A dropped piece's soft rim belongs to it: clear everything within 2 px of it that is not kept.
    rim = ndimage.binary_dilation(drop, iterations=2) & ~(solid & ~drop)
    return np.where(rim, 0.0, alpha).astype(np.float32)


def learned_matte(rgb: np.ndarray, prefer_installed: bool = True) -> Matte:
    """A learned foreground matte: rembg or transparent-background if installed with weights on disk
    (`prefer_installed`), else the shipped ISNet. rgb (H, W, 3) float in [0, 1]."""
    from PIL import Image

    if prefer_installed:
        u8 = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
        rembg_model = rembg_model_available()
        if rembg_model is not None:
            import rembg

            out = rembg.remove(u8, session=rembg.new_session(rembg_model))
            return Matte(np.asarray(out.convert("RGBA"), np.float32)[..., 3] / 255.0, "rembg")
        if transparent_background_available():
            from transparent_background import Remover

            out = Remover().process(u8, type="rgba")
            a = np.asarray(out.convert("RGBA"), np.float32)[..., 3] / 255.0
            return Matte(a, "transparent-background")
    # The network's output is a probability, hazy (0.1-0.4) over busy background it half believes in;
    # stretching [0.25, 0.75] to [0, 1] clears that haze and keeps the 0.5 level (the mask) in place.
    alpha = clean_alpha(np.clip((isnet_alpha(rgb) - 0.25) / 0.5, 0.0, 1.0))
    if alpha.max() <= 0.5:
        raise InputError("no object found: the learned matte sees no foreground object")
    return Matte(alpha, "isnet", background=nearest_background(rgb, alpha))


# ------------------------------------------------------------------------------------------------
# Choosing a matte, and checking it
# ------------------------------------------------------------------------------------------------


def matte_notes(alpha: np.ndarray) -> list[str]:
    """A warning (one line, or none) for a matte that may be wrong, saying why and what to try.

    Checks, on the solid part (alpha > 0.5): it touches the image border (the object may be cut off, or
    the background taken for object); it is tiny (under 0.5% of the picture); it is fragmented (three or
    more pieces of at least 2% of it, the largest under 80%: background kept, or the object broken); it is
    thin (an erosion by 1% of the shorter side removes over 70% of it: a sliver, not a body).
    """
    from scipy import ndimage

    solid = alpha > 0.5
    h, w = solid.shape
    why: list[str] = []
    area = int(solid.sum())
    if area == 0:
        return []
    if solid[0].any() or solid[-1].any() or solid[:, 0].any() or solid[:, -1].any():
        why.append("the object touches the image border (cut off, or background kept?)")
    if area < 0.005 * h * w:
        why.append(f"it is tiny ({100 * area / (h * w):.2f}% of the picture)")
    labels, n = ndimage.label(solid)
    if n > 1:
        sizes = ndimage.sum_labels(solid, labels, index=np.arange(1, n + 1))
        largest = float(sizes.max())
        n = int((sizes >= 0.02 * area).sum())  # an object in two parts (a cup and its saucer) is fine
        if n >= 3 and largest < 0.8 * area:
            why.append(f"it is fragmented ({n} pieces, the largest {100 * largest / area:.0f}% of it)")
    r = max(1, round(0.01 * min(h, w)))
    core = ndimage.binary_erosion(solid, iterations=r, border_value=1)
    if core.sum() < 0.3 * area:
        why.append(f"it is thin ({100 * core.sum() / area:.0f}% of it survives a {r}-pixel erosion)")
    if not why:
        return []
    return [f"the matte may be wrong: {'; '.join(why)}; {TRY_HINT}"]


def check_method(method: str) -> str:
    """The canonical name of a matte method ("colour" and "border-colour" mean "color"), or `InputError`
    naming the setting `matte` (`mv3d.generate.generate`'s argument; the CLI shows `--matte`)."""
    method = {"colour": "color", "border-colour": "color"}.get(method, method)
    if method not in (*MATTE_CHOICES, "rembg", "transparent-background"):
        raise InputError(f"matte {method!r}: expected one of {', '.join(MATTE_CHOICES)}", field="matte")
    return method


def matte(rgb: np.ndarray, method: str = "auto") -> Matte:
    """Alpha matte of an opaque picture.

    Args:
        rgb: (H, W, 3) float in [0, 1].
        method: "auto" (colour on a plain border, else learned), "learned", "color" (or "colour",
            "border-colour"), "none" (the whole picture), "rembg", "transparent-background".

    Returns:
        `Matte` with alpha (H, W) float32 and the method used.
    """
    method = check_method(method)
    if method == "none":
        return Matte(np.ones(rgb.shape[:2], np.float32), "none")
    if method == "rembg":
        if rembg_model_available() is None:
            raise InputError(
                "matte rembg: rembg or its model is not installed locally (never downloaded)", field="matte"
            )
        return learned_matte(rgb)
    if method == "transparent-background":
        if not transparent_background_available():
            raise InputError(
                "matte transparent-background: the package or its checkpoint is not installed locally",
                field="matte",
            )
        return learned_matte(rgb)
    bg = np.median(border_pixels(rgb, border_width(rgb.shape)), axis=0).astype(np.float32)
    if method in ("auto", "learned"):
        # The network sees an object even in a blank picture (a flat grey gives a confident blob).
        lab = _rgb_to_lab(rgb)
        if float(np.percentile(_lab_distance(lab, np.median(lab.reshape(-1, 3), axis=0)), 99.9)) < 3.0:
            raise InputError(
                "no object found: the image is one plain colour, or what differs from it covers under "
                "0.1% of the picture (expected an object; crop the image around it)"
            )
    if method == "learned":
        return learned_matte(rgb)
    if method == "color":
        alpha, notes = segment_plain_background(rgb)
        return Matte(alpha, "border-colour", notes, bg)
    # auto: the colour matte where it is reliable (a plain border), the learned one everywhere else.
    spread = border_spread(rgb)
    if spread <= PLAIN_BORDER_DELTA_E:
        try:
            alpha, notes = segment_plain_background(rgb)
            return Matte(alpha, "border-colour", notes, bg)
        except InputError:
            pass  # e.g. a white object on white: nothing differs in colour, the learned matte may see it
    return learned_matte(rgb)
