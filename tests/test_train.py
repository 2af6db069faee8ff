"""The training loop (video_prior/train.py) and `mv3d train` on tiny models and tiny synthetic orbit datasets."""

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
import torch
import yaml
from safetensors.torch import load_file

from render.common import InputError
from video_prior import train as vtrain
from video_prior.components import ModelInfo
from video_prior.data import DataConfig, OrbitVideoDataset, collate
from video_prior.denoiser import MultiViewDenoiser
from video_prior.pipeline import MultiViewPipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_data import make_objects  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "model": {"preset": "tiny", "num_frames": 4, "sample_size": 16},
    "data": {"num_frames": 4, "resolution": 16, "background": "mixed"},
    "seed": 0,
    "batch_size": 2,
    "lr": 2e-3,
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
}


def tiny_config(**overrides) -> vtrain.TrainConfig:
    return vtrain.TrainConfig.from_dict({**TINY, **overrides})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine more threads spin and wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_objects(tmp_path_factory.mktemp("orbits"), 4, views=8)


def unet_weights(model_dir: Path, part: str = "unet") -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / part / "diffusion_pytorch_model.safetensors"))


def test_config_validation(tmp_path):
    with pytest.raises(InputError, match="exactly one"):
        vtrain.TrainConfig.from_dict({"data": {}})
    with pytest.raises(InputError, match="unknown keys"):
        vtrain.TrainConfig.from_dict({**TINY, "learning_rate": 1})
    with pytest.raises(InputError, match="mixed_precision"):
        tiny_config(mixed_precision="fp8")
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        vtrain.TrainConfig.from_yaml(path)
    cfg = tiny_config(curriculum=[{"until_step": 3, "num_frames": 2, "resolution": 8}])
    assert cfg.stage_at(0) == (2, 8) and cfg.stage_at(3) == (4, 16)
    # The shipped configs and the default model recipe's stage configs parse.
    recipe = REPO / "recipes" / "default_model" / "configs"
    for shipped in sorted([*(REPO / "configs").glob("*.yaml"), *recipe.glob("*.yaml")]):
        vtrain.TrainConfig.from_yaml(shipped)


def test_train_refuses_a_step_count_the_cli_refuses(tmp_path):
    """`mv3d train --max-steps 0` is refused; from Python 0 meant the config's count (a whole run) and a
    negative one was taken. The line names the argument; the CLI's its flag."""
    from mv3d.cli import flag_message

    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError, match=f"^max_steps {bad}: expected a positive number") as info:
            vtrain.train(tiny_config(), [tmp_path / "no"], tmp_path / "run", max_steps=bad, progress=False)
        assert flag_message(info.value).startswith(f"--max-steps {bad}: ")
    assert list(tmp_path.iterdir()) == []


def test_config_values_of_the_wrong_type_are_refused_by_name(tmp_path):
    """A YAML value of the wrong type gets one line naming the key, its value and the type: before, some
    raised a torch traceback at the first batch (`resolution: 16.5`), some trained otherwise than
    written (`zero_init_output: "no"` is true; `trainable: "*temporal*"` made each character a pattern,
    so '*' trained everything), some said only "'<=' not supported between 'float' and 'str'"."""
    wrong = {
        "batch_size": ({"batch_size": 2.5}, "batch_size 2.5: expected a whole number"),
        "zero_init_output": ({"zero_init_output": "no"}, "zero_init_output 'no': expected true or false"),
        "trainable": ({"trainable": "*temporal*"}, "trainable '*temporal*': expected a list"),
        "ema_decay": ({"ema_decay": "0.99"}, "ema_decay '0.99': expected a number"),
        "resolution": (
            {"data": {**TINY["data"], "resolution": 16.5}},
            "'data' resolution 16.5: expected a whole number",
        ),
        "lora": ({"lora": {"target_modules": "to_q"}}, "'lora' target_modules 'to_q': expected a list"),
        "sample_every": ({"sample_every": -1}, "sample_every -1: expected 0 or a positive integer"),
    }
    for key, (values, message) in wrong.items():
        with pytest.raises(InputError) as exc:
            vtrain.TrainConfig.from_dict({**TINY, **values}, "c.yaml")
        assert str(exc.value).startswith("c.yaml ") or key == "sample_every", str(exc.value)
        assert message in str(exc.value), str(exc.value)
    with pytest.raises(InputError, match="train config model sample_size 'x': expected a whole number"):
        vtrain.build_model(tiny_config(model={**TINY["model"], "sample_size": "x"}))
    # `lr: 1e-4` is a number, as the user means it (PyYAML's YAML 1.1 reads it as the text "1e-4")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "lr"}) + "lr: 1e-4\n")
    assert vtrain.TrainConfig.from_yaml(path).lr == 1e-4


