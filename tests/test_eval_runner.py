"""The benchmark runner end to end on two procedural objects, resuming, the report, and `mv3d eval`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.compare import compare, format_comparison
from eval.runner import build_baselines, resize_views, run_benchmark
from render.common import InputError


@dataclass
class ProceduralSource:
    """ObjectSource-like: procedural object `index` of seed 0, normalised to the unit cube."""

    object_id: str
    index: int
    spec: str = "procedural:2:0"
    meta: dict = field(default_factory=dict)

    def load(self):
        from render.meshes import LoadedMesh, normalize_scene
        from render.procedural import procedural_object

        scene, s2w = normalize_scene(procedural_object(0, self.index))
        return LoadedMesh(scene, s2w, self.spec)


def _sources():
    try:  # the real resolver when render/ has it
        from render.sources import resolve_sources

        return list(resolve_sources(["procedural:2:0"]))
    except ImportError:
        return [ProceduralSource("procedural-0-0", 0), ProceduralSource("procedural-0-1", 1)]


class TinyGenerator:
    """A deterministic stand-in for the model: the input slid sideways per view, seeded noise, half size."""

    def __init__(self, shift: int = 2, noise: int = 8):
        self.shift, self.noise, self.calls = shift, noise, 0

    def __call__(self, image, orbit, seed):
        self.calls += 1
        rng = np.random.default_rng(seed)
        views = np.stack([np.roll(image, self.shift * i, axis=1) for i in range(len(orbit))])[
            :, ::2, ::2
        ].copy()
        noise = rng.integers(-self.noise, self.noise + 1, views.shape[:3] + (3,))
        views[..., :3] = np.clip(views[..., :3].astype(int) + noise, 0, 255)
        return views


def _tiny_lpips():
    from eval.lpips import LPIPS

    torch.manual_seed(0)
    model = LPIPS("alex")
    for lin in model.lins:
        lin.weight.data.uniform_(0, 1)
    return model


def _sphere_reconstruct(dataset_dir):
    import trimesh

    return trimesh.creation.icosphere(3, radius=0.35)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "a"
    gen = TinyGenerator()
    metrics = run_benchmark(
        _sources(), out, gen, views=4, resolution=32, baselines=("copy",), reconstruct_fn=_sphere_reconstruct,
        seed=0, lpips_model=_tiny_lpips(), mesh_points=2000, iou_resolution=24, model_name="tiny",
        model_hash="abc123", progress=False,
    )  # fmt: skip
    return out, gen, metrics


@pytest.mark.slow
def test_end_to_end_outputs(run_a):
    out, gen, metrics = run_a
    assert gen.calls == 2
    text = (out / "metrics.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}: not strict JSON"))
    assert data == json.loads(json.dumps(metrics))
    assert data["model"] == {"name": "tiny", "hash": "abc123"}
    assert data["settings"]["views"] == 4 and "torch" in data["versions"]
    assert data["methods"] == ["ours", "copy"]
    assert len(data["objects"]) == 2
    obj = next(iter(data["objects"].values()))
    ours, copy = obj["methods"]["ours"], obj["methods"]["copy"]
    for metric in ("psnr", "ssim", "lpips", "mask_iou", "reproj_err"):
        assert len(ours["per_view"][metric]) == 4
    # The copy baseline reproduces the input exactly at frame 0 and nowhere else.
    assert copy["per_view"]["psnr"][0] == 100.0 and copy["per_view"]["lpips"][0] < 1e-6
    assert copy["novel"]["psnr"] == pytest.approx(np.mean(copy["per_view"]["psnr"][1:]))
    assert ours["novel"]["psnr"] < 100.0
    assert set(ours["mesh"]) >= {"chamfer", "volume_iou", "normal_consistency", "f_score@0.05", "reproj_self"}
    # The reconstruction's ceiling: the same reconstruct_fn on the ground-truth views.
    assert set(obj["gt_views_mesh"]) >= {"chamfer", "volume_iou"}
    assert data["aggregate"]["gt-views"]["mesh"]["chamfer"]["n"] == 2
    agg = data["aggregate"]["ours"]["novel"]["psnr"]
    vals = [o["methods"]["ours"]["novel"]["psnr"] for o in data["objects"].values()]
    assert (
        agg["n"] == 2
        and agg["mean"] == pytest.approx(np.mean(vals))
        and agg["median"] == pytest.approx(np.median(vals))
    )
    report = (out / "report.md").read_text()
    assert "measured on different data" in report and "| ours |" in report and "SV3D_p" in report
    assert "ceiling" in report and "F@0.05" in report
    for fig in ("per_view.png", "histogram.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    assert len(list((out / "figures").glob("sheet_*.png"))) == 2
    # Views are stored as orbit datasets (and can be reconstructed or re-scored).
    from render.dataset import read_orbit_dataset

    ds = read_orbit_dataset(next((out / "objects").iterdir()) / "ours")
    assert ds.load_images().shape == (4, 32, 32, 4)


def test_resume_and_determinism(run_a, tmp_path):
    out, _, metrics = run_a
    gen = TinyGenerator()
    again = run_benchmark(
        _sources(), out, gen, views=4, resolution=32, reconstruct_fn=_sphere_reconstruct, seed=0,
        lpips_model=_tiny_lpips(), mesh_points=2000, iou_resolution=24, model_name="tiny", model_hash="abc123",
        figures=False, progress=False,
    )  # fmt: skip
    assert gen.calls == 0  # every object came from the cache
    assert again["objects"] == json.loads(json.dumps(metrics["objects"]))
    # A fresh folder with the same seed gives the same numbers; a changed setting recomputes.
    fresh = run_benchmark(
        _sources()[:1], tmp_path / "b", TinyGenerator(), views=4, resolution=32, figures=False, progress=False
    )
    oid = next(iter(fresh["objects"]))
    assert (
        fresh["objects"][oid]["methods"]["ours"]["per_view"]["psnr"]
        == metrics["objects"][oid]["methods"]["ours"]["per_view"]["psnr"]
    )
    gen2 = TinyGenerator()
    run_benchmark(
        _sources()[:1], tmp_path / "b", gen2, views=4, resolution=32, seed=1, figures=False, progress=False
    )
    assert gen2.calls == 1


def test_mesh_results_cached_under_another_metric_definition_are_scored_again(run_a, monkeypatch, tmp_path):
    """A cached object whose meshes were scored by an older definition of the mesh metrics is recomputed;
    view-only results do not depend on it (their cache key has no mesh metrics version)."""
    import eval.mesh_metrics
    from eval.runner import EvalSettings

    assert EvalSettings().key() == EvalSettings(mesh_metrics=None).key()
    # settings added since leave the keys of runs that do not use them as they were (the keys
    # mv3d wrote before scorer_weights existed): their cached results are reused, not scored again
    assert EvalSettings().key() == EvalSettings(scorer_weights=None).key() == "3c87d07ee1dcf817"
    assert EvalSettings(reconstruct=True, mesh_metrics=2).key() == "92535f90e7322cfe"
    assert (
        EvalSettings(reconstruct=True, mesh_metrics=1).key()
        != EvalSettings(reconstruct=True, mesh_metrics=2).key()
    )
    import shutil

    out = tmp_path / "a"
    shutil.copytree(run_a[0], out)  # the module's run stays as it is for the other tests
    metrics = run_a[2]
    assert metrics["settings"]["mesh_metrics"] == eval.mesh_metrics.MESH_METRICS_VERSION
    monkeypatch.setattr(eval.mesh_metrics, "MESH_METRICS_VERSION", eval.mesh_metrics.MESH_METRICS_VERSION + 1)
    gen = TinyGenerator()
    run_benchmark(
        _sources(), out, gen, views=4, resolution=32, reconstruct_fn=_sphere_reconstruct, seed=0,
        lpips_model=_tiny_lpips(), mesh_points=2000, iou_resolution=24, model_name="tiny", model_hash="abc123",
        figures=False, progress=False,
    )  # fmt: skip
    assert gen.calls == len(metrics["objects"])


def test_results_scored_with_other_lpips_weights_are_scored_again(run_a, tmp_path):
    """The LPIPS backbone's name does not say which weights scored a cached object: their digest does."""
    import shutil

    from eval.runner import weights_digest

    assert weights_digest(_tiny_lpips()) == weights_digest(_tiny_lpips())
    assert run_a[2]["settings"]["scorer_weights"] == {"lpips": weights_digest(_tiny_lpips())}
    out = tmp_path / "a"
    shutil.copytree(run_a[0], out)
    other = _tiny_lpips()
    other.lins[0].weight.data.add_(0.5)
    assert weights_digest(other) != weights_digest(_tiny_lpips())
    gen = TinyGenerator()
    run_benchmark(
        _sources(), out, gen, views=4, resolution=32, reconstruct_fn=_sphere_reconstruct, seed=0,
        lpips_model=other, mesh_points=2000, iou_resolution=24, model_name="tiny", model_hash="abc123",
        figures=False, progress=False,
    )  # fmt: skip
    assert gen.calls == len(run_a[2]["objects"])


