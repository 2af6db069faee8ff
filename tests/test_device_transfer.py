"""The GPU stage's transfer helpers: packed orbit datasets and half-size / sharded model folders."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from recipes.default_model import device_transfer, pack_orbits
from render.common import InputError
from video_prior.components import (
    build_components,
    load_components,
    model_info_from_config,
    save_components,
    tiny_config,
)


def _dataset(root: Path, ids: list[str], seed: int, mode: str = "RGBA") -> Path:
    rng = np.random.default_rng(seed)
    (root / "objects").mkdir(parents=True)
    (root / "job.json").write_text(json.dumps({"seed": seed}))
    for i in ids:
        obj = root / "objects" / i
        (obj / "views").mkdir(parents=True)
        (obj / "transforms.json").write_text(json.dumps({"object": i, "seed": seed}))
        for v in range(3):
            pixels = rng.integers(0, 256, (8, 6, len(mode)), dtype=np.uint8).squeeze()
            Image.fromarray(pixels, mode).save(obj / "views" / f"{v:03d}.png")
    return root


def test_pack_and_unpack_give_back_the_datasets_pixel_for_pixel(tmp_path):
    a = _dataset(tmp_path / "a", ["chair", "lamp"], 0)
    b = _dataset(tmp_path / "b", ["chair", "cup"], 1, mode="RGB")
    pack_orbits.pack(tmp_path / "o.tar.xz", [a, b])
    with tarfile.open(tmp_path / "o.tar.xz") as tar:
        names = tar.getnames()
    assert not any(n.endswith(".png") for n in names)
    # object-major: an object's orbits from both datasets sit side by side in the stream
    chair = [n for n in names if "/chair/views.rgba" in n]
    assert names.index(chair[1]) - names.index(chair[0]) <= 3
    roots = pack_orbits.unpack(tmp_path / "o.tar.xz", tmp_path / "out")
    assert [r.name for r in roots] == ["0", "1"]
    for src, dst in ((a, roots[0]), (b, roots[1])):
        src_files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
        dst_files = sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
        assert src_files == dst_files  # no views.rgba / views.json left behind
        for rel in src_files:
            if rel.suffix == ".png":
                s, d = Image.open(src / rel), Image.open(dst / rel)
                assert s.mode == d.mode and np.array_equal(np.asarray(s), np.asarray(d))
            else:
                assert (src / rel).read_bytes() == (dst / rel).read_bytes()
    with pytest.raises(InputError, match="not empty"):
        pack_orbits.unpack(tmp_path / "o.tar.xz", tmp_path / "out")


def _archive(path: Path, header: dict, raw: bytes) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in (
            ("0/objects/x/views.json", json.dumps(header).encode()),
            ("0/objects/x/views.rgba", raw),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "header, raw, message",
    [
        ({"names": ["000.png"], "width": 100000, "height": 100000, "mode": "RGBA"}, b"", "bounded"),
        ({"names": ["000.png"], "width": 2, "height": 2, "mode": "CMYK"}, b"", "bounded"),
        ({"names": ["../../evil.png"], "width": 2, "height": 2, "mode": "L"}, bytes(4), "plain .png"),
        ({"names": ["000.png"], "width": 2, "height": 2, "mode": "RGB"}, bytes(5), "expected 12"),
    ],
)
def test_unpack_checks_each_header_before_it_decodes(tmp_path, header, raw, message):
    archive = _archive(tmp_path / "bad.tar.xz", header, raw)
    with pytest.raises(InputError, match=message):
        pack_orbits.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_pack_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert pack_orbits.main(["pack", str(tmp_path / "o.tar.xz"), str(tmp_path)]) == 2
    assert "render-dataset" in capsys.readouterr().err


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    cfg = tiny_config(num_frames=4, sample_size=16, conditioning="sv3d_p")
    info = model_info_from_config(cfg)
    info.alpha_threshold, info.alpha_floor = 0.4, 0.3  # a calibration that the joined model must drop
    save_components(build_components(cfg), info, tmp_path / "model")
    return tmp_path / "model"


def test_shrink_then_expand_rounds_to_float16_only(model_dir, tmp_path):
    device_transfer.shrink(model_dir, tmp_path / "half", only=["unet"])
    unet = load_file(tmp_path / "half" / "unet" / device_transfer.WEIGHTS)
    assert all(t.dtype == torch.float16 for t in unet.values() if t.is_floating_point())
    assert not (tmp_path / "half" / "vae").exists()
    device_transfer.expand(tmp_path / "half", tmp_path / "full", fill_from=model_dir)
    comps, _ = load_components(tmp_path / "full")
    orig, _ = load_components(model_dir)
    for (name, p), q in zip(
        comps["unet"].state_dict().items(), orig["unet"].state_dict().values(), strict=True
    ):
        assert p.dtype == q.dtype
        assert torch.allclose(p, q, rtol=2**-10, atol=1e-7), name
    for part in ("vae", "image_encoder"):
        for p, q in zip(comps[part].state_dict().values(), orig[part].state_dict().values(), strict=True):
            assert torch.equal(p, q)  # copied, not rounded
    with pytest.raises(InputError, match="new folder"):
        device_transfer.expand(tmp_path / "half", tmp_path / "full")


def test_split_and_join_give_back_the_unet_exactly(model_dir, tmp_path):
    shards = device_transfer.split(model_dir, tmp_path / "back", "ours", max_mb=0.5)
    assert len(shards) > 1 and all(p.stat().st_size < 0.51e6 for p in shards)
    device_transfer.join(tmp_path / "back", "ours", base=model_dir, new_model=tmp_path / "joined")
    comps, info = load_components(tmp_path / "joined")
    orig, orig_info = load_components(model_dir)
    for p, q in zip(comps["unet"].state_dict().values(), orig["unet"].state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert (
        (info.alpha_threshold, info.alpha_floor)
        == (0.5, 0.0)
        != (orig_info.alpha_threshold, orig_info.alpha_floor)
    )
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".*.tmp-*"))
    with pytest.raises(InputError, match="shards"):
        device_transfer.join(tmp_path / "back", "twin", base=model_dir, new_model=tmp_path / "j2")
    # the trained run's own info (its notes), as meta.tar.gz brings it back, uncalibrated
    run_info = json.loads((model_dir / "mv3d_model.json").read_text())
    (tmp_path / "run_info.json").write_text(json.dumps({**run_info, "notes": "trained there"}))
    (tmp_path / "big.json").write_text(" " * (2 << 20))
    for info_file, new_model in (("run_info.json", "j3"), ("big.json", "j4")):
        try:
            device_transfer.join(
                tmp_path / "back", "ours", model_dir, tmp_path / new_model, info_file=tmp_path / info_file
            )
        except InputError as exc:
            assert info_file == "big.json" and "bytes" in str(exc)
    info3 = load_components(tmp_path / "j3")[1]
    assert info3.notes == "trained there" and info3.alpha_threshold == 0.5
    assert not (tmp_path / "j4").exists()
    with pytest.raises(InputError, match="max-mb"):
        device_transfer.split(model_dir, tmp_path / "back2", "ours", max_mb=0.001)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["continuation", "fresh-start", "deepen"])
def test_gpu_stage_runs_end_to_end_here(tmp_path, mode):
    """gpu_stage.sh as run on the lent GPU (unpack, the starting points: carried in float16, or built
    there by fresh_init.py or deepen.py and drop_camera.py; step-time probe, both networks side by side,
    shards and meta back), here on the CPU with a tiny model and two tiny renders; what comes back joins
    into a model folder that loads."""
    fresh = mode != "continuation"
    sys.path.insert(0, str(Path(__file__).parent))
    from test_data import make_objects

    repo = Path(__file__).resolve().parents[1]
    for seed in ("s11", "s12"):
        make_objects(tmp_path / seed / "objects", 2, views=4)
    carry = tmp_path / "carry"
    carry.mkdir()
    pack_orbits.pack(carry / "orbits.tar.xz", [tmp_path / "s11", tmp_path / "s12"])
    torch.manual_seed(0)
    cfg = tiny_config(num_frames=4, sample_size=16)
    save_components(build_components(cfg), model_info_from_config(cfg), tmp_path / "init")
    if not fresh:
        device_transfer.shrink(tmp_path / "init", carry / "init")
        device_transfer.shrink(tmp_path / "init", carry / "init_no_camera", only=["unet"])
    config = {
        "init_from": "unused",  # gpu_stage.sh passes --init-from
        "data": {"num_frames": 4, "resolution": 16, "background": "white"},
        "max_steps": 10,
        "lr_cooldown_steps": 10,
        "batch_size": 1,
        "lr": 1e-3,
        "checkpoint_every": 10,
        "log_every": 10,
    }
    (tmp_path / "stage.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "STEPS": "auto",
        "PROBE_STEPS": "20",
        "CONFIG": str(tmp_path / "stage.yaml"),
        "WORK": str(tmp_path / "work"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(repo),
    }
    if mode == "fresh-start":
        env.update(FRESH_CHANNELS="64,64", FRESH_SEED="1", FRESH_FROM=str(tmp_path / "init"))
    elif mode == "deepen":
        env.update(DEEPEN="2", DEEPEN_FROM=str(tmp_path / "init"))
    run = subprocess.run(
        ["bash", str(repo / "recipes/default_model/gpu_stage.sh"), str(carry), str(tmp_path / "out"), "3"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert "meta.tar.gz" in names and len(names) <= 8  # the lent machine returns at most 8 files
    assert any(n.startswith("ours_") for n in names) and any(n.startswith("no_camera_") for n in names)
    with tarfile.open(out / "meta.tar.gz") as tar:
        tar.extractall(out, filter="data")
    probe = json.loads((out / "probe.json").read_text())
    stage = yaml.safe_load((out / "run.yaml").read_text())
    assert probe["steps"] >= 10 and stage["max_steps"] == stage["lr_cooldown_steps"] == probe["steps"]
    assert all(0 < share < 1 for share in probe["data_share"])  # the loader's share of a step, per network
    base = tmp_path / "work" / "init" if fresh else tmp_path / "init"
    device_transfer.join(out, "ours", base=base, new_model=tmp_path / "ours")
    comps, _ = load_components(tmp_path / "ours")
    init, _ = load_components(base)
    if fresh:  # the wider or deeper UNet built there, its digest in init.txt
        if mode == "fresh-start":
            assert list(comps["unet"].config.block_out_channels) == [64, 64]
        else:
            assert comps["unet"].config.layers_per_block == 2
        assert "sha256" in (out / "init.txt").read_text()
        device_transfer.join(
            out, "no_camera", base=tmp_path / "work" / "init_no_camera", new_model=tmp_path / "nc"
        )
        assert load_components(tmp_path / "nc")[1].conditioning == "sv3d_u"
    changed = [
        not torch.allclose(p, q, rtol=2**-10, atol=1e-6)
        for p, q in zip(comps["unet"].state_dict().values(), init["unet"].state_dict().values(), strict=True)
    ]
    assert any(changed)  # trained, not the float16 starting point sent back


def test_a_failed_write_leaves_no_folder(model_dir, tmp_path):
    """A model folder is written through atomic_output (a hidden sibling renamed when complete):
    a corrupt weight file stops `shrink` with nothing left behind, and a user's `X.partial` is untouched."""
    (model_dir / "vae" / device_transfer.WEIGHTS).write_bytes(b"not safetensors")
    (tmp_path / "half.partial").mkdir()
    (tmp_path / "half.partial" / "mine.txt").write_text("the user's")
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type for a corrupt header
        device_transfer.shrink(model_dir, tmp_path / "half")
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half*"))
    assert (tmp_path / "half.partial" / "mine.txt").read_text() == "the user's"