def test_to_model_order_sv3d():
    batch = {
        "frames": torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 3, 2, 2),
        "polar_rad": torch.full((1, 4), np.pi / 2),
        "azimuth_rad": torch.deg2rad(torch.tensor([[0.0, 90.0, 180.0, 270.0]])),
    }

    sv3d = MultiViewDenoiser(None, None, None, ModelInfo(frame_order="sv3d", sv3d_azimuth_direction=1))
    out = sv3d.to_model_order(batch)
    # SV3D order: the input view (mv3d frame 0) comes last, azimuths still measured from it.
    assert out["frames"][0, :, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 0.0]
    np.testing.assert_allclose(np.rad2deg(out["azimuth_rad"][0].numpy()), [90, 180, 270, 0], atol=1e-4)
    mv3d = MultiViewDenoiser(None, None, None, ModelInfo(frame_order="mv3d"))
    assert mv3d.to_model_order(batch) is batch


def fixed_loss(model, data_root, config) -> float:
    """The loss of a fixed set of batches with fixed random draws (comparable across models).

    `model`: a model folder, or (components, info) as `build_model` returns them."""
    if isinstance(model, tuple):
        comps, info = model
    else:
        from video_prior.components import load_components

        comps, info = load_components(model)
    ds = OrbitVideoDataset([data_root], DataConfig(num_frames=4, resolution=16, background="white"), seed=0)
    batch = collate([ds[i] for i in range(len(ds))])
    total = 0.0
    with torch.no_grad():
        for k in range(6):
            gen = torch.Generator().manual_seed(1000 + k)
            loss = vtrain.training_loss(
                MultiViewDenoiser(**comps, info=info),
                batch,
                vtrain.TrainConfig.from_dict({**TINY, "cond_drop_prob": 0.0}),
                gen,
                torch.device("cpu"),
            )
            total += float(loss)
    return total / 6