class _TinyClip:
    """A CLIP-S scorer's interface (`model`, `embed`) on a one-layer network."""

    def __init__(self, bias: float = 0.0):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 4)
        self.model.bias.data.add_(bias)

    def embed(self, images):
        colour = images.float().flatten(1, -2).mean(1)[:, :3]
        return torch.nn.functional.normalize(self.model(colour), dim=-1)


def test_results_scored_with_other_clip_weights_are_scored_again(tmp_path):
    """CLIP-S weights key the cache as LPIPS weights do: a folder of weights can change under one path."""
    from eval.runner import weights_digest

    out = tmp_path / "e"
    kwargs = dict(views=4, resolution=32, figures=False, progress=False)
    first = run_benchmark(_sources()[:1], out, TinyGenerator(), clip_scorer=_TinyClip(), **kwargs)
    assert first["settings"]["scorer_weights"] == {"clip": weights_digest(_TinyClip().model)}
    gen = TinyGenerator()
    run_benchmark(_sources()[:1], out, gen, clip_scorer=_TinyClip(), **kwargs)
    assert gen.calls == 0  # the same weights: reused
    run_benchmark(_sources()[:1], out, gen, clip_scorer=_TinyClip(bias=0.5), **kwargs)
    assert gen.calls == 1  # other weights: scored again


