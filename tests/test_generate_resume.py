"""`mv3d generate` as a user meets it: resume after kill -9 and Ctrl-C, refusals that delete nothing,
and settings checked against the model's facts before it loads (tiny random model; subprocesses where a
process must die)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mv3d.generate import GenerateSettings, ViewGenerator, build_orbit, generate
from mv3d.generate.record import file_sha256
from mv3d.generate.views import check_settings, model_limits
from mv3d.models import default_model_dir
from mv3d.preprocess import DEFAULT_MARGIN
from render.common import InputError, write_output_marker

VIEWS = 3
FAST_MESH = {"method": "hull", "texture": "vertex", "resolution": 32}
REPO = Path(__file__).resolve().parents[1]

# Runs one generation in a fresh process. argv: model, image, out, mode ("api": the Python API with the
# fast mesh; "cli": the command line), block ("block": the mesh stage never ends, so the test can kill
# the process once the views are written; "block-sampling": sampling never ends; "run": it runs).
SCRIPT = f"""
import sys, time
import mv3d.generate.job as job
model, image, out, mode, block = sys.argv[1:6]
def _stuck(*args, **kwargs):
    time.sleep(600)
if block == "block":
    job._reconstruct = _stuck
elif block == "block-sampling":
    job.ViewGenerator.__call__ = _stuck
if mode == "api":
    job.generate([image], out, model=model, device="cpu", views={VIEWS}, progress=False,
                 reconstruct_options={FAST_MESH!r})
else:
    from mv3d.cli import main
    main(["generate", image, "--out", out, "--model", model, "--views", "{VIEWS}", "--device", "cpu", "--quiet"])