@pytest.mark.slow
def test_five_steps_lower_the_loss_and_save_a_loadable_model(data_root, tmp_path):
    cfg = tiny_config(max_steps=5, sample_every=5, sample_steps=2)
    before = fixed_loss(vtrain.build_model(cfg), data_root, cfg)
    result = vtrain.train(cfg, [data_root], tmp_path / "run", progress=False)
    assert result.steps == 5 and len(result.losses) == 5
    after = fixed_loss(result.model_dir, data_root, cfg)
    assert after < 0.8 * before, (before, after)
    # Run folder: final model (loadable), checkpoints, metrics, a preview contact sheet.
    from PIL import Image

    sheet = Image.open(tmp_path / "run" / "samples" / "step-000005.png")
    assert sheet.size == (4 * 16, 4 * 16)  # 2 objects x (truth, sample) rows, 4 frames
    # The preview ran at the last step, with the weights now in RUN/model: its sample rows are exactly
    # what the pipeline generates from that model for the same input, cameras, seed and settings.
    pipe = MultiViewPipeline.from_pretrained(result.model_dir)
    preview = vtrain._validation_batch(OrbitVideoDataset([data_root], cfg.data, seed=cfg.seed), 2)

    def views(i: int, **settings) -> torch.Tensor:
        kwargs = {
            "num_inference_steps": 2,
            "max_guidance": cfg.sample_guidance,
            "output_type": "pt",
            **settings,
        }
        orbit = vtrain.preview_orbit(preview, i)
        return pipe(
            preview["cond_image"][i], orbit, generator=torch.Generator().manual_seed(0), **kwargs
        ).frames

    assert np.array_equal(np.asarray(sheet), vtrain.preview_sheet(preview, [views(0), views(1)]))
    # ... with the model's own sampling settings (cond_aug 0.02 here), not the old preview sampler's 1e-5
    old = vtrain.preview_sheet(preview, [views(i, cond_aug=1e-5) for i in (0, 1)])
    assert not np.array_equal(np.asarray(sheet), old)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    elapsed = [r["elapsed_s"] for r in records]  # the call's wall time, for step-time probes
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    # the loader's share of each step, to tell a data-bound run from a compute-bound one
    assert all(0 < r["data_s"] < r["step_s"] for r in records)
    assert vtrain.latest_checkpoint(tmp_path / "run").name == "step-000005"
    # A second run into the same folder without --resume is refused, in the Python call's words from
    # Python and in flags on the command line.
    with pytest.raises(InputError, match=r"pass resume=True or choose a new out_dir$") as info:
        vtrain.train(cfg, [data_root], tmp_path / "run", progress=False)
    from mv3d.cli import flag_message

    assert flag_message(info.value).endswith("pass --resume or choose a new --out")


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_weights(data_root, tmp_path):
    """A `mv3d train` subprocess killed with SIGKILL and resumed ends with the uninterrupted run's weights."""
    steps = 6
    cfg = tiny_config(max_steps=steps, ema_decay=0.9, grad_accum=2, lr_warmup_steps=3)
    straight = vtrain.train(cfg, [data_root], tmp_path / "straight", progress=False)

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "ema_decay": 0.9, "grad_accum": 2, "lr_warmup_steps": 3}))
    run = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mv3d",
            "train",
            str(cfg_path),
            "--data",
            str(data_root),
            "--out",
            str(run),
            "--max-steps",
            "1000",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while vtrain.latest_checkpoint(run) is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = vtrain.latest_checkpoint(run)
    assert killed_at is not None, "the subprocess wrote no checkpoint before the deadline"
    done = int(killed_at.name.split("-")[1])
    assert 2 <= done < steps, f"killed too late (checkpoint {killed_at.name})"
    resumed = vtrain.train(cfg, [data_root], run, resume=True, progress=False)
    assert resumed.resumed_from == killed_at
    assert resumed.steps == steps and len(resumed.losses) == steps - done
    np.testing.assert_allclose(resumed.losses, straight.losses[done:], rtol=1e-6, atol=1e-7)
    for part in ("unet", "unet_no_ema"):
        a, b = unet_weights(straight.model_dir, part), unet_weights(resumed.model_dir, part)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_ctrl_c_prints_one_line_naming_the_kept_checkpoint(data_root, tmp_path):
    """Ctrl-C (SIGINT) in `mv3d train`: exit code 130 and one line naming the checkpoint kept and how to
    continue (before: exit 130 and nothing said, typer swallowing the KeyboardInterrupt)."""
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["train", str(cfg_path), "--data", str(data_root), "--out", str(run), "--max-steps", "1000"]
    # SIGINT as a terminal delivers it: a suite started in the background (`.ci/run &`) passes SIGINT on
    # ignored, and Python then installs no KeyboardInterrupt handler (the run trained on, and timed out).
    proc = subprocess.Popen(
        [sys.executable, "-m", "mv3d", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 240
        while vtrain.latest_checkpoint(run) is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    last = stderr.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in stderr.decode(), stderr.decode()[-2000:]
    assert last.startswith(f"mv3d: interrupted: {run / 'checkpoints' / 'step-'}"), last
    assert last.endswith("is kept: rerun the same command with --resume to continue from it"), last


def test_lora_and_precomputed_cache(data_root, tmp_path):
    from video_prior.data import cache_path, precompute

    # LoRA: only adapters train; the saved UNet is plain (adapters merged) and differs from the init.
    # A curriculum switches from 2 frames at 8 px to the data config's 4 frames at 16 px after step 1.
    curriculum = [{"until_step": 1, "num_frames": 2, "resolution": 8}]
    cfg = tiny_config(max_steps=2, lora={"rank": 4, "alpha": 4.0}, lr=1e-2, curriculum=curriculum)
    comps, _ = vtrain.build_model(cfg)
    result = vtrain.train(cfg, [data_root], tmp_path / "lora", progress=False)
    saved = unet_weights(result.model_dir)
    init = comps["unet"].state_dict()
    assert saved.keys() == init.keys()
    changed = [k for k in saved if not torch.equal(saved[k], init[k])]
    assert changed and all(("attn" in k) for k in changed)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))

    # Cache: precompute, then train from it (2 steps) on a copy of the data.
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    precompute([data], comps, resolution=16, progress=False)
    assert cache_path(data / "obj00", 16).is_file()
    cached_cfg = tiny_config(max_steps=2, data={**TINY["data"], "use_cache": True})
    ds = OrbitVideoDataset([data], cached_cfg.data)
    assert ds.cached and ds[0]["latents"].shape == (4, 4, 8, 8) and "frames" not in ds[0]
    out = vtrain.train(cached_cfg, [data], tmp_path / "cached", progress=False)
    assert out.steps == 2 and all(np.isfinite(out.losses))
    # an object added after the precompute: the error names the option that writes its cache
    shutil.copytree(data / "obj00", data / "obj99", ignore=shutil.ignore_patterns("mv3d_cache"))
    with pytest.raises(InputError, match=r"obj99: no latent cache .* \(precompute=True\)"):
        OrbitVideoDataset([data], cached_cfg.data)


