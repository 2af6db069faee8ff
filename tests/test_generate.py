"""The `mv3d generate` job on a tiny random model: layout, determinism, batches, bad input, atomicity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from mv3d import models
from mv3d.generate import (
    GenerateSettings,
    ViewGenerator,
    alpha_from_background,
    build_orbit,
    generate,
    output_dirs,
)
from mv3d.generate import job as generate_job
from mv3d.generate.settings import SettingError
from mv3d.models import model_hash, resolve_model
from render.common import InputError
from render.dataset import read_orbit_dataset

VIEWS = 3


@pytest.fixture(scope="module")
def gen(tiny_model: Path) -> ViewGenerator:
    return ViewGenerator.load(tiny_model, device="cpu")


def _object_png(path: Path, rgba: bool = True, colour=(200, 60, 30)) -> Path:
    img = np.zeros((40, 48, 4), np.uint8)
    img[..., :3] = 235
    img[10:32, 12:30] = (*colour, 255)
    if not rgba:
        Image.fromarray(img[..., :3]).save(path)
    else:
        img[..., 3] = np.where(img[..., 3] == 255, 255, 0)
        Image.fromarray(img, "RGBA").save(path)
    return path


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    from mv3d.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the whole path
# ------------------------------------------------------------------------------------------------


def test_generate_writes_a_complete_orbit_dataset(tmp_path: Path, gen: ViewGenerator):
    img = _object_png(tmp_path / "cup.png", rgba=False)
    out = tmp_path / "out"
    fast_mesh = {"method": "hull", "texture": "vertex", "resolution": 32}
    (res,) = generate(
        [img], out, views=VIEWS, progress=False, generator=gen, seed=3, reconstruct_options=fast_mesh
    )
    assert res.out_dir == out and res.mesh_path == out / "mesh.glb"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        ".mv3d-output.json",
        "input.png",
        "mesh.glb",
        "orbit.gif",
        "run.json",
        "transforms.json",
        "views",
    ]
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and np.all(np.abs(mesh.bounds) < 0.7)  # in the unit-cube world frame
    assert sorted(p.name for p in (out / "views").iterdir()) == [f"{i:03d}.png" for i in range(VIEWS)]
    ds = read_orbit_dataset(out)
    assert len(ds) == VIEWS and ds.intrinsics.width == gen.resolution
    assert ds.orbit.azimuth_deg[0] == 0.0 and np.allclose(ds.orbit.elevation_deg, 10.0)
    views = ds.load_images()
    assert views.shape == (VIEWS, gen.resolution, gen.resolution, 4)
    assert np.array_equal(views, res.views)
    # Frame 0 is the input view itself, resized, with its own alpha.
    inp = np.asarray(Image.open(out / "input.png"))
    assert inp.shape[2] == 4 and inp[..., 3].max() == 255 and inp[0, 0, 3] == 0
    with Image.open(out / "orbit.gif") as gif:
        assert gif.n_frames == VIEWS
    run = json.loads((out / "run.json").read_text())
    for key in ("model_hash", "sampler", "steps", "seed", "guidance", "timings_s", "versions", "orbit"):
        assert key in run
    assert run["model_hash"] == gen.model_hash and run["seed"] == 3 and run["steps"] == 2
    assert run["preprocess"]["matte_method"] == "border-colour" and run["preprocess"]["matte"] == "auto"
    assert {"preprocess", "sample", "write", "reconstruct", "total"} <= set(run["timings_s"])
    assert run["reconstruction"]["faces"] == len(mesh.faces)
    assert all(".tmp" not in w for w in run["warnings"])
    assert "torch" in run["versions"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_same_seed_same_views_other_seed_other_views(tmp_path: Path, gen: ViewGenerator):
    img = _object_png(tmp_path / "a.png")
    (first,) = generate(
        [img], tmp_path / "s0", views=VIEWS, mesh=False, progress=False, generator=gen, seed=7
    )
    framed = np.asarray(Image.open(tmp_path / "s0" / "input.png"))
    orbit = build_orbit("static", VIEWS)
    assert np.array_equal(gen(framed, orbit, seed=7), first.views)  # same seed: same views
    assert not np.array_equal(gen(framed, orbit, seed=8)[1:], first.views[1:])


def test_batch_of_images(tmp_path: Path, gen: ViewGenerator):
    imgs = [_object_png(tmp_path / "red.png"), _object_png(tmp_path / "blue.png", colour=(20, 40, 200))]
    lines: list[str] = []
    res = generate(
        imgs, tmp_path / "batch", views=VIEWS, mesh=False, progress=False, generator=gen, log=lines.append
    )
    assert [r.out_dir for r in res] == [tmp_path / "batch/red", tmp_path / "batch/blue"]
    for r in res:
        read_orbit_dataset(r.out_dir)
    assert len(lines) == 2 and "sample" in lines[0] and "->" in lines[0]
    with pytest.raises(InputError, match="share the name"):
        output_dirs([Path("x/a.png"), Path("y/a.jpg")], None)
    assert output_dirs([Path("x/cat.png")], None) == [Path("outputs/cat")]


def test_one_image_may_be_given_as_a_path_not_a_list(tmp_path: Path, gen: ViewGenerator):
    """`generate("photo.png", ...)` read the str as a batch of its characters ("several input images
    share the name ''"), a Path was a TypeError; either is one image now."""
    img = _object_png(tmp_path / "cat.png")
    for i, one in enumerate((str(img), img)):
        (res,) = generate(one, tmp_path / f"o{i}", views=VIEWS, mesh=False, progress=False, generator=gen)
        assert res.out_dir == tmp_path / f"o{i}" and res.image == img and res.views.shape[0] == VIEWS


def test_reconstruct_options_are_checked_before_any_work(tmp_path: Path, tiny_model: Path, monkeypatch):
    """A misspelt key was a TypeError from reconstruct() after the views were sampled, an unknown method a
    "no mesh" note; both are one line naming `reconstruct_options` before anything is read or loaded."""
    img = _object_png(tmp_path / "cat.png")
    monkeypatch.setattr(ViewGenerator, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    for options, expect in (
        ({"methd": "hull"}, r"reconstruct_options \['methd'\]: expected keys among .*method"),
        ({"method": "poisson"}, "reconstruct_options method 'poisson': expected one of field, hull"),
        ({"out": "x.glb"}, r"reconstruct_options \['out'\]"),
        ("hull", "reconstruct_options 'hull': expected a dict"),
    ):
        with pytest.raises(InputError, match=expect) as info:
            generate([img], tmp_path / "o", model=tiny_model, views=VIEWS, reconstruct_options=options)
        assert info.value.field == "reconstruct_options"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


def test_the_package_exports_what_generate_raises():
    """generate() documents `GenerateInterrupted` (Ctrl-C, what was kept); a caller catching it had to
    import it from mv3d.generate.job."""
    import mv3d.generate as package
    from mv3d.generate.job import GenerateInterrupted

    assert package.GenerateInterrupted is GenerateInterrupted and "GenerateInterrupted" in package.__all__
    assert all(hasattr(package, name) for name in package.__all__)


def test_settings_warnings_reach_a_python_caller_without_callbacks(tmp_path: Path):
    """Without `log` or `warn` the warnings about settings outside the model's training were dropped;
    they are Python warnings now (and still go to `warn` when it is given)."""
    absent = tmp_path / "absent.png"  # refused after the settings are checked, before any load
    with pytest.warns(UserWarning, match="^steps 10: the default model was trained for 1-step"):
        with pytest.raises(InputError, match="does not exist"):
            generate([absent], tmp_path / "o", steps=10, mesh=False)
    lines: list[str] = []
    with pytest.raises(InputError, match="does not exist"):
        generate([absent], tmp_path / "o", steps=10, mesh=False, warn=lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: steps 10: ")


def test_preprocessing_counts_the_images_on_a_bar(tmp_path: Path, gen: ViewGenerator, capsys):
    # a photograph's learned matte takes 5-20 s on a CPU, all of a batch's before the model loads: a
    # batch of photographs was minutes without a line
    imgs = [_object_png(tmp_path / "a.png"), _object_png(tmp_path / "b.png")]
    generate(imgs, tmp_path / "o", views=VIEWS, mesh=False, progress=True, generator=gen)
    assert "preprocessing:" in capsys.readouterr().err
    generate(imgs, tmp_path / "o", views=VIEWS, mesh=False, progress=True, generator=gen)
    assert "preprocessing:" not in capsys.readouterr().err  # nothing to preprocess: kept results


def test_cli_end_to_end_on_tiny_model(tmp_path: Path, tiny_model: Path, capsys):
    img = _object_png(tmp_path / "obj.png")
    out = tmp_path / "cli"
    code, _ = _run_cli(
        [
            "generate",
            str(img),
            "--views",
            str(VIEWS),
            "--out",
            str(out),
            "--model",
            str(tiny_model),
            "--no-mesh",
            "--quiet",
            "--seed",
            "5",
            "--sampler",
            "heun",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--matte",
            "color",
        ],
        capsys,
    )
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["sampler"] == "heun" and run["steps"] == 1 and run["seed"] == 5
    # an RGBA file's own alpha wins over --matte
    assert run["preprocess"]["matte"] == "color" and run["preprocess"]["matte_method"] == "alpha"
    assert run["model_hash"] == model_hash(tiny_model)


def test_failed_run_leaves_no_folder(tmp_path: Path, gen: ViewGenerator, monkeypatch):
    img = _object_png(tmp_path / "a.png")

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr("mv3d.generate.job.turntable_gif", boom)
    with pytest.raises(RuntimeError):
        generate([img], tmp_path / "out", views=VIEWS, mesh=False, progress=False, generator=gen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, no output folder
# ------------------------------------------------------------------------------------------------


def test_default_model_absent_is_exit_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr(models, "default_model_dir", lambda: tmp_path / "no_default_model")
    img = _object_png(tmp_path / "a.png")
    code, err = _run_cli(["generate", str(img), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert err.startswith("mv3d: error: --model default: no trained default model") and err.count("\n") == 1
    assert "model folder" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("text", "not an image"),
        ("empty", "empty"),
        ("tiny", "too small"),
        ("transparent", "fully transparent"),
        ("model_missing", "--model"),
        ("model_broken", "cannot load"),
        ("model_not_mv3d", "mv3d_model.json"),
        ("views", "--views"),
        ("orbit", "--orbit"),
        ("sampler", "sampler"),
        ("guidance", "--guidance"),
        ("device", "--device"),
        ("resolution", "--resolution"),
        ("ensemble", "--ensemble"),
        ("matte", "--matte"),
        ("offload", "--offload 'disk': expected one of none, model, sequential"),
        ("seed_negative", "--seed -1: expected a whole number from 0"),
        ("seed_huge", "--seed 18446744073709551616: expected"),
        ("steps_huge", "--steps 100000: expected a whole number from 1 to 1000"),
        ("ensemble_huge", "--ensemble 65: expected a whole number of samples from 1 to 64"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path: Path, tiny_model: Path, capsys, case: str, expect: str):
    img = _object_png(tmp_path / "ok.png")
    out = tmp_path / "out"
    args = ["generate", str(img), "--out", str(out), "--model", str(tiny_model), "--no-mesh", "--quiet"]
    args += ["--views", str(VIEWS)]
    if case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "folder":
        args[1] = str(tmp_path)
    elif case == "text":
        (tmp_path / "t.png").write_text("hello")
        args[1] = str(tmp_path / "t.png")
    elif case == "empty":
        (tmp_path / "e.png").write_bytes(b"")
        args[1] = str(tmp_path / "e.png")
    elif case == "tiny":
        Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
        args[1] = str(tmp_path / "one.png")
    elif case == "transparent":
        Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(tmp_path / "clear.png")
        args[1] = str(tmp_path / "clear.png")
    elif case == "model_missing":
        args[args.index("--model") + 1] = str(tmp_path / "no_model")
    elif case == "model_broken":
        broken = tmp_path / "broken"
        shutil.copytree(tiny_model, broken)
        (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
        args[args.index("--model") + 1] = str(broken)
    elif case == "model_not_mv3d":
        (tmp_path / "other" / "unet").mkdir(parents=True)
        (tmp_path / "other" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
        args[args.index("--model") + 1] = str(tmp_path / "other")
    elif case == "views":
        args += ["--views", "0"]
    elif case == "orbit":
        args += ["--orbit", "spiral"]
    elif case == "sampler":
        args += ["--sampler", "ddim"]
    elif case == "guidance":
        args += ["--guidance", "cosine"]
    elif case == "device":
        args += ["--device", "tpu"]
    elif case == "resolution":
        args += ["--resolution", "18"]  # the tiny model's latent grid is 4 pixels
    elif case == "ensemble":
        args += ["--ensemble", "0"]
    elif case == "matte":
        args += ["--matte", "magic"]
    elif case == "offload":
        args += ["--offload", "disk"]
    elif case == "seed_negative":  # numpy's generators (a dynamic orbit's, the field's) take none
        args += ["--seed", "-1"]
    elif case == "seed_huge":  # torch's take none from 2**64: a traceback after the model load
        args += ["--seed", str(2**64)]
    elif case == "steps_huge":  # warned, then sampled for days
        args += ["--steps", "100000"]
    elif case == "ensemble_huge":  # refused only after the model load, by the pipeline
        args += ["--ensemble", "65"]
    code, err = _run_cli(args, capsys)
    assert code == 2, err
    assert err.startswith("mv3d: error: ") and err.count("\n") == 1 and expect in err, err
    assert "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------


def test_alpha_from_background():
    rgb = np.ones((1, 20, 20, 3), np.float32)
    rgb[0, 4:16, 4:16] = (0.2, 0.3, 0.8)
    rgb[0, 8:12, 8:12] = 1.0  # a white highlight inside the object: not background
    rgb[0, 4:16, 3] = 0.94  # a faint edge column, 0.06 from white: half way up the alpha ramp
    out = alpha_from_background(rgb)
    a = out[0, ..., 3]
    assert a[0, 0] == 0 and a[10, 10] == 255 and a[5, 5] == 255
    assert 100 < a[10, 3] < 155
    # Composited back on white, the RGBA reproduces the generated picture.
    al = a[..., None] / 255.0
    back = out[0, ..., :3] / 255.0 * al + (1 - al)
    assert np.abs(back - rgb[0]).max() < 0.01


def test_build_orbit_kinds(tmp_path: Path):
    s = build_orbit("static", 4, 20.0)
    assert s.kind == "static" and np.allclose(s.elevation_deg, 20) and s.azimuth_deg[1] == 90
    d1, d2 = build_orbit("dynamic", 5, 10.0, seed=1), build_orbit("dynamic", 5, 10.0, seed=1)
    assert d1.kind == "dynamic" and np.array_equal(d1.elevation_deg, d2.elevation_deg)
    f = tmp_path / "orbit.json"
    f.write_text(json.dumps(s.to_dict()))
    assert np.allclose(build_orbit(f, 21).azimuth_deg, s.azimuth_deg)
    for bad in ("spiral", tmp_path / "missing.json"):
        with pytest.raises(InputError):
            build_orbit(bad, 4)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        build_orbit(tmp_path / "bad.json", 4)


def test_model_hash_and_resolve(tmp_path: Path):
    m = tmp_path / "m"
    (m / "unet").mkdir(parents=True)
    (m / "unet" / "w.safetensors").write_bytes(b"abc")
    (m / "unet" / "config.json").write_text("{}")
    (m / "README.md").write_text("not part of the model")
    h1 = model_hash(m)
    (m / "README.md").write_text("changed")
    assert model_hash(m) == h1 and len(h1) == 12
    (m / "unet" / "w.safetensors").write_bytes(b"abd")
    assert model_hash(m) != h1
    assert resolve_model(m) == m.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no weight files"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(InputError, match="is a file"):
        resolve_model(m / "unet" / "w.safetensors")


def test_rerun_keeps_finished_results_and_replaces_changed_ones(tmp_path: Path, gen: ViewGenerator):
    img = _object_png(tmp_path / "a.png")
    out = tmp_path / "out"
    kw = dict(views=VIEWS, mesh=False, progress=False, generator=gen)
    generate([img], out, seed=0, **kw)
    stamp = (out / "run.json").stat().st_mtime_ns
    lines: list[str] = []
    generate([img], out, seed=0, log=lines.append, **kw)  # same settings: resumed, nothing redone
    assert "already generated" in lines[0] and (out / "run.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="seed 0 there, 1 now"):  # other settings: refused by default
        generate([img], out, seed=1, **kw)
    assert (out / "run.json").stat().st_mtime_ns == stamp
    generate([img], out, seed=1, overwrite=True, **kw)  # asked for: the folder is replaced whole
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_refuses_to_replace_a_folder_that_is_not_a_generation(tmp_path: Path, tiny_model: Path, capsys):
    img = _object_png(tmp_path / "a.png")
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    code, err = _run_cli(["generate", str(img), "--out", str(precious), "--model", str(tiny_model)], capsys)
    assert code == 2 and "not an mv3d output" in err
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_unmix_background_inverts_compositing():
    from mv3d.generate import unmix_background

    rng = np.random.default_rng(0)
    fg = rng.random((2, 6, 6, 3)).astype(np.float32)
    alpha = rng.random((2, 6, 6)).astype(np.float32)
    alpha[0, 0, 0] = 0.0
    bg = (1.0, 1.0, 1.0)
    composited = fg * alpha[..., None] + (1 - alpha[..., None]) * np.asarray(bg, np.float32)
    out = unmix_background(composited, alpha, bg)
    assert out.shape == (2, 6, 6, 4) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [0, 0, 0, 0]
    a = out[..., 3:] / 255.0
    back = out[..., :3] / 255.0 * a + (1 - a)
    assert np.abs(back - composited).max() < 0.01


def test_alpha_model_views_carry_the_model_matte(tmp_path: Path):
    """A model that paints its own alpha (info.alpha): generate keeps that matte instead of matting the RGB."""
    import torch
    from model_helpers import tiny_patch_config

    from video_prior.components import build_components, model_info_from_config, save_components

    cfg = tiny_patch_config(alpha=True)
    cfg["info"]["default_steps"] = 1
    comps = build_components(cfg)
    torch.nn.init.zeros_(comps["unet"].conv_out.weight)  # the copy warm start: views = the input view
    torch.nn.init.zeros_(comps["unet"].conv_out.bias)
    save_components(comps, model_info_from_config(cfg), tmp_path / "alpha_model")
    g = ViewGenerator.load(tmp_path / "alpha_model", device="cpu")
    image = np.zeros((16, 16, 4), np.uint8)
    image[4:12, 4:12] = (250, 250, 250, 255)  # a near-white object: RGB matting would lose it
    image[4:12, 4:6, 3] = 128  # a half-transparent strip
    views = g(image, build_orbit("static", VIEWS), seed=0)
    assert g.ensemble == 1 and g.settings()["ensemble"] == 1
    assert views.shape == (VIEWS, 16, 16, 4)
    np.testing.assert_array_equal(views[2, ..., 3], image[..., 3])
    np.testing.assert_allclose(views[2, 6:10, 6:10, :3], 250, atol=1)

    # A calibrated matte (info.alpha_threshold 0.4): the strip at alpha 0.502 is now above 0.5 by the
    # map's slope (0.5 + 0.102 * 0.5 / 0.6), background and object stay 0 and 1, and the views
    # composited on white are unchanged.
    cfg["info"]["alpha_threshold"] = 0.4
    save_components(comps, model_info_from_config(cfg), tmp_path / "calibrated")
    calibrated = ViewGenerator.load(tmp_path / "calibrated", device="cpu")(
        image, build_orbit("static", VIEWS), seed=0
    )
    a = calibrated[2, ..., 3].astype(int)
    assert a[4, 4] == round(255 * (0.5 + (128 / 255 - 0.4) * 0.5 / 0.6))
    assert a[0, 0] == 0 and a[8, 8] == 255

    def on_white(v: np.ndarray) -> np.ndarray:
        alpha = v[..., 3:] / 255.0
        return v[..., :3] / 255.0 * alpha + (1.0 - alpha)

    np.testing.assert_allclose(on_white(calibrated), on_white(views), atol=2 / 255)

    # A floor (0.45) keeps the strip where its mapped level is above it (threshold 0.3: 0.643) and cuts it
    # to 0 where it is below (threshold 0.6: 0.418); cut, the view on white is the background there, and
    # the object's opaque core and the empty background do not move.
    cfg["info"]["alpha_floor"] = 0.45
    cfg["info"]["alpha_threshold"] = 0.3
    save_components(comps, model_info_from_config(cfg), tmp_path / "floored")
    floored = ViewGenerator.load(tmp_path / "floored", device="cpu")(
        image, build_orbit("static", VIEWS), seed=0
    )
    assert floored[2, 4, 4, 3] == round(255 * (0.5 + (128 / 255 - 0.3) * 0.5 / 0.7))  # 0.643: kept
    cfg["info"]["alpha_threshold"] = 0.6
    save_components(comps, model_info_from_config(cfg), tmp_path / "floored_cut")
    cut = ViewGenerator.load(tmp_path / "floored_cut", device="cpu")(
        image, build_orbit("static", VIEWS), seed=0
    )
    # the strip maps to 0.502 * 0.5 / 0.6 = 0.418 < 0.45: cut, white on white
    assert cut[2, 4, 4, 3] == 0 and cut[2, 8, 8, 3] == 255 and cut[2, 0, 0, 3] == 0
    np.testing.assert_allclose(on_white(cut)[2, 4:12, 4:6], 1.0)
    np.testing.assert_allclose(on_white(cut)[2, 6:10, 6:10], on_white(views)[2, 6:10, 6:10], atol=2 / 255)


def test_settings_errors_name_the_field_and_the_cli_names_the_flag():
    from mv3d.cli.generate_cmd import flag
    from mv3d.generate import GenerateSettings, SettingError

    for field, value in (("views", 0), ("min_guidance", -1.0), ("sampler", "ddim"), ("steps", 1.5)):
        with pytest.raises(SettingError) as info:
            GenerateSettings(**{field: value})
        assert info.value.field == field and str(info.value).startswith(f"{field} {value}: expected")
        assert str(info.value.renamed(flag(field))).startswith(f"--{field.replace('_', '-')} {value}: ")
    # None means "the default", as the command line passes options it was not given
    assert GenerateSettings.from_options(steps=None, sampler=None, views=5) == GenerateSettings(views=5)
    assert GenerateSettings(steps=3).sampling()["num_inference_steps"] == 3
    with pytest.raises(InputError, match="unknown generate settings"):
        GenerateSettings.from_options(step=3)


def _with_mesh_method(tiny_model: Path, dest: Path, method) -> Path:
    """A copy of the tiny model whose info names `method` as its default_mesh_method."""
    shutil.copytree(tiny_model, dest)
    info = json.loads((dest / "mv3d_model.json").read_text())
    (dest / "mv3d_model.json").write_text(json.dumps({**info, "default_mesh_method": method}))
    return dest


def test_the_models_mesh_method_is_used_unless_the_caller_names_one(tmp_path: Path, tiny_model: Path):
    """A model whose info names a mesh method (the default model: hull) gets it in `generate`; a caller's
    method wins; a name mv3d.reconstruct lacks is one line before the model loads."""
    model = _with_mesh_method(tiny_model, tmp_path / "hull_model", "hull")
    img = _object_png(tmp_path / "cup.png")
    small = {"texture": "vertex", "resolution": 32}
    (res,) = generate(
        [img], tmp_path / "out", model=model, views=VIEWS, progress=False, reconstruct_options=small
    )
    run = json.loads((res.out_dir / "run.json").read_text())
    assert run["reconstruction"]["settings"]["method"] == "hull"
    assert res.mesh_path is not None and res.mesh_path.is_file()
    # the caller's method wins; a model naming none leaves the library's default (no method passed on)
    assert generate_job.mesh_options({**small, "method": "field"}, "hull")["method"] == "field"
    assert generate_job.mesh_options(small, None) == small
    bad = _with_mesh_method(tiny_model, tmp_path / "bad_model", "marching")
    with pytest.raises(SettingError, match="names the mesh method 'marching': expected one of field, hull"):
        generate([img], tmp_path / "bad", model=bad, views=VIEWS, progress=False)
    assert not (tmp_path / "bad").exists()
    # `mv3d reconstruct` and `reconstruct()` on the generation remake the same kind of mesh by default
    from mv3d.reconstruct import reconstruct

    method, note, problems = _recorded(res.out_dir)
    assert method == "hull" and "as the generation's own mesh" in note and not problems
    remade = reconstruct(res.out_dir, texture="none", resolution=32, progress=False)
    assert remade.method == "hull" and not any("run.json" in w for w in remade.warnings)
    assert (
        reconstruct(res.out_dir, method="field", texture="none", resolution=32, progress=False).method
        == "field"
    )
    # without a mesh an unknown method is never looked at
    generate([img], tmp_path / "no_mesh", model=bad, views=VIEWS, progress=False, mesh=False)
    assert _recorded(tmp_path / "no_mesh") == ("field", None, [])  # no mesh recorded
    # and a --no-mesh generation is meshed later as its model would have meshed it (it was the field)
    generate([img], tmp_path / "later", model=model, views=VIEWS, progress=False, mesh=False)
    method, note, _ = _recorded(tmp_path / "later")
    assert method == "hull" and "the generation's model's (it made no mesh)" in note
    # the recorded method is outside the job keys: a --no-mesh folder written before it was recorded
    # is still the same job, and kept
    run_file = tmp_path / "later" / "run.json"
    run = json.loads(run_file.read_text())
    assert run.pop("mesh_method") == "hull" and run["reconstruct_options"] == {}
    run_file.write_text(json.dumps(run))
    said: list[str] = []
    generate([img], tmp_path / "later", model=model, views=VIEWS, progress=False, mesh=False, log=said.append)
    assert any("already generated with the same settings: kept" in s for s in said), said
    # a method the caller names for a --no-mesh generation is the one recorded
    generate(
        [img], tmp_path / "named", model=model, views=VIEWS, progress=False, mesh=False,
        reconstruct_options={"method": "field"},
    )  # fmt: skip
    assert _recorded(tmp_path / "named")[0] == "field"
    assert json.loads((tmp_path / "named" / "run.json").read_text())["mesh_method"] == "field"
    with pytest.raises(InputError, match="default_mesh_method '../x'"):
        ViewGenerator.load(_with_mesh_method(tiny_model, tmp_path / "path_model", "../x"))


def _recorded(folder: Path) -> tuple[str, str | None, list[str]]:
    """`mv3d.reconstruct.recorded_method` of `folder`: (method, why, the problems it met)."""
    from mv3d.reconstruct import recorded_method

    problems: list[str] = []
    method, why = recorded_method(folder, problems)
    return method, why, problems


def test_reconstruct_reads_a_generations_method_defensively(tmp_path: Path):
    """run.json is a file like any other: too large, not JSON, not an object, or naming no known method at
    any level, it is ignored with one note and the field is used; a folder without one (a render) gets the
    field silently."""
    from mv3d.generate.record import MAX_RUN_BYTES, read_run

    folder = tmp_path / "views"
    folder.mkdir()
    assert _recorded(folder) == ("field", None, [])
    run = folder / "run.json"
    for content, expected in (
        ("{not json", "not readable JSON"),
        ("[" * 100000 + "]" * 100000, "not readable JSON"),  # a RecursionError traceback before
        (json.dumps(["a list"]), "not a JSON object"),
        (json.dumps({"reconstruction": {"settings": {"method": "../../evil"}}}), "unknown mesh method"),
        (json.dumps({"reconstruction": {"settings": {"method": ["hull"]}}}), "unknown mesh method"),
        (" " * (MAX_RUN_BYTES + 1), "not read"),
    ):
        run.write_text(content)
        method, why, (note,) = _recorded(folder)
        assert method == "field" and why is None and expected in note and str(run) in note
        assert note.endswith("; ignored, method field")
    for content in ({"reconstruction": ["hull"]}, {"reconstruction": {"settings": "hull"}}, {}):
        run.write_text(json.dumps(content))
        assert _recorded(folder) == ("field", None, [])
    # generate's own resume reads through the same bound: an oversized run.json is no record at all
    run.write_text(" " * (MAX_RUN_BYTES + 1))
    problems: list[str] = []
    assert read_run(folder, problems) is None and len(problems) == 1


def test_mirror_average_follows_the_model_unless_the_caller_sets_it(tmp_path: Path, tiny_model: Path, capsys):
    """`--mirror-average/--no-mirror-average` (GenerateSettings.mirror_average) reaches the pipeline, and
    left out takes the model's `default_mirror_average` (the default model's is on); run.json records
    the value in effect, so a rerun with the other value is refused as other settings."""
    model = tmp_path / "mirrored_model"
    shutil.copytree(tiny_model, model)
    info = json.loads((model / "mv3d_model.json").read_text())
    (model / "mv3d_model.json").write_text(json.dumps({**info, "default_mirror_average": True}))
    img = _object_png(tmp_path / "obj.png")
    base = ["generate", str(img), "--views", str(VIEWS), "--model", str(model), "--no-mesh", "--quiet"]
    base += ["--ensemble", "2", "--device", "cpu"]
    runs = {}
    for name, extra in (("default", []), ("on", ["--mirror-average"]), ("off", ["--no-mirror-average"])):
        code, err = _run_cli([*base, "--out", str(tmp_path / name), *extra], capsys)
        assert code == 0, err
        runs[name] = json.loads((tmp_path / name / "run.json").read_text())["mirror_average"]
    assert runs == {"default": True, "on": True, "off": False}
    views = {k: read_orbit_dataset(tmp_path / k).load_images() for k in runs}
    assert np.array_equal(views["default"], views["on"])
    assert not np.array_equal(views["on"], views["off"])  # one of the two draws is the mirrored one
    code, err = _run_cli([*base, "--out", str(tmp_path / "on"), "--no-mirror-average"], capsys)
    assert code == 2 and "mirror_average true there, false now" in err, err
    with pytest.raises(SettingError, match="mirror_average 1: expected true or false"):
        GenerateSettings(mirror_average=1)


def test_views_default_to_a_fixed_count_models_own(tmp_path: Path, tiny_model: Path, capsys):
    """`--views` left out takes the model's fixed count (SVD-XT's 25 failed as '--views 21: ... generates
    exactly 25 views', though options left out take the model's values)."""
    fixed = tmp_path / "fixed"
    shutil.copytree(tiny_model, fixed)
    info = json.loads((fixed / "mv3d_model.json").read_text())
    (fixed / "mv3d_model.json").write_text(json.dumps({**info, "num_frames": VIEWS}))
    img = _object_png(tmp_path / "obj.png")
    for model, count in ((fixed, VIEWS), (tiny_model, 21)):  # any count: GenerateSettings' 21
        out = tmp_path / f"o_{count}"
        args = ["generate", str(img), "--out", str(out), "--model", str(model), "--no-mesh", "--quiet"]
        code, err = _run_cli(args, capsys)
        assert code == 0, err
        assert len(list((out / "views").glob("*.png"))) == count


def test_small_python_api_checks(tmp_path: Path, gen: ViewGenerator):
    """From Python: a bad matte method is refused for a cut-out too (its alpha wins, so it was accepted
    silently); a negative seed is refused by ViewGenerator as by generate (torch wrapped it); a printed
    GenerateResult names its folder, not its pixels."""
    from mv3d.generate import GenerateResult
    from mv3d.preprocess import preprocess_image
    from render.cameras import static_orbit
    from render.common import InputError

    with pytest.raises(InputError, match="seed -1: expected a whole number"):
        gen(np.zeros((64, 64, 4), np.uint8), static_orbit(gen.num_frames or 4), seed=-1)
    cutout = np.zeros((64, 64, 4), np.uint8)
    cutout[16:48, 16:48] = (200, 40, 30, 255)
    with pytest.raises(InputError, match="magic"):
        preprocess_image(cutout, 32, matte_method="magic")
    result = GenerateResult(Path("a.png"), Path("out/a"), np.zeros((21, 64, 64, 4), np.uint8), None)
    assert "views" not in repr(result) and "out/a" in repr(result)


def test_without_cameras_is_the_model_asked_for_every_view_at_the_input_camera(gen: ViewGenerator):
    """`mv3d eval`'s no-camera baseline, from Python: the same views as the model called with every
    camera at the input's, whatever the orbit asks."""
    from render.cameras import Orbit, static_orbit

    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 20:44] = (200, 40, 30, 255)
    orbit = static_orbit(gen.num_frames or 4, elevation_deg=10.0)
    n = len(orbit)
    same = Orbit(np.zeros(n), np.full(n, 10.0), orbit.radius, orbit.fov_deg, "custom")
    assert np.array_equal(gen.without_cameras()(image, orbit, 3), gen(image, same, 3))
    assert not np.array_equal(gen(image, orbit, 3), gen(image, same, 3))  # the cameras do matter
    from mv3d.reconstruct import mesh_function
    from render.common import InputError

    with pytest.raises(InputError, match="reconstruct_method 'marching': expected one of field, hull"):
        mesh_function("marching", field="reconstruct_method")
