"""Speed and memory options of MultiViewPipeline (video_prior.speed) on a tiny random model.

Every option must leave the output unchanged (up to floating-point reordering); no timing assertions.
torch.compile takes minutes on the shared CPU, so only its plumbing is tested here; its numbers are
checked by bench/generate_fullsize.py on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from render.cameras import static_orbit
from render.common import InputError
from video_prior import speed
from video_prior.components import tiny_config
from video_prior.pipeline import MultiViewPipeline

N = 4


def _pipe() -> MultiViewPipeline:
    return MultiViewPipeline.from_config(tiny_config(num_frames=N, sample_size=16), seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    img = np.zeros((16, 16, 4), np.uint8)
    img[3:13, 5:11] = (210, 60, 40, 255)
    return img


def _run(pipe: MultiViewPipeline, image: np.ndarray) -> torch.Tensor:
    out = pipe(
        image,
        static_orbit(N),
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(3),
        output_type="pt",
    )
    return out.frames


@pytest.fixture(scope="module")
def reference(image) -> torch.Tensor:
    return _run(_pipe(), image)


def test_sdpa_is_what_runs_and_is_set_explicitly(image, reference):
    pipe = _pipe()
    # a caller-swapped processor is replaced
    from diffusers.models.attention_processor import AttnProcessor

    pipe.unet.set_attn_processor(AttnProcessor())
    assert speed.attention_processor_names(pipe.unet) == {"AttnProcessor": len(pipe.unet.attn_processors)}
    pipe.apply_speed_options(attention="sdpa")
    assert set(speed.attention_processor_names(pipe.unet)) == {"AttnProcessor2_0"}
    assert set(speed.attention_processor_names(pipe.vae)) == {"AttnProcessor2_0"}
    assert speed.attention_processor_names(pipe.image_encoder) == {"sdpa": 2}
    # spatial and temporal transformer blocks both have attention layers, all counted above
    names = list(pipe.unet.attn_processors)
    assert any("temporal_transformer_blocks" in n for n in names)
    assert any(".transformer_blocks" in n for n in names)
    torch.testing.assert_close(_run(pipe, image), reference, atol=1e-5, rtol=0)


def test_channels_last_same_output(image, reference):
    pipe = _pipe().apply_speed_options(channels_last=True)
    convs = [m.weight for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    torch.testing.assert_close(_run(pipe, image), reference, atol=1e-4, rtol=0)


def test_sequential_offload_same_output_and_removable(image, reference):
    pipe = _pipe()
    pipe.apply_speed_options(offload="sequential", offload_device="cpu")
    assert pipe.device == torch.device("cpu")
    hooked = [m for m in pipe.unet.modules() if "_mv3d_offload_handles" in m.__dict__]
    leaves_with_weights = [m for m in pipe.unet.modules() if list(m.parameters(recurse=False))]
    assert len(hooked) >= len(leaves_with_weights) > 10
    torch.testing.assert_close(_run(pipe, image), reference, atol=0, rtol=0)
    pipe.disable_offload()
    assert not any("_mv3d_offload_handles" in m.__dict__ for m in pipe.unet.modules())
    torch.testing.assert_close(_run(pipe, image), reference, atol=0, rtol=0)


def test_sequential_offload_moves_inputs_to_the_execution_device():
    # On a CPU-only machine the "device" is the meta device: each hooked layer must see its weights and
    # its inputs there while it runs (meta tensors carry shapes only, so this checks the moves).
    lin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    seen = []
    speed.enable_sequential_offload(lin, "meta")
    # registered after the offload hook, so it runs after it
    lin[2].register_forward_pre_hook(lambda m, a: seen.append((a[0].device.type, m.weight.device.type)))
    out = lin(torch.ones(5, 3))
    assert out.device.type == "meta" and out.shape == (5, 2)
    assert seen == [("meta", "meta")]
    assert all(p.device.type == "cpu" for p in lin.parameters())  # back on the CPU after the call


def test_model_offload_same_output(image, reference):
    pipe = _pipe().apply_speed_options(offload="model", offload_device="cpu")
    assert pipe._offload_kind == "model"
    torch.testing.assert_close(_run(pipe, image), reference, atol=0, rtol=0)
    pipe.disable_offload()
    assert pipe._offload_kind is None


def test_bf16_runs_on_cpu_and_stays_close(image, reference):
    pipe = _pipe().to(dtype=torch.bfloat16)
    out = _run(pipe, image)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # a random tiny model amplifies rounding; the images agree to a few percent of the range
    assert (out - reference).abs().mean() < 0.02


def test_compile_plumbing(monkeypatch, tmp_path):
    pipe = _pipe()
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    pipe.apply_speed_options(compile=True, compile_cache_dir=str(tmp_path / "inductor"))
    import os

    import torch._inductor.config as inductor_config

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert (tmp_path / "inductor").is_dir()
    assert inductor_config.fx_graph_cache
    # compiled in place: same class and config, forward goes through dynamo at the next call
    assert type(pipe.unet).__name__ == "MultiViewUNet"
    assert pipe.unet._compiled_call_impl is not None
    assert pipe.speed_options.compile


def test_bad_options_are_one_line_input_errors():
    pipe = _pipe()
    with pytest.raises(InputError, match="reduce-overhead"):
        pipe.apply_speed_options(compile=True, compile_mode="reduce-overhead")
    with pytest.raises(InputError, match="offload 'disk'"):
        pipe.apply_speed_options(offload="disk")
    with pytest.raises(InputError, match="attention 'flash3'"):
        speed.SpeedOptions(attention="flash3")
    with pytest.raises(InputError, match="sequential"):
        pipe.apply_speed_options(compile=True, offload="sequential", offload_device="cpu")


# --------------------------------------------------------------------------------------------------
# pass-through: mv3d generate --dtype / --offload / --compile
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    cfg = tiny_config(num_frames=3, sample_size=16)
    cfg["info"]["default_steps"] = 1
    return MultiViewPipeline.from_config(cfg, seed=0).save_pretrained(tmp_path_factory.mktemp("m") / "tiny")


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from mv3d.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def _png(path):
    from PIL import Image

    img = np.zeros((24, 24, 4), np.uint8)
    img[6:18, 8:16] = (200, 60, 30, 255)
    Image.fromarray(img, "RGBA").save(path)
    return path


def test_generate_options_reach_the_pipeline(tiny_model_dir):
    from mv3d.generate import ViewGenerator

    gen = ViewGenerator.load(tiny_model_dir, device="cpu", dtype="bfloat16", speed={"offload": "sequential"})
    assert gen.pipeline.dtype == torch.bfloat16
    assert gen.pipeline._offload_kind == "sequential" and gen.pipeline.device == torch.device("cpu")
    assert gen.settings()["dtype"] == "bfloat16"


def test_cli_offload_runs_and_bad_values_exit_2(tmp_path, tiny_model_dir, capsys):
    img = _png(tmp_path / "obj.png")
    base = ["generate", str(img), "--views", "3", "--model", str(tiny_model_dir), "--no-mesh", "--quiet"]
    base += ["--device", "cpu"]
    code, _ = _cli([*base, "--out", str(tmp_path / "a"), "--offload", "sequential"], capsys)
    assert code == 0 and (tmp_path / "a" / "views" / "002.png").is_file()
    code, err = _cli([*base, "--out", str(tmp_path / "b"), "--offload", "disk"], capsys)
    assert code == 2 and "offload 'disk'" in err and "Traceback" not in err
    code, err = _cli([*base, "--out", str(tmp_path / "c"), "--dtype", "float8"], capsys)
    assert code == 2 and "--dtype float8" in err