def test_resume_logs_each_step_once(data_root, tmp_path, capsys):
    """A run stopped after its last checkpoint (step 3, checkpoint at step 2) and resumed: metrics.jsonl
    has one line per step, the resumed run's for the steps it trained again (before, steps 3 came twice).
    Its notes go to `log` when given, and nothing is printed without progress."""
    cfg = tiny_config(max_steps=4)
    out = tmp_path / "run"
    vtrain.train(cfg, [data_root], out, progress=False, stop_after=3)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "lo')  # a line a SIGKILL cut short
    said: list[str] = []
    result = vtrain.train(cfg, [data_root], out, resume=True, progress=False, log=said.append)
    assert result.resumed_from.name == "step-000002"
    assert said[0] == f"resuming from {result.resumed_from} (step 2)" and said[1].startswith("training a new")
    assert capsys.readouterr().out == ""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in rows[2:]] == result.losses
    # stopped before its first checkpoint, then started again with the same command: no step twice
    again = tmp_path / "again"
    vtrain.train(cfg, [data_root], again, progress=False, stop_after=1)
    vtrain.train(cfg, [data_root], again, progress=False)
    rows = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # TensorBoard too: the events of the killed run's step 3 are purged, each step read once
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    for run in (out, again):
        acc = event_accumulator.EventAccumulator(str(run / "logs" / "mv3d_train"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]


def test_resume_with_another_model_or_trainable_set_is_one_line(data_root, tmp_path, capsys):
    """`--resume` with a config of another model (or other trainable parameters) than the run's: one
    line naming the checkpoint and the run's own config, exit code 2 (before: torch's size-mismatch
    traceback), and the run folder unchanged."""
    from mv3d.cli import main

    out = tmp_path / "run"
    vtrain.train(tiny_config(max_steps=2), [data_root], out, progress=False)
    capsys.readouterr()
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    other_model = {**TINY, "model": {**TINY["model"], "conditioning": "sv3d_u"}}
    other_params = {**TINY, "trainable": ["*temporal*"]}
    for name, values in (("model", other_model), ("params", other_params)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump({**values, "max_steps": 3}))
        with pytest.raises(SystemExit) as exc:
            main(["train", str(cfg), "--data", str(data_root), "--out", str(out), "--resume"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "step-000002" in err and str(out / "config.yaml") in err, err
        assert err.strip().endswith("or choose a new --out"), err
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_cache_fingerprint_is_the_same_in_every_process():
    """`--precompute` and the training that reads its cache run in two processes: the model's fingerprint
    must not depend on the process (diffusers' `_use_default_values` is a list in set order, which
    changed with the hash seed, so every cache of a fresh model was refused as another model's)."""
    code = (
        "from video_prior.train import TrainConfig, build_model; "
        "from video_prior.data import components_fingerprint; "
        f"print(components_fingerprint(build_model(TrainConfig.from_dict({TINY!r}))[0]))"
    )
    prints = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
        )
        prints.add(out.stdout.strip().splitlines()[-1])
    assert len(prints) == 1, prints


def test_cli_errors(tmp_path, data_root, capsys):
    from mv3d.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main(["train", *args])
        return exc.value.code, capsys.readouterr().err

    code, err = run(str(tmp_path / "missing.yaml"), "--data", str(data_root), "--out", str(tmp_path / "o"))
    assert code == 2 and err.startswith("mv3d: error:") and "missing.yaml" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "bogus": 1}))
    code, err = run(str(cfg), "--data", str(data_root), "--out", str(tmp_path / "o"))
    assert code == 2 and "bogus" in err and len(err.strip().splitlines()) == 1
    cfg.write_text(yaml.safe_dump(TINY))
    code, err = run(str(cfg), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert code == 2 and "nowhere" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # the data is checked before the run folder is made
    code, err = run(str(cfg), "--data", str(data_root), "--out", str(tmp_path / "o"), "--max-steps", "0")
    assert code == 2 and "--max-steps" in err
    code, err = run(
        str(cfg), "--data", str(data_root), "--out", str(tmp_path / "o"), "--precompute", "--device", "tpu"
    )
    assert code == 2 and err.startswith("mv3d: error: --device tpu: expected")  # was '----device'


def test_cli_init_from_starts_a_second_stage_from_a_model(data_root, tmp_path, capsys):
    """`mv3d train CONFIG --init-from MODEL`: the run starts from MODEL's weights, whatever CONFIG's model is."""
    from mv3d.cli import main

    first = vtrain.train(tiny_config(max_steps=2), [data_root], tmp_path / "first", progress=False)
    # a calibrated matte (recipes/default_model/calibrate_matte.py) belongs to the first stage's weights, not the second's
    info_path = first.model_dir / "mv3d_model.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "alpha_threshold": 0.4}))
    cfg = tmp_path / "stage2.yaml"
    # A vanishing learning rate: the second stage's saved UNet must be (to 1e-8) its initialisation, i.e.
    # the first stage's UNet, not CONFIG's freshly initialised model.
    cfg.write_text(yaml.safe_dump({**TINY, "lr": 1e-12, "max_steps": 1, "model_notes": "second stage"}))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(cfg), "--data", str(data_root), "--out", str(tmp_path / "second"),
              "--init-from", str(first.model_dir)])  # fmt: skip
    assert exc.value.code == 0
    saved = yaml.safe_load((tmp_path / "second" / "config.yaml").read_text())
    assert saved["init_from"] == str(first.model_dir) and saved["model"] is None
    # The saved model says where it came from (model_notes), not what the first stage's model said.
    notes = [
        json.loads((d / "model" / "mv3d_model.json").read_text())["notes"]
        for d in (tmp_path / "first", tmp_path / "second")
    ]
    assert notes[1] == "second stage" != notes[0]
    second_info = json.loads((tmp_path / "second" / "model" / "mv3d_model.json").read_text())
    assert second_info["alpha_threshold"] == 0.5
    a, b = unet_weights(first.model_dir), unet_weights(tmp_path / "second" / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-8)
    fresh = vtrain.build_model(tiny_config())[0]["unet"].state_dict()
    assert any(not torch.allclose(a[k], fresh[k]) for k in a)
    # A folder that is not a model: one line, exit code 2.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["train", str(cfg), "--data", str(data_root), "--out", str(tmp_path / "third"),
              "--init-from", str(data_root)])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(data_root) in err and len(err.strip().splitlines()) == 1


