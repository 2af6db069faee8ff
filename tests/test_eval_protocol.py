"""`eval.protocols`: the SyncDreamer GSO protocol's numbers against hand computations, and `mv3d eval
--protocol syncdreamer` on a folder laid out as GSO."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import trimesh

from eval.protocols import (
    PROTOCOLS,
    SYNCDREAMER_FOV_DEG,
    composite_white,
    pad_orbit,
    syncdreamer_mesh_scores,
    syncdreamer_view_scores,
    unit_box,
    voxel_down_sample,
)
from render.cameras import static_orbit
from render.common import InputError


def test_syncdreamer_cameras():
    orbit = PROTOCOLS["syncdreamer"].orbit(21, 10.0)  # the caller's views and elevation do not count
    assert len(orbit) == 16
    np.testing.assert_allclose(orbit.azimuth_deg, np.arange(16) * 22.5)
    np.testing.assert_allclose(orbit.elevation_deg, 30.0)
    np.testing.assert_allclose(orbit.radius, 1.5)
    # a 35 mm lens on a 32 mm sensor
    assert SYNCDREAMER_FOV_DEG == pytest.approx(49.134, abs=1e-3)
    assert orbit.fov_deg == SYNCDREAMER_FOV_DEG and PROTOCOLS["syncdreamer"].resolution == 256


def test_view_scores_by_hand():
    # ground truth: fully transparent -> white; prediction: one opaque black pixel of 144, one half-
    # transparent red pixel (on white: (1, 1 - a, 1 - a) with a = 128/255)
    gt = np.zeros((2, 12, 12, 4), np.uint8)
    pred = gt.copy()
    pred[0, 1, 2] = (0, 0, 0, 255)
    pred[1, 3, 3] = (255, 0, 0, 128)
    a = 128 / 255
    np.testing.assert_allclose(composite_white(pred)[1, 3, 3], [1.0, 1.0 - a, 1.0 - a], rtol=1e-6)
    scores = syncdreamer_view_scores(pred, gt)
    # MSE over all 144 pixels and 3 channels: 1 pixel x 3 channels of squared error 1 -> 1 / 144
    assert scores["psnr"][0] == pytest.approx(10 * math.log10(144), abs=1e-4)
    assert scores["psnr"][1] == pytest.approx(10 * math.log10(432 / (2 * a * a)), abs=1e-4)
    # identical views: SSIM 1, PSNR capped
    same = syncdreamer_view_scores(gt[:1], gt[:1])
    assert same["psnr"] == [100.0]
    assert 0.0 < scores["ssim"][0] < 1.0 and "lpips" not in scores
    textured = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 4), dtype=np.uint8)
    assert syncdreamer_view_scores(textured, textured)["ssim"][0] == pytest.approx(1.0, abs=1e-6)


def test_view_scores_hand_lpips_in_zero_one():
    seen = []

    class FakeLPIPS(torch.nn.Module):
        def forward(self, pred, target):
            seen.append((float(pred.min()), float(pred.max())))
            return (pred - target).abs().flatten(1).mean(1)

    gt = np.zeros((3, 12, 12, 4), np.uint8)
    pred = gt.copy()
    pred[..., 3] = 255  # opaque black
    scores = syncdreamer_view_scores(pred, gt, FakeLPIPS())
    assert scores["lpips"] == pytest.approx([1.0, 1.0, 1.0])
    assert seen == [(0.0, 0.0)]  # [0, 1] images; eval.lpips.LPIPS maps them to [-1, 1] itself


def test_unit_box_and_voxel_down_sample():
    v = np.array([[0.0, 0.0, 0.0], [4.0, 2.0, 1.0]])
    np.testing.assert_allclose(unit_box(v), [[-0.5, -0.25, -0.125], [0.5, 0.25, 0.125]])
    pts = np.array([[0.0, 0.0, 0.0], [0.004, 0.0, 0.0], [0.02, 0.0, 0.0]])
    # voxels of 0.01 anchored at min - 0.005: the first two share one voxel, the third has its own
    np.testing.assert_allclose(voxel_down_sample(pts, 0.01), [[0.002, 0.0, 0.0], [0.02, 0.0, 0.0]])


def test_mesh_scores_by_hand_cubes():
    """Volume IoU at 64^3 voxel centres over [-1, 1]^3 (cells of 1/32): a cube of half-side 0.5 holds
    32 centres per axis, one of half-side 0.6 holds 38 (k + 0.5 in (12.8, 51.2)): IoU = 32^3 / 38^3."""
    gt = trimesh.creation.box(extents=(2.0, 2.0, 2.0))  # scaled to the unit box by the protocol
    same = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    s = syncdreamer_mesh_scores(same, gt, resolution=64)
    assert s["chamfer"] == pytest.approx(0.0, abs=1e-9) and s["volume_iou"] == 1.0
    assert s["f_score@0.1"] == s["f_score@0.2"] == s["f_score@0.5"] == 1.0
    bigger = trimesh.creation.box(extents=(1.2, 1.2, 1.2))
    assert syncdreamer_mesh_scores(bigger, gt, resolution=64)["volume_iou"] == pytest.approx(32**3 / 38**3)


def test_mesh_scores_by_hand_spheres():
    """Concentric spheres of radii 0.5 and 0.65: every visible point of one lies 0.15 from the other, so
    Chamfer is 0.15 (to the point spacing), F-score 0 at 0.1 and 1 at 0.2 and 0.5."""
    gt = trimesh.creation.icosphere(subdivisions=4, radius=1.0)  # unit box -> radius 0.5
    pred = trimesh.creation.icosphere(subdivisions=4, radius=0.65)
    s = syncdreamer_mesh_scores(pred, gt, resolution=128)
    assert s["chamfer"] == pytest.approx(0.15, abs=2e-3)
    assert (s["f_score@0.1"], s["f_score@0.2"], s["f_score@0.5"]) == (0.0, 1.0, 1.0)
    inside = 0.5 / 0.65  # volume ratio ~ (0.5 / 0.65)^3 = 0.455, within the 1/32 voxels
    assert s["volume_iou"] == pytest.approx(inside**3, abs=0.03)


def test_pad_orbit_keeps_the_asked_views_and_the_input_first():
    orbit = static_orbit(16, elevation_deg=30.0)
    padded, keep = pad_orbit(orbit, 21)
    assert len(padded) == 21 and keep[0] == 0
    np.testing.assert_allclose(padded.azimuth_deg[keep], orbit.azimuth_deg)
    assert np.all(np.diff(padded.azimuth_deg) > 0)  # sorted from the input's azimuth
    np.testing.assert_allclose(padded.elevation_deg, 30.0)
    with pytest.raises(InputError, match="at most 14"):
        pad_orbit(orbit, 14)


def test_mv3d_eval_protocol_syncdreamer_on_a_gso_folder(tmp_path, monkeypatch, capsys):
    """The CLI on OBJECT/meshes/model.obj with a copying model: rows say their protocol, the settings are
    the protocol's, and view 0 is a perfect score (SSIM to float32 rounding: with the range taken from
    a nearly flat pair, torchmetrics' constants are tiny, so identical views score 0.9999 or so)."""
    from mv3d.cli import main

    for name, mesh in (
        ("box", trimesh.creation.box(extents=(0.6, 0.3, 0.2))),
        ("ball", trimesh.creation.icosphere(2, 0.4)),
    ):
        folder = tmp_path / "gso" / name / "meshes"
        folder.mkdir(parents=True)
        mesh.export(folder / "model.obj")
    out = tmp_path / "report"

    class CopyModel:
        resolution = 256

        def __call__(self, image, orbit, seed):
            return np.repeat(np.asarray(image)[None], len(orbit), axis=0)

    import mv3d.cli.eval_cmd as eval_cmd

    monkeypatch.setattr(eval_cmd, "_load_generator", lambda model, device: CopyModel())
    argv = ["eval", "--objects", str(tmp_path / "gso"), "--out", str(out), "--protocol", "syncdreamer"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--baselines", "", "--device", "cpu"])
    assert exc.value.code in (0, None), capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["protocol"] == "syncdreamer" and metrics["settings"]["views"] == 16
    assert metrics["settings"]["resolution"] == 256 and metrics["protocol"]["headline"] == "all"
    for obj in metrics["objects"].values():
        per_view = obj["methods"]["ours"]["per_view"]
        assert set(per_view) == {"psnr", "ssim"} and len(per_view["psnr"]) == 16
        assert per_view["psnr"][0] == 100.0 and per_view["ssim"][0] > 0.99
    assert "(all views, mean over 2 objects)" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| ours | syncdreamer |" in report and "arXiv 2309.03453" in report
    # From Python the error names the argument (it named the CLI's --protocol); the CLI's line the flag.
    from eval.protocols import get_protocol

    with pytest.raises(InputError, match="^protocol nope: expected one of mv3d, syncdreamer") as info:
        get_protocol("nope")
    assert info.value.field == "protocol"
    with pytest.raises(SystemExit):
        main(["eval", "--objects", "procedural:1:0", "-o", str(tmp_path / "r2"), "--protocol", "nope"])
    assert capsys.readouterr().err.startswith("mv3d: error: --protocol nope: expected one of")


def test_runner_scores_meshes_under_the_protocol(tmp_path):
    """With a reconstruction, mesh rows carry the protocol's F-score thresholds; a reconstruction that
    returns the ground truth's own unit-box mesh scores Chamfer 0 and IoU 1."""
    from eval.runner import run_benchmark

    folder = tmp_path / "gso" / "slab" / "meshes"
    folder.mkdir(parents=True)
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(folder / "model.obj")
    truth = trimesh.creation.box(extents=(1.0, 0.5, 0.25))  # the unit box of the same object

    def copy(image, orbit, seed):
        return np.repeat(np.asarray(image)[None], len(orbit), axis=0)

    metrics = run_benchmark(
        [str(tmp_path / "gso")],
        tmp_path / "out",
        copy,
        baselines=[],
        reconstruct_fn=lambda dataset_dir: truth,
        protocol="syncdreamer",
        figures=False,
        progress=False,
    )
    mesh = next(iter(metrics["objects"].values()))["methods"]["ours"]["mesh"]
    assert set(mesh) == {"chamfer", "f_score@0.1", "f_score@0.2", "f_score@0.5", "volume_iou"}
    assert mesh["chamfer"] == pytest.approx(0.0, abs=1e-9) and mesh["volume_iou"] == 1.0
    assert tuple(metrics["settings"]["f_thresholds"]) == (0.1, 0.2, 0.5)
