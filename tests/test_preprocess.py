"""Input preprocessing: odd but valid images work, bad ones give one clear InputError, framing is right."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mv3d.preprocess import (
    DEFAULT_MARGIN,
    MIN_IMAGE_SIDE,
    frame_object,
    measure_framing,
    object_bbox,
    preprocess_image,
)
from render.common import InputError

RES = 64


def _png_bytes(
    w: int, h: int, bit_depth: int, color_type: int, raw: bytes, trns: bytes | None = None
) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB, nor a 16-bit colour key, nor a lying header)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + (chunk(b"tRNS", trns) if trns is not None else b"")
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _disk_rgba(h: int = 96, w: int = 128, cx: float = 40, cy: float = 50, r: float = 20, color=(200, 40, 30)):
    """(H, W, 4) uint8: an anti-aliased disk; transparent pixels are black (the fringe trap)."""
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2)
    a = np.clip(r - d + 0.5, 0.0, 1.0)
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = np.where(a[..., None] > 0, np.array(color, np.uint8), 0)
    out[..., 3] = (a * 255 + 0.5).astype(np.uint8)
    return out


def _on_background(rgba: np.ndarray, bg=(235, 235, 235)) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + np.array(bg) * (1 - a) + 0.5).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    return float((a & b).sum() / max(1, (a | b).sum()))


def _check_framed(res, margin=DEFAULT_MARGIN):
    assert res.rgba.shape == (RES, RES, 4) and res.rgba.dtype == np.uint8
    assert res.composited.shape == (RES, RES, 3) and res.composited.dtype == np.float32
    fill, cx, cy = measure_framing(res.rgba[..., 3] / 255.0)
    assert abs(fill - (1 - 2 * margin)) < 3 / RES
    assert abs(cx - 0.5) < 2 / RES and abs(cy - 0.5) < 2 / RES


def test_rgba_input_uses_alpha_and_frames(tmp_path: Path):
    p = tmp_path / "obj.png"
    Image.fromarray(_disk_rgba(), "RGBA").save(p)
    res = preprocess_image(p, RES)
    assert res.matte_method == "alpha" and res.warnings == []
    _check_framed(res)
    # Composited on white: corners white, centre the object colour.
    assert np.allclose(res.composited[0, 0], 1.0)
    assert np.allclose(res.composited[RES // 2, RES // 2], np.array([200, 40, 30]) / 255, atol=0.02)


def test_premultiplied_resize_has_no_dark_fringe(tmp_path: Path):
    big = _disk_rgba(400, 400, 200, 200, 150, color=(250, 250, 250))  # white disk, black under alpha 0
    res = preprocess_image(Image.fromarray(big, "RGBA"), RES)
    edge = (res.rgba[..., 3] > 10) & (res.rgba[..., 3] < 245)
    assert edge.sum() > 10
    # A straight-alpha resize would drag the black of transparent pixels into the edge colours.
    assert res.rgba[..., :3][edge].min() > 230
    assert res.composited.min() > 0.95


def test_rgb_on_plain_background_is_matted(tmp_path: Path):
    rgba = _disk_rgba(120, 160, 70, 60, 30)
    rgba[20:40, 100:140] = (30, 60, 180, 255)  # a second, separate part of the object
    p = tmp_path / "photo.jpg"
    Image.fromarray(_on_background(rgba)).save(p, quality=92)
    res = preprocess_image(p, RES)
    ref = preprocess_image(Image.fromarray(rgba, "RGBA"), RES)
    assert res.matte_method == "border-colour"
    assert res.warnings == []
    assert _iou(res.rgba[..., 3], ref.rgba[..., 3]) > 0.9
    # Background colour replaced by the training background.
    assert np.allclose(res.composited[1, 1], 1.0, atol=0.01)


def test_soft_shadow_stays_background(tmp_path: Path):
    rgba = _disk_rgba(120, 160, 80, 50, 25)
    img = _on_background(rgba).astype(np.float32)
    yy, xx = np.mgrid[0:120, 0:160]
    shadow = (((xx - 80) / 40) ** 2 + ((yy - 90) / 8) ** 2 < 1) & (rgba[..., 3] == 0)
    img[shadow] *= 0.85
    res = preprocess_image(Image.fromarray(img.astype(np.uint8)), RES)
    ref = preprocess_image(Image.fromarray(rgba, "RGBA"), RES)
    assert _iou(res.rgba[..., 3], ref.rgba[..., 3]) > 0.9


def test_busy_background_goes_to_the_learned_matte():
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 255, (96, 96, 3))).astype(np.uint8)
    img[30:60, 30:60] = (250, 0, 0)
    res = preprocess_image(Image.fromarray(img), RES)
    assert res.matte_method == "isnet"
    x0, y0, x1, y1 = res.bbox
    assert abs(x0 - 30) <= 3 and abs(y0 - 30) <= 3 and abs(x1 - 60) <= 3 and abs(y1 - 60) <= 3, res.bbox
    # forced, the colour matte says the background is not plain and what to use instead
    col = preprocess_image(Image.fromarray(img), RES, matte_method="color")
    assert col.matte_method == "border-colour"
    assert any("not plain" in w and "--matte learned" in w for w in col.warnings)


def test_object_touching_border_warns():
    img = np.full((80, 80, 3), 240, np.uint8)
    img[20:80, 30:50] = (20, 120, 20)
    res = preprocess_image(Image.fromarray(img), RES)
    assert any("border" in w for w in res.warnings)


@pytest.mark.parametrize("kind", ["I;16", "RGB48", "RGBA64", "P+tRNS", "L", "LA", "CMYK", "WEBP", "1"])
def test_odd_but_valid_formats(tmp_path: Path, kind: str):
    disk = _disk_rgba(64, 80, 40, 30, 14)
    solid = disk[..., 3] > 127
    p = tmp_path / "img.png"
    if kind == "I;16":
        g = np.full((64, 80), 60000, np.uint16)
        g[solid] = 9000
        Image.fromarray(g).save(p)
    elif kind in ("RGB48", "RGBA64"):
        ch = 3 if kind == "RGB48" else 4
        a = np.full((64, 80, ch), 60000, ">u2")
        a[solid, :3] = (50000, 5000, 5000)
        if ch == 4:
            a[..., 3] = np.where(solid, 65535, 0)
        raw = b"".join(b"\x00" + a[y].tobytes() for y in range(64))
        p.write_bytes(_png_bytes(80, 64, 16, 2 if ch == 3 else 6, raw))
    elif kind == "P+tRNS":
        idx = np.where(solid, 1, 0).astype(np.uint8)
        im = Image.fromarray(idx, "P")
        im.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
        im.info["transparency"] = 0
        im.save(p, transparency=0)
    elif kind == "L":
        Image.fromarray(np.where(solid, 40, 230).astype(np.uint8), "L").save(p)
    elif kind == "LA":
        la = np.stack([np.full((64, 80), 90, np.uint8), disk[..., 3]], -1)
        Image.fromarray(la, "LA").save(p)
    elif kind == "CMYK":
        p = tmp_path / "img.jpg"
        Image.fromarray(_on_background(disk)).convert("CMYK").save(p, quality=95)
    elif kind == "WEBP":
        p = tmp_path / "img.webp"
        Image.fromarray(disk, "RGBA").save(p, lossless=True)
    elif kind == "1":
        Image.fromarray(~solid).convert("1").save(p)
    res = preprocess_image(p, RES)
    expect_alpha = kind in ("RGBA64", "P+tRNS", "LA", "WEBP")
    assert res.matte_method == ("alpha" if expect_alpha else "border-colour")
    _check_framed(res)
    # Same shape as the disk framed directly.
    ref = preprocess_image(Image.fromarray(disk, "RGBA"), RES)
    assert _iou(res.rgba[..., 3], ref.rgba[..., 3]) > 0.85
    if kind == "I;16":  # 16-bit values are scaled, not clipped to 255 (which would make everything white)
        assert res.rgba[RES // 2, RES // 2, 0] < 60


def test_exif_rotation_is_honoured(tmp_path: Path):
    # Stored landscape 80x40 with the object at the left; orientation 6 = rotate 90 degrees clockwise
    # to display, so the displayed image is portrait 40x80 with the object at the top.
    img = np.full((40, 80, 3), 235, np.uint8)
    img[10:30, 5:25] = (20, 20, 200)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif, quality=95)
    res = preprocess_image(p, RES)
    assert res.source_size == (40, 80)
    x0, y0, x1, y1 = res.bbox
    assert y1 <= 30 and x0 >= 5  # at the top of the portrait image


def test_very_large_jpeg_is_reduced_while_decoding(tmp_path: Path):
    im = Image.new("RGB", (12000, 12000), (240, 240, 240))
    im.paste(Image.new("RGB", (3000, 5000), (30, 90, 200)), (4000, 3000))
    p = tmp_path / "huge.jpg"
    im.save(p, quality=70)
    del im
    res = preprocess_image(p, RES)
    assert res.source_size == (12000, 12000)
    assert res.bbox[2] <= 1536  # matted at the reduced working size, not at 12000 px
    _check_framed(res)


@pytest.mark.slow
def test_large_png_passes_pillow_bomb_guard(tmp_path: Path):
    # 10000^2 = 100 MP is above Pillow's 89 MP warning level but an honest file.
    im = Image.new("L", (10000, 10000), 230)
    im.paste(Image.new("L", (2000, 3000), 20), (3000, 3000))
    p = tmp_path / "big.png"
    im.save(p, compress_level=1)
    del im
    res = preprocess_image(p, RES)
    assert res.source_size == (10000, 10000)
    _check_framed(res)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_bytes(100000, 100000, 8, 0, zlib.compress(b"\x00" * 1000)))
    with pytest.raises(InputError, match="megapixels"):
        preprocess_image(p, RES)


def _bad(tmp_path: Path, name: str) -> Path:
    if name == "missing":
        return tmp_path / "nope.png"
    if name == "folder":
        (tmp_path / "dir.png").mkdir()
        return tmp_path / "dir.png"
    p = tmp_path / f"{name}.png"
    if name == "empty":
        p.write_bytes(b"")
    elif name == "text":
        p.write_text("this is not an image\n")
    elif name == "truncated":
        buf = io.BytesIO()
        Image.fromarray(_on_background(_disk_rgba())).save(buf, "PNG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif name == "tiny":
        Image.new("RGB", (1, 1), (0, 0, 0)).save(p)
    elif name == "transparent":
        Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(p)
    elif name == "uniform":
        Image.new("RGB", (64, 64), (120, 130, 140)).save(p)
    return p


@pytest.mark.parametrize(
    "name,expect",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("empty", "empty"),
        ("text", "not an image"),
        ("truncated", "truncated"),
        ("tiny", f"at least {MIN_IMAGE_SIDE} pixels"),
        ("transparent", "fully transparent"),
        ("uniform", "no object"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, name: str, expect: str):
    p = _bad(tmp_path, name)
    with pytest.raises(InputError) as info:
        preprocess_image(p, RES)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg
    assert str(p) in msg


def test_frame_object_margin_and_validation():
    rgba = _disk_rgba(50, 50, 25, 25, 20).astype(np.float32) / 255
    out = frame_object(rgba, 40, margin=0.0)
    fill, _, _ = measure_framing(out[..., 3])
    assert abs(fill - 1.0) < 0.06
    with pytest.raises(InputError):
        frame_object(rgba, 40, margin=0.5)


def test_object_bbox_ends_are_exclusive_and_framing_is_measured_exactly():
    alpha = np.zeros((40, 50), np.float32)
    alpha[5:17, 3:30] = 1.0
    assert object_bbox(alpha) == (3, 5, 30, 17)
    centred = np.zeros((40, 40), np.float32)
    centred[10:30, 5:35] = 0.8  # 30 x 20 pixels in the middle
    assert measure_framing(centred) == (0.75, 0.5, 0.5)


@pytest.mark.parametrize("shape", [(60, 200), (200, 60)])
@pytest.mark.parametrize("edge", ["top", "bottom", "left", "right"])
def test_an_object_at_any_edge_of_a_wide_or_tall_picture_is_framed_centred(shape, edge):
    """The square around the object reaches past the picture: it is padded (transparent) on every side."""
    h, w = shape
    rgba = np.zeros((h, w, 4), np.float32)
    rows = {"top": slice(0, 20), "bottom": slice(h - 20, h)}.get(edge, slice(h // 2 - 10, h // 2 + 10))
    cols = {"left": slice(0, 16), "right": slice(w - 16, w)}.get(edge, slice(w // 2 - 8, w // 2 + 8))
    rgba[rows, cols] = (0.8, 0.2, 0.1, 1.0)  # 16 x 20 pixels
    out = frame_object(rgba, RES)
    fill, cx, cy = measure_framing(out[..., 3])
    assert abs(fill - (1 - 2 * DEFAULT_MARGIN)) < 2 / RES
    assert abs(cx - 0.5) < 1 / RES and abs(cy - 0.5) < 1 / RES
    assert out[0, :, 3].max() == 0 and out[-1, :, 3].max() == 0  # nothing smeared to the frame's edges


def test_margin_matches_default_render_framing():
    """Renders at the default framing fill about what preprocessing produces, centred."""
    import os

    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from render.cameras import static_orbit
    from render.meshes import LoadedMesh, normalize_scene
    from render.procedural import procedural_object
    from render.renderers import get_renderer

    fills, centres = [], []
    with get_renderer("fast") as renderer:
        for i in range(8):
            scene, s2w = normalize_scene(procedural_object(0, i))
            rgba = renderer.render(LoadedMesh(scene, s2w, f"procedural {i}"), static_orbit(1), 96).rgba[0]
            fill, cx, cy = measure_framing(rgba[..., 3] / 255.0)
            fills.append(fill)
            centres.append((cx, cy))
            # A render fed back through preprocessing keeps its centre and changes size only a little.
            res = preprocess_image(Image.fromarray(rgba, "RGBA"), 96)
            assert abs(measure_framing(res.rgba[..., 3] / 255.0)[0] - (1 - 2 * DEFAULT_MARGIN)) < 0.03
    assert abs(float(np.percentile(fills, 75)) - (1 - 2 * DEFAULT_MARGIN)) < 0.05
    assert np.abs(np.asarray(centres) - 0.5).max() < 0.05


def test_offline_matte_matches_true_alpha_of_renders():
    """Renders composited on plain backgrounds (gradient, noise, JPEG) are matted close to their alpha."""
    import os

    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from mv3d.matting import segment_plain_background
    from render.cameras import static_orbit
    from render.meshes import LoadedMesh, normalize_scene
    from render.procedural import procedural_object
    from render.renderers import get_renderer

    rng = np.random.default_rng(0)
    ious = []
    with get_renderer("fast") as renderer:
        for i in range(3):
            scene, s2w = normalize_scene(procedural_object(3, i))
            rgba = renderer.render(LoadedMesh(scene, s2w, f"procedural {i}"), static_orbit(1), 256).rgba[0]
            a = rgba[..., 3:] / 255.0
            for bg in ((245, 245, 245), (128, 128, 128), (170, 200, 230)):
                ramp = 1 + 0.04 * np.linspace(-1, 1, 256)[:, None, None]  # a studio backdrop's gradient
                img = rgba[..., :3] * a + np.array(bg) * ramp * (1 - a) + rng.normal(0, 2, (256, 256, 3))
                buf = io.BytesIO()
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
                rgb = np.asarray(Image.open(buf), np.float32) / 255.0
                alpha, notes = segment_plain_background(rgb)
                assert notes == []
                ious.append(_iou((alpha * 255).astype(np.uint8), rgba[..., 3]))
    # JPEG's half-resolution chroma smears edge colours by a pixel: the error is mostly that ring.
    assert np.median(ious) > 0.94 and min(ious) > 0.88, ious


def _icc_red_blue_swapped() -> bytes:
    """A minimal ICC v2 RGB display profile (matrix + gamma 2.2) whose red and blue primaries are sRGB's
    swapped: a pixel stored as pure red means pure blue. Written by hand, as Pillow makes only sRGB."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc_text = b"red-blue swapped\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 79),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)),  # sRGB's blue (D50)
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red (D50)
        (b"rTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"),  # gamma 563/256 = 2.2
    ]
    tags += [(b"gTRC", tags[-1][1]), (b"bTRC", tags[-1][1])]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"\0" * 4, 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_embedded_colour_profile_is_converted_to_srgb(tmp_path: Path, fmt: str):
    """A photo tagged with its colour profile (Adobe RGB, Display P3, print CMYK) was read as if sRGB."""
    img = np.full((64, 80, 3), 240, np.uint8)
    img[20:44, 25:55] = (230, 20, 20)  # stored as red, which the profile says is blue
    p = tmp_path / f"tagged.{fmt.lower()}"
    Image.fromarray(img).save(p, fmt, icc_profile=_icc_red_blue_swapped(), quality=95)
    res = preprocess_image(p, RES)
    r, g, b = res.rgba[RES // 2, RES // 2, :3].astype(int)
    assert b > 150 and r < 60, (r, g, b)
    assert not res.warnings
    # an sRGB profile (most photos, skimage's chelsea.png) leaves the pixels exactly as they are
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(img).save(tmp_path / "srgb.png", icc_profile=srgb)
    plain = preprocess_image(Image.fromarray(img), RES)
    np.testing.assert_array_equal(preprocess_image(tmp_path / "srgb.png", RES).rgba, plain.rgba)


def test_unusable_colour_profile_is_a_note(tmp_path: Path):
    img = np.full((64, 80, 3), 240, np.uint8)
    img[20:44, 25:55] = (230, 20, 20)
    Image.fromarray(img).save(tmp_path / "bad.png", icc_profile=b"not a profile at all" * 10)
    res = preprocess_image(tmp_path / "bad.png", RES)
    assert any("ICC colour profile" in w for w in res.warnings)
    assert res.rgba[RES // 2, RES // 2, 0] > 200  # read as sRGB: still red


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16", "RGB48"])
def test_png_colour_key_transparency_is_the_alpha(tmp_path: Path, mode: str):
    """A PNG whose tRNS chunk marks one gray level or RGB colour transparent is a cut-out, as a palette
    PNG with tRNS is; it was matted as an opaque picture of the key colour. 16-bit keys are 16-bit
    values: Pillow ignored a 16-bit gray key, and compared a 16-bit RGB key with 8-bit pixels."""
    disk = _disk_rgba(64, 80, 40, 30, 14)
    solid = disk[..., 3] > 127
    p = tmp_path / "k.png"
    if mode == "L":
        Image.fromarray(np.where(solid, 60, 0).astype(np.uint8), "L").save(p, transparency=0)
    elif mode == "RGB":
        rgb = np.where(solid[..., None], np.array([200, 40, 30], np.uint8), np.array([0, 255, 0], np.uint8))
        Image.fromarray(rgb.astype(np.uint8)).save(p, transparency=(0, 255, 0))
    elif mode == "I;16":
        # The object's gray (1001) differs from the key (1000) only below the high byte.
        g = np.where(solid, 1001, 1000).astype(">u2")
        raw = b"".join(b"\x00" + g[y].tobytes() for y in range(64))
        p.write_bytes(_png_bytes(80, 64, 16, 0, raw, trns=(1000).to_bytes(2, "big")))
    else:
        # A key of (255, 255, 255) in 16 bits is near black; read as 8 bits it would be white.
        a = np.where(solid[..., None], np.array([50000, 5000, 5000]), np.array([255, 255, 255])).astype(">u2")
        raw = b"".join(b"\x00" + a[y].tobytes() for y in range(64))
        p.write_bytes(_png_bytes(80, 64, 16, 2, raw, trns=b"\x00\xff" * 3))
    res = preprocess_image(p, RES)
    assert res.matte_method == "alpha"
    _check_framed(res)
    ref = preprocess_image(Image.fromarray(disk, "RGBA"), RES)
    assert _iou(res.rgba[..., 3], ref.rgba[..., 3]) > 0.85


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG"])
def test_several_frames_are_named_and_the_first_used(tmp_path: Path, fmt: str):
    frames = []
    for i in range(3):
        f = np.full((64, 64, 3), 240, np.uint8)
        f[20:40, 10 + 10 * i : 30 + 10 * i] = (200, 20, 20)
        frames.append(Image.fromarray(f))
    p = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(p, fmt, save_all=True, append_images=frames[1:])
    res = preprocess_image(p, RES)
    assert any("several frames" in w and "first" in w for w in res.warnings)
    assert abs(res.bbox[0] - 10) <= 1


def test_thin_strip_is_not_reduced_below_the_smallest_side(tmp_path: Path):
    """A 3000x20 strip was reduced by its longer side (by 2) to 1500x10: below the 16 px the loader
    itself asks of an image, and matted at half the rows it has."""
    from mv3d.preprocess import load_image

    img = np.full((20, 3000, 3), 240, np.uint8)
    img[4:16, 1400:1600] = (30, 60, 200)
    Image.fromarray(img).save(tmp_path / "strip.png")
    rgba, _, size = load_image(tmp_path / "strip.png")
    assert size == (3000, 20) and min(rgba.shape[:2]) >= MIN_IMAGE_SIDE


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_a_panorama_is_reduced_by_pixel_count_not_by_its_width(tmp_path: Path, fmt: str):
    """An 8000x2000 picture was reduced by its width (by 7, to 1142x285): its object, as tall as the
    picture, kept fewer rows than the 1024 a square picture keeps. By pixel count it is reduced by 3,
    about the pixels of a 1024x1024 picture; a square picture is reduced as before."""
    from mv3d.preprocess import load_image

    for w, h, side in ((8000, 2000, 666), (4096, 4096, 1024)):
        img = np.full((h, w, 3), 240, np.uint8)
        img[h // 8 : h - h // 8, w // 2 - h // 4 : w // 2 + h // 4] = (30, 60, 200)
        Image.fromarray(img).save(tmp_path / f"p.{fmt}")
        rgba, _, size = load_image(tmp_path / f"p.{fmt}")
        assert size == (w, h)
        assert abs(min(rgba.shape[:2]) - side) <= 1, rgba.shape  # JPEG: DCT scaling by 2, then a reduce
        # within a whole factor of a square picture's pixels, as any picture (2047x2047 is not reduced)
        assert rgba.shape[0] * rgba.shape[1] < 4 * 1024 * 1024


def test_progressive_jpeg_bomb_is_refused_before_decoding(tmp_path: Path):
    """A progressive JPEG holds all its full-size DCT coefficients while decoding, whatever the draft
    scale: one claiming 144 megapixels was decoded (0.5 GB; 2.4 GB at the 400 MP bound) instead of refused
    as a PNG of that size is."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG", progressive=True)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc2")  # SOF2: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", 12000, 12000)
    p = tmp_path / "bomb.jpg"
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="progressive JPEG of 12000x12000"):
        preprocess_image(p, RES)