# Loaded into every launched process through PYTHONPATH (a sitecustomize module): after each checkpoint it
# saves this rank's UNet weights, and it records the dataset indices of every batch the rank's loader yields.
# It only observes: the processes run the unchanged `mv3d train`.
_RANK_PROBE = """
import json, os
_out = os.environ.get("MV3D_TEST_RANK_PROBE")
if _out:
    import accelerate
    import torch.utils.data.dataloader as _dl

    _save_state = accelerate.Accelerator.save_state

    def save_state(self, output_dir=None, **kwargs):
        result = _save_state(self, output_dir, **kwargs)
        from safetensors.torch import save_file

        unet = self.unwrap_model(self._models[0])
        state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
        name = "step-" + os.path.basename(os.path.normpath(str(output_dir))).rsplit("step-", 1)[-1]
        save_file(state, os.path.join(_out, f"rank{self.process_index}-{name}.safetensors"))
        return result

    accelerate.Accelerator.save_state = save_state
    _next = _dl._BaseDataLoaderIter.__next__

    def __next__(self):
        batch = _next(self)
        if isinstance(batch, dict) and "index" in batch:
            rank = os.environ.get("RANK", "0")
            with open(os.path.join(_out, f"batches-rank{rank}.jsonl"), "a") as fh:
                fh.write(json.dumps(batch["index"].tolist()) + "\\n")
        return batch

    _dl._BaseDataLoaderIter.__next__ = __next__
"""


