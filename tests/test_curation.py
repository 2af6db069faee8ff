"""Curation filters, each on made-up metadata, meshes and renders; config parsing; the summary."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import trimesh

from render.common import InputError
from render.curation import (
    CurationConfig,
    check_mesh,
    check_renders,
    check_source,
    gltf_header,
    silhouette_stats,
    summarize,
)
from render.meshes import LoadedMesh, load_mesh, normalize_scene
from render.sources import ObjectSource

CFG = CurationConfig()


def _src(**meta) -> ObjectSource:
    return ObjectSource("x", "x", meta)


def _loaded(geom, source: str = "made-up") -> LoadedMesh:
    scene, s2w = normalize_scene(trimesh.Scene(geom))
    return LoadedMesh(scene=scene, source_to_world=s2w, source=source)


# -- config ------------------------------------------------------------------------------------------


def test_config_overrides_round_trip_and_errors():
    cfg = CurationConfig.from_cli(
        ["licences=cc0,BY", "min_faces=100", "max-faces=none", "reject_cropped=false"]
    )
    assert cfg.licences == ("cc0", "by") and cfg.min_faces == 100 and cfg.max_faces is None
    assert cfg.reject_cropped is False
    assert CurationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert CurationConfig.from_cli(["min_coverage=0.02"]).min_coverage == 0.02
    off = CurationConfig.from_cli(["off", "min_faces=5"])
    assert off.licences is None and off.min_faces == 5 and off.reject_animated is False
    for bad, msg in [
        ("colour=red", "KEY=VALUE"),
        ("min_faces", "KEY=VALUE"),
        ("min_faces=many", "integer"),
        ("min_coverage=big", "number"),
        ("reject_animated=maybe", "true or false"),
    ]:
        with pytest.raises(InputError, match=msg):
            CurationConfig.from_cli([bad])
    with pytest.raises(InputError, match="unknown curation setting"):
        CurationConfig.from_dict({"colour": 1})


# -- before loading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["max_faces=-1"], "max_faces=-1: expected a face count >= 0"),
        (["min_faces=100", "max_faces=10"], "expected min_faces <= max_faces"),
        (["min_coverage=2"], "min_coverage=2.0: expected a fraction in [0, 1]"),
        (["max_centre_offset=nan"], "max_centre_offset=nan: expected a fraction"),
        (["alpha_threshold=255"], "alpha_threshold=255: expected an alpha in [0, 254]"),
    ],
)
def test_thresholds_out_of_range_are_refused(items, message):
    """They were taken as given and rejected every object, each for a reason that hid the typo."""
    cfg = CurationConfig.from_cli(items)
    with pytest.raises(InputError, match=re.escape(message)):
        CurationConfig.from_dict(cfg.to_dict())  # what render-dataset checks before any object
    CurationConfig.from_dict(
        CurationConfig.from_cli(["min_coverage=none", "max_faces=0", "min_faces=0"]).to_dict()
    )


def test_licence_filter():
    assert check_source(_src(licence="by"), CFG) is None
    assert check_source(_src(licence="cc0"), CFG) is None
    assert check_source(_src(licence="by-nc"), CFG) == "licence: by-nc"
    assert check_source(_src(licence="by-nd"), CFG) == "licence: by-nd"
    assert check_source(_src(licence=None), CFG) == "licence: unknown"  # annotated source, no licence
    assert check_source(_src(), CFG) is None  # the user's own file: no licence key
    assert check_source(_src(), CurationConfig(require_licence=True)) == "licence: unknown"
    assert check_source(_src(licence="by-nc"), CurationConfig(licences=("by-nc",))) is None
    assert check_source(_src(licence="by-nc"), CurationConfig(licences=None)) is None


def test_annotated_faces_and_animation():
    assert check_source(_src(face_count=3), CFG) == "faces: 3 < 12"
    assert check_source(_src(face_count=2_000_000), CFG) == "faces: 2000000 > 500000"
    assert check_source(_src(face_count=5000, animation_count=0), CFG) is None
    assert check_source(_src(animation_count=3), CFG) == "animated: 3 animation(s)"
    assert check_source(_src(animation_count=3, face_count=1), CurationConfig.disabled()) is None


# -- after loading --------------------------------------------------------------------------------


def test_face_count_bounds_on_the_loaded_mesh():
    tetra = trimesh.creation.icosphere(subdivisions=0)  # 20 faces
    assert check_mesh(_loaded(tetra), CFG) is None
    assert check_mesh(_loaded(tetra), CurationConfig(min_faces=21)) == "faces: 20 < 21"
    assert check_mesh(_loaded(tetra), CurationConfig(max_faces=19)) == "faces: 20 > 19"
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0.5]], [[0, 1, 2]])
    assert check_mesh(_loaded(tri), CFG) == "faces: 1 < 12"
    # Instances count: the same box placed twice draws 24 triangles.
    scene = trimesh.Scene()
    box = trimesh.creation.box()
    scene.add_geometry(box, geom_name="box", node_name="a")
    scene.add_geometry(
        box, geom_name="box", node_name="b", transform=trimesh.transformations.translation_matrix([2, 0, 0])
    )
    norm, s2w = normalize_scene(scene)
    assert check_mesh(LoadedMesh(norm, s2w, "two boxes"), CurationConfig(max_faces=20)) == "faces: 24 > 20"


def test_flat_mesh():
    plane = trimesh.creation.box(extents=(1.0, 1.0, 0.002))
    assert check_mesh(_loaded(plane), CFG) == "flat: thickness 0.0020 < 0.01"
    assert check_mesh(_loaded(trimesh.creation.box(extents=(1.0, 1.0, 0.05))), CFG) is None
    assert check_mesh(_loaded(plane), CurationConfig(min_thickness=None)) is None


def _rewrite_glb(path, **extra):
    """Add top-level keys to a GLB's JSON chunk (keeping the binary chunk)."""
    data = path.read_bytes()
    json_len = struct.unpack("<I", data[12:16])[0]
    doc = json.loads(data[20 : 20 + json_len])
    doc.update(extra)
    body = json.dumps(doc).encode()
    body += b" " * (-len(body) % 4)
    rest = data[20 + json_len :]
    chunk = struct.pack("<II", len(body), 0x4E4F534A) + body
    path.write_bytes(data[:8] + struct.pack("<I", 12 + len(chunk) + len(rest)) + chunk + rest)


