"""`mv3d render`: datasets from meshes, exact cameras of another dataset, one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from render.cameras import camera_distance_for_fov
from render.dataset import read_orbit_dataset


def test_render_writes_orbit_dataset(tmp_path, example_mesh, capsys):
    out = tmp_path / "orbit"
    code, stdout, err = run_cli(
        [
            "render",
            example_mesh,
            "--views",
            4,
            "--elevation",
            15,
            "--resolution",
            48,
            "--out",
            out,
            "--depth",
        ],
        capsys,
    )
    assert code == 0, err
    ds = read_orbit_dataset(out)
    assert len(ds) == 4 and ds.intrinsics.width == 48
    np.testing.assert_allclose(ds.orbit.azimuth_deg, [0, 90, 180, 270])
    np.testing.assert_allclose(ds.orbit.elevation_deg, 15.0)
    np.testing.assert_allclose(ds.orbit.radius, camera_distance_for_fov(33.8))
    # Frame 0 sits on -Y (azimuth 0), elevated: where the convention says.
    pos = ds.camera_to_world[0, :3, 3]
    assert pos[1] < 0 and abs(pos[0]) < 1e-9 and pos[2] > 0
    assert ds.meta["renderer"]["name"] == "fast" and "ambient" in ds.meta["renderer"]["settings"]
    assert ds.meta["object"]["source"] == str(example_mesh)
    assert ds.background.tolist() == [1.0, 1.0, 1.0]
    s2w = np.asarray(ds.meta["source_to_world"])
    assert not np.allclose(s2w, np.eye(4))  # the glTF up-axis rotation and scaling are recorded
    images = ds.load_images()
    assert images.shape == (4, 48, 48, 4) and images[..., 3].max() == 255 and images[:, 0, 0, 3].max() == 0
    depth = np.load(out / "depth.npy")
    assert depth.shape == (4, 48, 48) and depth.max() > 0
    assert "wrote" in stdout


def test_render_with_cameras_of_another_dataset(tmp_path, example_mesh, capsys):
    """--cameras reproduces exactly the cameras, intrinsics and size, also off-centre and not looking at 0."""
    ref = tmp_path / "ref"
    assert (
        run_cli(
            ["render", example_mesh, "--views", 3, "--resolution", 40, "--orbit", "dynamic", "--out", ref],
            capsys,
        )[0]
        == 0
    )
    tf = json.loads((ref / "transforms.json").read_text())
    tf["w"], tf["h"] = 48, 36
    tf["fl_x"], tf["fl_y"], tf["cx"], tf["cy"] = 60.0, 60.0, 26.0, 17.0
    m = np.asarray(tf["frames"][1]["transform_matrix"])
    m[:3, 3] += [0.05, -0.02, 0.03]  # no longer looking at the origin
    tf["frames"][1]["transform_matrix"] = m.tolist()
    (ref / "transforms.json").write_text(json.dumps(tf))
    out = tmp_path / "gt"
    code, _, err = run_cli(
        ["render", example_mesh, "--cameras", ref / "transforms.json", "--out", out], capsys
    )
    assert code == 0, err
    got = json.loads((out / "transforms.json").read_text())
    for key in ("w", "h", "fl_x", "fl_y", "cx", "cy"):
        assert got[key] == tf[key], key
    for a, b in zip(got["frames"], tf["frames"], strict=True):
        np.testing.assert_allclose(a["transform_matrix"], b["transform_matrix"], atol=1e-12)
    ds = read_orbit_dataset(out)
    assert ds.load_images().shape == (3, 36, 48, 4)


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["render", "{bad}", "--out", "{out}"], "bad.obj: cannot read OBJ file: face indices out of range"),
        (["render", "{missing}", "--out", "{out}"], "nope.ply: mesh file does not exist"),
        (["render", "{mesh}", "--out", "{out}", "--renderer", "povray"], "--renderer 'povray'"),
        (["render", "{mesh}", "--out", "{out}", "--views", "0"], "--views 0"),
        (["render", "{mesh}", "--out", "{out}", "--elevation", "120"], "--elevation 120"),
        (["render", "{mesh}", "--out", "{out}", "--cameras", "{missing}"], "does not exist"),
        (["render-dataset", "{bad}", "--out", "{out}", "--orbit", "spiral"], "--orbit 'spiral'"),
        (["render-dataset", "{bad}", "--out", "{out}", "--curation", "colour=red"], "bad curation setting"),
        (["render-dataset", "{bad}", "--out", "{out}", "--workers", "0"], "--workers 0"),
        (["render-dataset", "{bad}", "--out", "{out}", "--workers", "100000"], "--workers 100000: expected"),
        (
            ["render", "{mesh}", "--out", "{out}", "--renderer", "blender", "--samples", "1000000"],
            "samples 1000000",
        ),
        (["render-dataset", "{mesh}", "--out", "{out}", "--up-axis", "x"], "--up-axis 'x': expected y or z"),
        # numpy's generators take no negative seed: a traceback from the dynamic orbit or the lights
        (["render", "{mesh}", "--out", "{out}", "--orbit", "dynamic", "--seed", "-1"], "--seed -1: expected"),
        (["render", "{mesh}", "--out", "{out}", "--light-seed", "-3"], "--light-seed -3: expected"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, example_mesh, capsys, args, pattern):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    subs = {"{bad}": bad, "{missing}": tmp_path / "nope.ply", "{mesh}": example_mesh, "{out}": tmp_path / "o"}
    code, _, err = run_cli([subs.get(a, a) for a in args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mv3d: error: "), err
    assert pattern in lines[0]
    assert "Traceback" not in err


def test_malformed_mesh_via_real_cli(tmp_path):
    bad = tmp_path / "huge.ply"
    bad.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\n"
        b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n" + b"\0" * 32
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mv3d", "render", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "huge.ply: header claims 4,000,000,000 'vertex' elements" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_help_lists_render_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "render-dataset" in out and "render " in out
    code, out, _ = run_cli(["render-dataset", "--help"], capsys)
    assert code == 0 and "--ray" in out and "--elevation-range" in out and "--curation" in out