def _single_process_reference(cfg: vtrain.TrainConfig, data_root: Path, world: int, steps: int) -> dict:
    """The UNet after `steps` optimizer steps of ONE process on the global batch of `world` ranks.

    Each rank r's share is the batch its loader yields at micro-step s, with the random draws of
    (seed, s, r); data-parallel training averages the ranks' gradients, which is the gradient of the mean
    of their losses. Then gradient clipping and AdamW as the trainer configures them (constant rate).
    """
    from accelerate.utils import set_seed

    from video_prior.data import make_loader

    set_seed(cfg.seed)
    comps, info = vtrain.build_model(cfg)
    unet = comps["unet"].train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    from video_prior.denoiser import MultiViewDenoiser

    denoiser = MultiViewDenoiser(unet, comps["vae"], comps["image_encoder"], info)
    ds = OrbitVideoDataset([data_root], cfg.data, seed=cfg.seed)
    for step in range(steps):
        losses = []
        for rank in range(world):
            batch = next(iter(make_loader(ds, cfg.batch_size, cfg.seed, step, rank, world)))
            batch = denoiser.to_model_order(batch)
            gen = vtrain.step_generator(cfg.seed, step, rank)
            losses.append(vtrain.training_loss(denoiser, batch, cfg, gen, torch.device("cpu")))
        torch.stack(losses).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


@pytest.mark.slow
def test_two_processes_ddp_on_cpu(data_root, tmp_path):
    """`accelerate launch` of `mv3d train` on 2 CPU processes (gloo), as the README documents, 2 steps.

    The two ranks train on different objects, their weights are equal after each step (the gradients are
    all-reduced), and equal to one process stepping on the same global batch.
    """
    steps, world = 2, 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "batch_size": 1, "checkpoint_every": 1}))
    probe = tmp_path / "probe"
    probe.mkdir()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_RANK_PROBE)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "MV3D_TEST_RANK_PROBE": str(probe),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    port = str(29500 + os.getpid() % 1000)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    r = subprocess.run(
        [*accelerate, "--multi_gpu", "--num_processes", str(world), "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
         "-m", "mv3d", "train", str(cfg), "--data", str(data_root), "--out", str(tmp_path / "ddp"),
         "--max-steps", str(steps)],
        capture_output=True, text=True, timeout=400, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = vtrain.latest_checkpoint(tmp_path / "ddp")
    assert ckpt.name == "step-000002"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    # One process logs: one metrics line per step.
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == steps

    # Different objects on each rank, at every step.
    seen = [
        [json.loads(line) for line in (probe / f"batches-rank{k}.jsonl").read_text().splitlines()]
        for k in range(world)
    ]
    for step in range(steps):
        assert set(seen[0][step]).isdisjoint(seen[1][step]), seen

    # Equal weights on both ranks after each step, and equal to one process on the global batch.
    reference = _single_process_reference(tiny_config(batch_size=1), data_root, world, steps)
    init = vtrain.build_model(tiny_config(batch_size=1))[0]["unet"].state_dict()
    for step in (1, 2):
        a = load_file(str(probe / f"rank0-step-{step:06d}.safetensors"))
        b = load_file(str(probe / f"rank1-step-{step:06d}.safetensors"))
        assert a.keys() == b.keys() == init.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7)
    final = load_file(str(probe / f"rank0-step-{steps:06d}.safetensors"))
    assert max(float((final[k] - init[k]).abs().max()) for k in final) > 1e-3  # the weights moved
    for k in final:
        torch.testing.assert_close(final[k], reference[k], rtol=1e-4, atol=2e-5, msg=k)