def test_a_second_eval_on_the_same_out_is_refused(tmp_path):
    """Two evals on one --out rewrote each other's results and report: the second stops with one line."""
    from render.common import lock_folder

    out = tmp_path / "e"
    out.mkdir()
    held = lock_folder(out, "eval")  # as a running eval holds it
    gen = TinyGenerator()
    try:
        with pytest.raises(InputError, match=r"^out .*: another job \(mv3d eval, pid \d+\) is writing there"):
            run_benchmark(_sources()[:1], out, gen, views=4, resolution=32, figures=False, progress=False)
    finally:
        held.close()
    assert gen.calls == 0
    run_benchmark(_sources()[:1], out, gen, views=4, resolution=32, figures=False, progress=False)
    assert gen.calls == 1  # free again


def test_compare_paired(tmp_path, run_a):
    out_a = run_a[0]
    worse = run_benchmark(
        _sources(),
        tmp_path / "w",
        TinyGenerator(shift=5, noise=40),
        views=4,
        resolution=32,
        figures=False,
        progress=False,
    )
    rows = compare(out_a / "metrics.json", worse)
    by = {(r.group, r.metric): r for r in rows}
    psnr = by[("novel", "psnr")]
    assert psnr.n == 2 and psnr.mean_diff < 0 and psnr.p_value is not None
    assert ("mesh", "chamfer") not in by  # run B has no meshes
    same = compare(out_a / "metrics.json", out_a / "metrics.json")
    assert all(r.mean_diff == 0 and r.p_value is None and r.verdict == "no significant change" for r in same)
    assert "Wilcoxon" in format_comparison(rows)