def test_animated_and_multi_scene_gltf(tmp_path):
    glb = tmp_path / "box.glb"
    trimesh.Scene(trimesh.creation.box()).export(glb)
    assert check_mesh(load_mesh(glb), CFG) is None
    header = gltf_header(glb)
    assert header is not None and len(header["scenes"]) == 1

    animated = tmp_path / "animated.glb"
    animated.write_bytes(glb.read_bytes())
    _rewrite_glb(animated, animations=[{"channels": [], "samplers": []}])
    mesh = load_mesh(animated)
    assert check_mesh(mesh, CFG) == "animated: 1 animation(s)"
    assert check_mesh(mesh, CurationConfig(reject_animated=False)) is None

    skinned = tmp_path / "skinned.glb"
    skinned.write_bytes(glb.read_bytes())
    _rewrite_glb(skinned, skins=[{"joints": [0]}])
    assert check_mesh(load_mesh(skinned), CFG) == "animated: 1 skin(s)"

    multi = tmp_path / "multi.glb"
    multi.write_bytes(glb.read_bytes())
    _rewrite_glb(multi, scenes=header["scenes"] * 3)
    assert check_mesh(load_mesh(multi), CFG) == "multi-scene: 3 scenes"
    assert gltf_header(tmp_path / "nope.glb") is None
    (tmp_path / "fake.glb").write_bytes(b"not a glb at all, really")
    assert gltf_header(tmp_path / "fake.glb") is None


# -- after rendering ------------------------------------------------------------------------------