"""


def _image(path: Path) -> Path:
    img = np.zeros((40, 48, 4), np.uint8)
    img[10:32, 12:30] = (200, 60, 30, 255)
    Image.fromarray(img, "RGBA").save(path)
    return path


def _spawn(model: Path, image: Path, out: Path, mode: str, block: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", SCRIPT, str(model), str(image), str(out), mode, block]
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &` in a script)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own.
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _work_folders(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def _wait_for_views(proc: subprocess.Popen, out: Path, timeout: float = 240.0) -> Path:
    """The work folder once its views are finished (its run.json is written after them)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        done = [w for w in _work_folders(out) if (w / "run.json").is_file()]
        if done:
            return done[0]
        if proc.poll() is not None:
            raise AssertionError(f"generation ended early: {proc.communicate()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("views were not written in time")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def no_model_load(monkeypatch):
    """Any model load or sampling in this test fails it."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded or sampled")

    monkeypatch.setattr(ViewGenerator, "load", classmethod(fail))
    monkeypatch.setattr(ViewGenerator, "__call__", fail)
    monkeypatch.setattr("video_prior.components.load_components", fail)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from mv3d.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# kill -9 and Ctrl-C: the views are kept and reused, only the mesh is computed
# ------------------------------------------------------------------------------------------------


def test_kill_after_views_then_rerun_computes_only_the_mesh(tmp_path: Path, tiny_model: Path, monkeypatch):
    img = _image(tmp_path / "obj.png")
    ref, out = tmp_path / "ref", tmp_path / "out"
    reference = _spawn(tiny_model, img, ref, "api", "run")  # an uninterrupted run, for comparison
    killed = _spawn(tiny_model, img, out, "api", "block")
    work = _wait_for_views(killed, out)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert reference.wait(240) == 0, reference.communicate()
    assert not out.exists() and _work_folders(out) == [work]  # what a kill leaves behind

    # Another process's leftover of another job and a stranger's hidden folder next to it.
    stale = tmp_path / f".out.tmp-{killed.pid}-0123abcd"
    stale.mkdir()
    (stale / "run.json").write_text(json.dumps({"seed": 99}))
    stranger = tmp_path / ".out.notes"
    stranger.mkdir()

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded or sampled")

    monkeypatch.setattr(ViewGenerator, "load", classmethod(fail))
    monkeypatch.setattr(ViewGenerator, "__call__", fail)
    lines: list[str] = []
    (res,) = generate(
        [img], out, model=tiny_model, device="cpu", views=VIEWS, progress=False,
        reconstruct_options=FAST_MESH, log=lines.append,
    )  # fmt: skip
    assert _work_folders(out) == [] and stranger.is_dir()  # mv3d's leftovers only are cleaned up
    assert res.mesh_path == out / "mesh.glb" and res.mesh_path.is_file()
    got, want = _files(out), _files(ref)
    assert sorted(got) == sorted(want)
    for name in want:  # views, cameras, input, GIF: bit-identical to the uninterrupted run's
        if name not in ("run.json", "mesh.glb"):
            assert got[name] == want[name], name
    run = json.loads(got["run.json"])
    assert run["pending"] == [] and any("reused the finished views" in n for n in run["resumed"])
    assert "sample" in run["timings_s"] and "reconstruct" in run["timings_s"]
    assert run["reconstruction"]["faces"] == json.loads(want["run.json"])["reconstruction"]["faces"]


def test_ctrl_c_prints_one_line_exits_130_and_keeps_the_views(
    tmp_path: Path, tiny_model: Path, capsys, no_model_load
):
    img = _image(tmp_path / "obj.png")
    out = tmp_path / "out"
    proc = _spawn(tiny_model, img, out, "cli", "block")
    work = _wait_for_views(proc, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("mv3d: interrupted: the views of "), stderr
    assert "rerun the same command" in stderr and "Traceback" not in stderr
    assert not out.exists() and (work / "views").is_dir()

    # The same command, mesh skipped this time: the kept views are the result, nothing is sampled.
    args = ["generate", str(img), "--out", str(out), "--model", str(tiny_model), "--views", str(VIEWS)]
    code, err = _cli([*args, "--device", "cpu", "--quiet", "--no-mesh"], capsys)
    assert code == 0, err
    assert (out / "views").is_dir() and not (out / "mesh.glb").exists() and _work_folders(out) == []
    stamp = (out / "run.json").stat().st_mtime_ns
    code, err = _cli([*args, "--device", "cpu", "--quiet", "--no-mesh"], capsys)  # identical: no load
    assert code == 0 and (out / "run.json").stat().st_mtime_ns == stamp


def test_ctrl_c_while_sampling_keeps_nothing(tmp_path: Path, tiny_model: Path):
    img = _image(tmp_path / "obj.png")
    out = tmp_path / "out"
    proc = _spawn(tiny_model, img, out, "cli", "block-sampling")
    start = time.monotonic()
    while not _work_folders(out) and proc.poll() is None and time.monotonic() - start < 240:
        time.sleep(0.2)
    assert _work_folders(out), proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.count("\n") == 1, stderr
    assert "before its views were written: nothing of it kept" in stderr
    assert not out.exists() and _work_folders(out) == []


# ------------------------------------------------------------------------------------------------
# nothing is deleted without being asked
# ------------------------------------------------------------------------------------------------


def test_rerun_with_other_settings_is_refused_and_deletes_nothing(
    tmp_path: Path, tiny_model: Path, capsys, no_model_load
):
    img = _image(tmp_path / "obj.png")
    out = tmp_path / "out"
    args = ["generate", str(img), "--out", str(out), "--model", str(tiny_model), "--views", str(VIEWS)]
    args += ["--device", "cpu", "--quiet", "--no-mesh"]
    # A finished folder (written by hand from a real run's record: no model load in this test).
    out.mkdir()
    record = ViewGenerator.planned_settings(tiny_model, "cpu", GenerateSettings(views=VIEWS))
    run = {
        "image_sha256": file_sha256(img),
        **record,
        "seed": 0,
        "orbit": build_orbit("static", VIEWS).to_dict(),
    }
    run.update(margin=DEFAULT_MARGIN, matte="auto", mesh=True, reconstruct_options={}, pending=[])
    (out / "run.json").write_text(json.dumps(run))
    (out / "mesh.glb").write_bytes(b"a mesh the user wants to keep")
    write_output_marker(out, "generate")
    before = _files(out)

    code, err = _cli([*args, "--seed", "1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert (
        err.startswith(f"mv3d: error: --out {out}: holds a finished generation")
        and "seed 0 there, 1 now" in err
    )
    assert "mesh true there, false now" in err and "--overwrite" in err
    assert _files(out) == before
    # From Python the same refusal names the arguments (`out_dir`, `overwrite=True`), not the CLI's flags.
    with pytest.raises(InputError) as info:
        generate([img], out, model=tiny_model, views=VIEWS, device="cpu", seed=1, mesh=False, progress=False)
    message = str(info.value)
    assert message.startswith(f"out_dir {out}: holds a finished generation") and info.value.field == "out_dir"
    assert "pass overwrite=True to replace it" in message and "--" not in message
    assert _files(out) == before


# ------------------------------------------------------------------------------------------------
# options checked against the model before it loads
# ------------------------------------------------------------------------------------------------

needs_default = pytest.mark.skipif(
    not any(default_model_dir().rglob("*.safetensors")), reason="no default model weights in this checkout"
)


@needs_default
def test_views_2_with_the_default_model_exits_2_before_the_model_loads(tmp_path: Path, capsys, no_model_load):
    img = _image(tmp_path / "obj.png")
    code, err = _cli(["generate", str(img), "--out", str(tmp_path / "o"), "--views", "2", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("mv3d: error: --views 2: the default model generates exactly 21 views"), err
    assert not (tmp_path / "o").exists()


@needs_default
def test_default_model_facts_refuse_and_warn():
    _, limits = model_limits("default")
    assert limits.num_frames == 21 and limits.resolution == 64 and limits.fixed_resolution
    assert limits.default_steps == 1 and limits.trained_steps == 1 and limits.default_ensemble == 16
    assert limits.trained_elevation_deg == (-5.0, 30.0)
    orbit = build_orbit("static", 21)
    assert check_settings(limits, GenerateSettings(), orbit) == []
    with pytest.raises(InputError, match="works at 64 px only"):
        check_settings(limits, GenerateSettings(resolution=128), orbit)
    (w,) = check_settings(limits, GenerateSettings(steps=10), orbit)
    assert w.startswith("steps 10:") and "1-step sampling" in w
    (w,) = check_settings(limits, GenerateSettings(elevation=60), build_orbit("static", 21, 60.0))
    assert w.startswith("elevation 60:") and "-5 to 30" in w
    # no unconditional branch: guidance settings were recorded as if used and changed nothing, unsaid
    assert not limits.guided
    (w,) = check_settings(limits, GenerateSettings(guidance="constant", max_guidance=5), orbit)
    assert w.startswith("guidance constant:") and "change nothing" in w


def test_limits_match_the_loaded_model(tiny_model: Path):
    """What is read without weights equals what the loaded model says, so a rerun decided before the
    load is decided right."""
    gen = ViewGenerator.load(tiny_model, device="cpu", views=VIEWS)
    _, limits = model_limits(tiny_model)
    pipe = gen.pipeline
    assert limits.grid == pipe.vae_scale_factor * 2 ** int(pipe.unet.num_upsamplers)
    assert limits == pipe.denoiser.limits(limits.grid)
    assert ViewGenerator.planned_settings(tiny_model, "cpu", GenerateSettings(views=VIEWS)) == gen.settings()
    # no trained ranges recorded, guidance in the model: nothing to warn about
    assert limits.guided
    settings = GenerateSettings(steps=7, elevation=80, max_guidance=5)
    assert check_settings(limits, settings, build_orbit("static", VIEWS, 80)) == []