def test_baselines_table_and_resize():
    assert set(build_baselines(["copy"])) == {"copy"}
    with pytest.raises(InputError, match="no-camera"):
        build_baselines(["no-camera"])
    with pytest.raises(InputError, match="expected one of"):
        build_baselines(["nope"])
    rgb = np.full((2, 8, 8, 3), 200, np.uint8)
    out = resize_views(rgb, 16)
    assert out.shape == (2, 16, 16, 4) and np.all(out[..., 3] == 255) and np.all(out[..., :3] == 200)
    with pytest.raises(InputError):
        resize_views(np.zeros((8, 8, 4), np.uint8), 16)


def _cli(argv, capsys):
    from mv3d.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return exc.value.code, cap.out, cap.err


def test_cli_compare_and_errors(run_a, capsys, tmp_path):
    a = str(run_a[0] / "metrics.json")
    code, out, err = _cli(["eval", "--compare", a, a], capsys)
    assert code in (0, None), err
    assert "novel/psnr" in out and "Wilcoxon" in out
    code, out, err = _cli(["eval", "--compare", a, str(tmp_path / "missing.json")], capsys)
    assert (
        code == 2
        and err.startswith("mv3d: error:")
        and "missing.json" in err
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = _cli(["eval", "--objects", "procedural:1:0"], capsys)
    assert code == 2 and "--out" in err
    code, _, err = _cli(
        ["eval", "--objects", "procedural:1:0", "--out", str(tmp_path), "--baselines", "copy,bogus"], capsys
    )
    assert code == 2 and "bogus" in err
    code, _, err = _cli(
        ["eval", "--objects", "a", "b", "--out", str(tmp_path), "--lpips-weights", str(tmp_path)], capsys
    )
    assert code == 2 and "alexnet-owt-7be5be79.pth" in err
    code, _, err = _cli(
        ["eval", "--objects", "procedural:1:0", "--out", str(tmp_path), "--up-axis", "x"], capsys
    )
    assert code == 2 and "--up-axis 'x': expected y or z" in err and len(err.strip().splitlines()) == 1


def test_up_axis_reads_mesh_files_upright_and_names_them_apart(tmp_path):
    """`up_axis="y"`: a +Y-up OBJ is rendered standing (its tall side up), under another object id."""
    import trimesh

    mesh = tmp_path / "post.obj"
    trimesh.creation.box(extents=(0.2, 1.0, 0.2)).export(mesh)  # a post, tall along +Y
    runs = {
        axis: run_benchmark(
            [str(mesh)],
            tmp_path / f"up_{axis}",
            TinyGenerator(),
            views=3,
            resolution=32,
            baselines=(),
            progress=False,
            figures=False,
            up_axis=axis,
        )  # fmt: skip
        for axis in (None, "y")
    }
    (plain_id,), (y_id,) = (list(m["objects"]) for m in runs.values())
    assert plain_id != y_id and runs["y"]["objects"][y_id]["meta"]["up_axis"] == "y"

    def height_over_width(run_dir: Path, object_id: str) -> float:
        # view 1 (azimuth 120): a post lying along view 0's line of sight shows its length here
        alpha = np.asarray(Image.open(run_dir / "objects" / object_id / "gt" / "views" / "001.png"))[..., 3]
        rows, cols = np.nonzero(alpha > 127)
        return (np.ptp(rows) + 1) / (np.ptp(cols) + 1)

    assert height_over_width(tmp_path / "up_y", y_id) > 2.0
    assert height_over_width(tmp_path / "up_None", plain_id) < 0.5


def test_cli_help_lists_the_options():
    import subprocess

    res = subprocess.run(
        [sys.executable, "-m", "mv3d", "eval", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and "--objects" in res.stdout and "--compare" in res.stdout


@pytest.mark.slow
def test_cli_end_to_end_with_the_tiny_model(tmp_path, capsys):
    pipeline = pytest.importorskip("video_prior.pipeline")
    from video_prior.components import tiny_config

    pipeline.MultiViewPipeline.from_config(tiny_config(num_frames=3, sample_size=16), seed=0).save_pretrained(
        tmp_path / "model"
    )
    out = tmp_path / "report"
    argv = ["eval", "--objects", "procedural:1:0", "--out", str(out), "--model", str(tmp_path / "model")]
    argv += ["--views", "3", "--baselines", "copy,no-camera", "--device", "cpu"]
    argv += ["--no-camera-model", str(tmp_path / "model")]  # stands in for a separately trained network
    code, stdout, err = _cli(argv, capsys)
    assert code in (0, None), err
    assert "no-camera:" in stdout and "report:" in stdout
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"] == ["ours", "copy", "no-camera"]
    assert data["model"]["hash"] and data["settings"]["model"] == str(tmp_path / "model")
    assert data["settings"]["resolution"] == 16  # the model's own view size
    assert data["settings"]["extra"]["no_camera"]["hash"] == data["model"]["hash"]
    (obj,) = data["objects"].values()
    assert len(obj["methods"]["no-camera"]["per_view"]["psnr"]) == 3


class BrokenSource:
    object_id, spec, meta = "broken", "broken.obj", {}

    def load(self):
        raise InputError("broken.obj: cannot read OBJ file: garbage")


def test_unloadable_objects_are_listed_and_skipped(tmp_path):
    metrics = run_benchmark(
        [BrokenSource(), *_sources()[:1]],
        tmp_path,
        TinyGenerator(),
        views=3,
        resolution=16,
        baselines=(),
        progress=False,
    )
    assert metrics["failed"] == {"broken": "broken.obj: cannot read OBJ file: garbage"}
    assert len(metrics["objects"]) == 1
    assert "could not be loaded" in (tmp_path / "report.md").read_text()
    with pytest.raises(InputError, match="no object could be loaded"):
        run_benchmark(
            [BrokenSource()], tmp_path / "none", TinyGenerator(), views=3, resolution=16, progress=False
        )


def test_an_object_the_renderer_cannot_draw_is_listed_and_skipped(tmp_path, monkeypatch):
    # A file's materials can make the rasteriser fail (pyrender's shader for a texture without UVs
    # did): the run records that object and scores the others instead of stopping with a traceback.
    from render.renderers import fast

    real = fast.FastRenderer.render_cameras
    calls = {"n": 0}

    def first_fails(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("Shader compile failure (0): uv_0 undeclared\nmore lines")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fast.FastRenderer, "render_cameras", first_fails)
    sources = _sources()[:2]
    metrics = run_benchmark(
        sources, tmp_path, TinyGenerator(), views=3, resolution=16, baselines=(), progress=False
    )
    assert list(metrics["failed"]) == [sources[0].object_id]
    assert "cannot render the ground truth: Shader compile failure" in metrics["failed"][sources[0].object_id]
    assert len(metrics["objects"]) == 1


def test_a_cyclic_gltf_and_a_reader_crash_are_listed_and_the_run_goes_on(tmp_path):
    """A glTF whose nodes form a cycle stopped a whole eval run with KeyError: 'world'."""
    from render.sources import file_source

    doc = {
        "asset": {"version": "2.0"},
        "scenes": [{"nodes": [0]}],
        "nodes": [{"children": [1]}, {"children": [0]}],
    }
    cyclic = tmp_path / "cyclic.gltf"
    cyclic.write_text(json.dumps(doc))

    class Crashes:
        object_id, spec, meta = "crashes", "crashes.glb", {}

        def load(self):
            raise KeyError("world")

    metrics = run_benchmark(
        [file_source(cyclic), Crashes(), *_sources()[:1]],
        tmp_path / "run",
        TinyGenerator(),
        views=3,
        resolution=16,
        baselines=(),
        progress=False,
    )
    assert len(metrics["objects"]) == 1 and len(metrics["failed"]) == 2
    assert any("form a cycle" in why for why in metrics["failed"].values())
    assert "cannot load the mesh" in metrics["failed"]["crashes"]


def test_views_that_give_no_mesh_are_recorded_not_fatal(tmp_path):
    """One method's views admitting no mesh (21 copies of an off-centre silhouette carve nothing) is a
    result: that method's mesh is `{"failed": reason}`, left out of the means, listed in the report, and
    every other method and object is still scored."""

    def copy_has_no_mesh(dataset_dir):
        if Path(dataset_dir).name == "copy":
            raise InputError("the silhouettes have no common volume inside the unit cube")
        return _sphere_reconstruct(dataset_dir)

    out = tmp_path / "run"
    metrics = run_benchmark(
        _sources(), out, TinyGenerator(), views=4, resolution=32, baselines=("copy",),
        reconstruct_fn=copy_has_no_mesh, seed=0, mesh_points=500, iou_resolution=16, model_name="tiny",
        model_hash="abc123", figures=False, progress=False,
    )  # fmt: skip
    for obj in metrics["objects"].values():
        assert obj["methods"]["copy"]["mesh"] == {
            "failed": "the silhouettes have no common volume inside the unit cube"
        }
        assert "chamfer" in obj["methods"]["ours"]["mesh"] and "chamfer" in obj["gt_views_mesh"]
    agg = metrics["aggregate"]
    assert agg["ours"]["mesh"]["chamfer"]["n"] == 2 and "mesh" not in agg["copy"]
    assert agg["copy"]["novel"]["psnr"]["n"] == 2  # its views are scored as usual
    report = (out / "report.md").read_text()
    assert "Views that gave no mesh (2" in report and "copy: the silhouettes have no common volume" in report
    # the recipe's mesh table compares only objects where both made a mesh, and says how many were left out
    from recipes.default_model.table import mesh_table

    text = mesh_table([str(out / "metrics.json")])
    assert "2 of 2 objects gave no mesh from copy" in text and "no object with a mesh from each" in text


def test_eval_meshes_with_the_models_mesh_method_unless_named(tmp_path, tiny_model, capsys):
    """`mv3d eval --reconstruct` meshes every method's views as `mv3d generate` would for the evaluated
    model (its default_mesh_method), unless --reconstruct-method names one."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    info = json.loads((model / "mv3d_model.json").read_text())
    (model / "mv3d_model.json").write_text(json.dumps({**info, "default_mesh_method": "hull"}))
    base = [
        "eval",
        "--objects",
        "procedural:1:0",
        "--model",
        str(model),
        "--views",
        "3",
        "--resolution",
        "32",
    ]
    base += ["--baselines", "copy", "--reconstruct", "--renderer", "fast"]
    code, _, err = _cli([*base, "--out", str(tmp_path / "model_method")], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "model_method" / "metrics.json").read_text())
    assert metrics["settings"]["extra"]["reconstruct_method"] == "hull"
    assert "volume_iou" in metrics["aggregate"]["copy"]["mesh"]
    code, _, err = _cli([*base, "--out", str(tmp_path / "bad"), "--reconstruct-method", "marching"], capsys)
    assert code == 2 and "--reconstruct-method 'marching': expected one of field, hull" in err


def test_a_resolution_above_the_image_side_bound_is_refused_before_any_render(tmp_path, capsys):
    """README, "Bounded resources": image sides (`--resolution`) are at most 4096 pixels. `mv3d eval
    --resolution 4097` was not refused: it began rendering 4097-pixel ground truth and was killed for
    memory. Now one line and exit code 2, and nothing is rendered or generated."""
    gen = TinyGenerator()
    with pytest.raises(InputError, match=r"^resolution 4097: expected pixels from 16 to 4096$"):
        run_benchmark(_sources()[:1], tmp_path / "r", gen, views=3, resolution=4097, progress=False)
    assert gen.calls == 0
    code, _, err = _cli(
        ["eval", "--objects", "procedural:1:0", "--out", str(tmp_path / "c"), "--resolution", "4097"], capsys
    )
    assert (
        code == 2 and err.startswith("mv3d: error: --resolution 4097") and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "c" / "objects").exists()


def test_a_report_folder_holding_the_users_files_is_refused_and_left_alone(tmp_path, capsys):
    """`--out` on a folder with the user's own report.md was written into: report.md, metrics.json and
    figures replaced. Now: refused with one line before any work; an earlier eval report, marked or
    written before eval marked its folders, is resumed."""
    from render.common import OUTPUT_MARKER

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    with pytest.raises(InputError, match="not an mv3d output"):
        run_benchmark(_sources()[:1], mine, TinyGenerator(), views=3, resolution=16, progress=False)
    code, _, err = _cli(
        ["eval", "--objects", "procedural:1:0", "--out", str(mine), "--baselines", ""], capsys
    )
    assert code == 2 and err.startswith("mv3d: error: --out ") and len(err.strip().splitlines()) == 1
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    code, _, err = _cli(["eval", "--objects", "procedural:1:0", "--out", str(a_file)], capsys)
    assert code == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    assert (mine / "report.md").read_text() == "my notes\n" and a_file.read_text() == "mine\n"
    # Its own output is marked and resumed; so is an unmarked report of an earlier version.
    out = tmp_path / "run"
    run_benchmark(_sources()[:1], out, TinyGenerator(), views=3, resolution=16, figures=False, progress=False)
    assert json.loads((out / OUTPUT_MARKER).read_text())["command"] == "eval"
    (out / OUTPUT_MARKER).unlink()
    gen = TinyGenerator()
    run_benchmark(_sources()[:1], out, gen, views=3, resolution=16, figures=False, progress=False)
    assert gen.calls == 0 and (out / OUTPUT_MARKER).is_file()


def test_the_report_counts_objects_and_lists_every_mesh_that_failed(tmp_path):
    """Each table row says over how many objects its means are; a ceiling mesh that failed (the
    ground-truth views gave none) was dropped from the ceiling's mean without a word; the mesh section
    names the reconstruction method."""
    from eval.report import render_markdown

    calls = {"gt": 0}

    def first_gt_has_no_mesh(dataset_dir):
        if Path(dataset_dir).name == "gt":
            calls["gt"] += 1
            if calls["gt"] == 1:
                raise InputError("the silhouettes have no common volume inside the unit cube")
        return _sphere_reconstruct(dataset_dir)

    metrics = run_benchmark(
        _sources(), tmp_path / "run", TinyGenerator(), views=4, resolution=32, baselines=("copy",),
        reconstruct_fn=first_gt_has_no_mesh, mesh_points=500, iou_resolution=16, figures=False,
        progress=False, extra_settings={"reconstruct_method": "hull"},
    )  # fmt: skip
    first = next(iter(metrics["objects"]))
    assert metrics["aggregate"]["gt-views"]["mesh"]["chamfer"]["n"] == 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"- `{first}`, ground-truth views (ceiling): the silhouettes have no common volume" in report
    assert "Meshes made by `mv3d reconstruct --method hull`" in report
    assert "| ours | mv3d | 2 | " in report and "| copy | mv3d | 2 | " in report
    assert "| same reconstruction from the ground-truth views (ceiling) | mv3d | 1 | " in report
    # a metric scored on fewer objects than its row says so in its cell
    obj = metrics["objects"][first]["methods"]["ours"]
    obj["novel"]["reproj_err"] = None
    from eval.runner import aggregate

    metrics["aggregate"] = aggregate(metrics["objects"])
    line = next(ln for ln in render_markdown(metrics).splitlines() if ln.startswith("| ours | mv3d | 2 |"))
    assert line.endswith("(n=1) |")


def test_selected_objects_the_sources_do_not_hold_are_reported(tmp_path, capsys):
    """A selection naming an object the sources lack (a typo, another catalogue) was dropped without a
    word: the report said "1 objects" for a selection of 2."""
    (kept,) = [o.object_id for o in _sources()[:1]]
    selection = tmp_path / "objects.txt"
    selection.write_text(f"{kept}\nno-such-object\n")
    metrics = run_benchmark(
        ["procedural:2:0"], tmp_path / "run", TinyGenerator(), views=3, resolution=16, baselines=(),
        select=str(selection), figures=False,
    )  # fmt: skip
    assert list(metrics["objects"]) == [kept] and metrics["not_found"] == ["no-such-object"]
    cap = capsys.readouterr()
    assert "no-such-object" in cap.out + cap.err  # said while the run goes on
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Selected objects the sources do not hold (1, not scored)" in report
    assert "- `no-such-object`" in report


def test_cli_refuses_conflicting_and_misnamed_options(tmp_path, tiny_model, capsys):
    """Options that do nothing in the run asked for were ignored without a word; errors named the wrong
    flag (`----device`, `--model` for `--no-camera-model`)."""
    base = ["eval", "--objects", "procedural:1:0", "--out", str(tmp_path / "r")]
    cases = [
        (["--reconstruct-method", "hull"], "--reconstruct-method hull: only with --reconstruct"),
        (["--method", "copy"], "--method copy: only with --compare"),
        (["--elevation", "95"], "--elevation 95: expected degrees in [-90, 90]"),
        (["--device", "gpu"], "mv3d: error: --device gpu: expected auto, cpu, cuda or cuda:N"),
        (
            [
                "--model",
                str(tiny_model),
                "--baselines",
                "no-camera",
                "--no-camera-model",
                str(tmp_path / "nope"),
            ],
            f"mv3d: error: --no-camera-model {tmp_path / 'nope'}: folder does not exist",
        ),
    ]
    for extra, message in cases:
        code, _, err = _cli([*base, *extra], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    a = str(tmp_path / "a.json")
    code, _, err = _cli(["eval", "--compare", a, a, "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "--compare prints its table and writes no report" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_a_mesh_edited_in_place_is_scored_again(tmp_path):
    """The object id of a mesh file comes from its path: a mesh fixed and saved over the old one kept its
    cached result, so the report showed the old mesh's numbers and pictures."""
    import os

    import trimesh

    from render.sources import file_source

    mesh = tmp_path / "mine.obj"
    trimesh.creation.box(extents=(0.8, 0.4, 0.3)).export(mesh)
    out = tmp_path / "run"
    first = run_benchmark(
        [str(mesh)], out, TinyGenerator(), views=3, resolution=16, figures=False, progress=False
    )
    gen = TinyGenerator()
    run_benchmark([str(mesh)], out, gen, views=3, resolution=16, figures=False, progress=False)
    assert gen.calls == 0  # unchanged: from the cache
    trimesh.creation.icosphere(2, 0.4).export(mesh)
    os.utime(mesh, ns=(1, 1))  # a stamp of its own even where the clock's step is coarse
    again = run_benchmark([str(mesh)], out, gen, views=3, resolution=16, figures=False, progress=False)
    assert gen.calls == 1
    oid = file_source(mesh).object_id
    assert again["objects"][oid]["source_stamp"] == [mesh.stat().st_size, 1]
    assert (
        again["objects"][oid]["methods"]["ours"]["novel"] != first["objects"][oid]["methods"]["ours"]["novel"]
    )


def test_a_mesh_file_is_written_whole_or_not_at_all(tmp_path):
    """`OUT/objects/<id>/<method>_mesh.ply` was written in place: a run killed mid-write left half a file."""
    import trimesh

    class KilledWhileWriting(trimesh.Trimesh):
        def export(self, path, file_type=None, **kwargs):
            Path(path).write_bytes(b"ply\nformat binary_little_endian 1.0\n")
            raise KeyboardInterrupt

    def reconstruct(dataset_dir):
        sphere = trimesh.creation.icosphere(2, radius=0.35)
        return KilledWhileWriting(sphere.vertices, sphere.faces)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(
            _sources()[:1], out, TinyGenerator(), views=3, resolution=16, baselines=(),
            reconstruct_fn=reconstruct, figures=False, progress=False,
        )  # fmt: skip
    assert not list(out.rglob("*.ply")) and not list(out.rglob("result.json"))