def test_lr_schedule_warms_up_holds_and_cools_down(data_root, tmp_path, capsys):
    assert [vtrain.lr_factor(s, 2, 8, 4) for s in range(8)] == [0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [vtrain.lr_factor(s, 0, 4) for s in range(4)] == [1.0] * 4
    with pytest.raises(InputError, match="lr_cooldown_steps"):
        tiny_config(max_steps=4, lr_cooldown_steps=5)
    # the run logs the rate each optimizer step used
    cfg = tiny_config(max_steps=4, lr=1e-3, lr_warmup_steps=1, lr_cooldown_steps=2)
    # an override shorter than the cool-down runs (a one-step trial of a long recipe) and says so
    capsys.readouterr()
    vtrain.train(cfg, [data_root], tmp_path / "short", max_steps=1)
    assert "note: 1 step, fewer than the config's lr_cooldown_steps (2)" in capsys.readouterr().out
    lines = (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["lr"] for line in lines] == pytest.approx([5e-4])
    vtrain.train(cfg, [data_root], tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    lrs = [json.loads(line)["lr"] for line in lines]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


class _Opens:
    """Unpickling this creates a file: what a crafted custom_checkpoint_*.pkl could do instead."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_resume_never_unpickles_code(data_root, tmp_path):
    """`--resume` on a run folder someone sent: crafted custom_checkpoint_*.pkl files run nothing; the EMA
    and counters come from ema.safetensors / trainer_state.json; a legacy pickle with code is refused."""
    import pickle

    cfg = tiny_config(max_steps=2, ema_decay=0.9)
    run = tmp_path / "run"
    vtrain.train(cfg, [data_root], run, progress=False)
    ckpt = vtrain.latest_checkpoint(run)
    assert (ckpt / vtrain.EMA_FILE).is_file() and not list(ckpt.glob("custom_checkpoint_*.pkl"))
    pwned = tmp_path / "pwned"
    for i in (0, 1):
        (ckpt / f"custom_checkpoint_{i}.pkl").write_bytes(pickle.dumps(_Opens(pwned)))
    result = vtrain.train(cfg, [data_root], run, resume=True, max_steps=3, progress=False)
    assert result.steps == 3 and not pwned.exists()
    # A checkpoint of an older mv3d (EMA only in the pickle): loaded with weights_only, code refused.
    ckpt = vtrain.latest_checkpoint(run)
    (ckpt / vtrain.EMA_FILE).unlink()
    (ckpt / "custom_checkpoint_1.pkl").write_bytes(pickle.dumps(_Opens(pwned)))
    with pytest.raises(InputError, match="refused"):
        vtrain.train(cfg, [data_root], run, resume=True, max_steps=4, progress=False)
    assert not pwned.exists()


@pytest.mark.slow
def test_finetuning_the_shipped_model_from_its_config(tmp_path, capsys):
    """configs/finetune_default.yaml starts from `init_from: default`, the model inside the package (as
    `--model default`; a pip user need not know where it lies), trains on the data it documents, and
    gives a model that samples with the shipped model's settings."""
    from mv3d.cli import main
    from mv3d.models import default_model_dir
    from render.jobs import render_dataset

    data = tmp_path / "mine"
    render_dataset(["procedural:1:7"], data, views=21, resolution=64, orbit_kind="mixed",
                   elevation=(-5, 30), progress=False)  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(["train", str(REPO / "configs" / "finetune_default.yaml"), "--data", str(data),
              "--out", str(tmp_path / "run"), "--max-steps", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    # what the run is, said before its first step
    assert (
        f"training from {default_model_dir()}: 7.56 M trainable parameters, 1 object, 1 step of 4 orbits"
        in out
    )
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["init_from"] == str(default_model_dir())
    info = json.loads((tmp_path / "run" / "model" / "mv3d_model.json").read_text())
    shipped = json.loads((default_model_dir() / "mv3d_model.json").read_text())
    assert info["default_mirror_average"] == shipped["default_mirror_average"] is True
    assert info["notes"].startswith("mv3d's default model, finetuned")