def _disc(n=8, size=64, radius=12.0, centre=(32.0, 32.0), scale_x=None):
    """(n, size, size, 4) renders of an ellipse; scale_x[i] squeezes view i horizontally."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.zeros((n, size, size, 4), np.uint8)
    for i in range(n):
        sx = 1.0 if scale_x is None else scale_x[i]
        inside = ((xx - centre[0]) / max(radius * sx, 1e-6)) ** 2 + ((yy - centre[1]) / radius) ** 2 <= 1
        out[i][inside] = (200, 80, 40, 255)
    return out


def test_renders_of_a_good_object_pass():
    assert check_renders(_disc(), CFG) is None
    stats = silhouette_stats(_disc())
    assert np.allclose(stats["offset"], 0.0, atol=1e-9)
    assert np.allclose(stats["thinness"], 1.0, atol=0.02)
    assert np.allclose(stats["coverage"], np.pi * 144 / 4096, rtol=0.05)


def test_empty_and_tiny():
    r = _disc()
    r[3, ..., 3] = 0
    assert check_renders(r, CFG) == "empty: view 3 has no opaque pixel"
    assert check_renders(_disc(radius=3.0), CFG).startswith("tiny: silhouette covers 0.")
    assert check_renders(_disc(radius=3.0), CurationConfig(min_coverage=None)) is None
    # Semi-transparent fringe below the threshold does not count as silhouette.
    faint = _disc()
    faint[..., 3] = np.where(faint[..., 3] > 0, 60, 0)
    assert check_renders(faint, CFG).startswith("empty:")


def test_cropped_and_off_centre():
    assert check_renders(_disc(radius=20.0, centre=(12.0, 32.0)), CFG).startswith("cropped: ")
    off = check_renders(_disc(radius=8.0, centre=(16.0, 32.0)), CFG)
    assert off.startswith("off-centre: silhouette centre 0.250"), off
    assert (
        check_renders(_disc(radius=8.0, centre=(16.0, 32.0)), CurationConfig(max_centre_offset=0.3)) is None
    )
    assert check_renders(_disc(radius=8.0, centre=(28.0, 32.0)), CFG) is None  # slightly off is fine


def test_flat_objects_from_renders():
    # A vertical board: broad from the front, a sliver edge-on.
    board = _disc(n=4, radius=20.0)
    board[1::2] = 0
    board[1::2, 12:52, 32] = 255  # one pixel wide, as tall as the disc
    reason = check_renders(board, CFG)
    assert reason.startswith("flat: least/most covered view"), reason
    # A horizontal sheet seen from a low elevation: thin in every view.
    sheet = np.zeros((4, 64, 64, 4), np.uint8)
    sheet[:, 31:33, 8:56] = 255
    reason = check_renders(sheet, CFG)
    assert reason.startswith("flat: silhouette thinness"), reason
    assert check_renders(sheet, CurationConfig(min_silhouette_thinness=None)) is None
    # Different but solid views are fine.
    assert check_renders(_disc(n=4, radius=20.0, scale_x=[1.0, 0.4, 1.0, 0.4]), CFG) is None


def test_bad_render_shapes():
    with pytest.raises(ValueError, match="RGBA"):
        silhouette_stats(np.zeros((2, 8, 8, 3), np.uint8))
    assert check_renders(_disc(n=1), CFG) is None  # one view: single (H, W, 4) works as N = 1


# -- reporting ------------------------------------------------------------------------------------


def test_summarize_counts_by_filter():
    reasons = [None, "licence: by-nc", "faces: 3 < 12", None, "licence: unknown", "flat: x", None]
    s = summarize(reasons)
    assert s == {
        "total": 7,
        "kept": 3,
        "rejected": 4,
        "by_filter": {"licence": 2, "faces": 1, "flat": 1},
    }
    assert list(s["by_filter"]) == ["licence", "faces", "flat"]
    assert summarize([]) == {"total": 0, "kept": 0, "rejected": 0, "by_filter": {}}
    json.dumps(s)
