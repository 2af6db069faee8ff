"""One full-size training step of the SV3D-sized UNet: time, samples/s, peak memory, ratio to the compute floor.

Setting (issue 3): SV3D_p UNet (~1.5 B parameters), batch 2, 21 frames at 576 px -> 72 x 72 latents, gradient
checkpointing, bf16 autocast, fused AdamW, with precomputed latents and CLIP embeddings (as SV3D trained), so
the step is `video_prior.train.training_loss` (cached-latent path) + backward + optimizer step.

Floor: a training step costs about 3x the forward FLOPs (forward + backward of activations and weights);
the floor time is 3 * forward FLOPs (counted with torch.utils.flop_counter.FlopCounterMode) / the device's
peak (bf16 dense: H100 SXM 989 TFLOP/s, H200 the same; on a CPU the measured throughput of a large matmul
stands in). Gradient checkpointing adds one more forward, so 4/3 of the floor is the best this setting can do.

On a CPU the full size does not fit in time; the script then runs a REDUCED model (narrower channels, fewer
frames, smaller latents) and says so in its output and JSON.

`--raw-frames` trains from images instead (the frozen VAE encodes the 21 frames and the conditioning image,
the frozen CLIP embeds it, inside every step) to show what the precomputed cache saves; those encoder FLOPs
are counted into the floor too. `--peak-tflops` overrides the device peak (e.g. 800: the bf16 matmul rate
measured on this workplace's H100, which bench/generate_fullsize.py uses).

    python -m bench.train_step_fullsize                 # cuda if present, else the reduced CPU run
    python -m bench.train_step_fullsize --device cpu --reduced
Writes bench/results/train_step_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from bench.harness import datasheet_peak_tflops, device_name, environment
from render.common import atomic_write_json
from video_prior.components import (
    VAE_TYPES,
    ModelInfo,  # noqa: E402
    sv3d_config,
)
from video_prior.conditioning import conditioning_kind  # noqa: E402
from video_prior.denoiser import MultiViewDenoiser  # noqa: E402
from video_prior.train import TrainConfig, training_loss
from video_prior.unet import MultiViewUNet

ROOT = Path(__file__).resolve().parents[1]


def device_peak_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak TFLOP/s, where the number comes from): a datasheet value for known GPUs, else a measured matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = datasheet_peak_tflops(name)
        if peak is not None:
            return peak, f"datasheet bf16 dense ({name})"
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps = 20 if device.type == "cuda" else 5
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12, f"measured {n}x{n} {dtype} matmul"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_config(reduced: bool) -> dict:
    cfg = dict(sv3d_config("sv3d_p")["unet"])
    if reduced:
        # Same block structure and conditioning, 1/5 of the channels (heads of 64 -> 16 channels).
        cfg.update(
            block_out_channels=(64, 128, 256, 256),
            num_attention_heads=(4, 8, 16, 16),
            cross_attention_dim=256,
        )
    return cfg


def frozen_encoders(reduced: bool, size: int, ctx_dim: int, device: torch.device):
    """The frozen first stage and CLIP image encoder (SV3D sizes; narrowed like the UNet when reduced)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = sv3d_config("sv3d_p", resolution=size)
    vae_cfg = dict(cfg["vae"])
    enc_cfg = dict(cfg["image_encoder"])
    if reduced:
        vae_cfg["block_out_channels"] = [32, 64, 128, 128]
        enc_cfg.update(hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_hidden_layers=4)
    enc_cfg["projection_dim"] = ctx_dim
    vae_cls = VAE_TYPES[vae_cfg.pop("type")]
    with torch.device(device):
        vae = vae_cls(**vae_cfg)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**enc_cfg))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return (
        vae.to(device, dtype).eval().requires_grad_(False),
        encoder.to(device, dtype).eval().requires_grad_(False),
    )


def encoder_flops(vae, encoder, batch_data: dict, device: torch.device) -> int:
    """FLOPs of encoding one batch: VAE encode of every frame and the conditioning image, CLIP of the latter."""
    from torch.utils.flop_counter import FlopCounterMode

    from video_prior.conditioning import clip_embed, condition_latent, encode_frames

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        encode_frames(vae, batch_data["frames"].to(device))
        cond = batch_data["cond_image"].to(device)
        condition_latent(vae, cond, torch.zeros(cond.shape[0], device=device))
        clip_embed(encoder, cond)
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--reduced", action="store_true", help="reduced size (default on CPU)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=None, help="default 21 (5 when reduced)")
    p.add_argument(
        "--latent", type=int, default=None, help="latent side; default 72 (576 px), 16 when reduced"
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--raw-frames", action="store_true", help="encode frames + CLIP in the step (no cache)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak (default: datasheet/measured)"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="folder for train_step_<device>.json"
    )
    args = p.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    reduced = args.reduced or device.type == "cpu"
    frames = args.frames or (5 if reduced else 21)
    latent = args.latent or (16 if reduced else 72)
    batch = args.batch
    torch.manual_seed(0)

    # 1. model: trainable UNet in fp32 master weights, bf16 autocast, gradient checkpointing
    cfg = unet_config(reduced)
    unet = MultiViewUNet(**cfg).to(device)
    unet.enable_gradient_checkpointing()
    unet.train()
    n_params = sum(p.numel() for p in unet.parameters())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, fused=device.type == "cuda")
    ctx_dim = cfg["cross_attention_dim"]

    # 2. a batch as the latent cache gives it (SV3D trained from precomputed latents and CLIP embeddings)
    batch_data = {
        "latents": torch.randn(batch, frames, 4, latent, latent),
        "cond_latent": torch.randn(batch, 4, latent, latent) * 5,
        "clip": torch.randn(batch, 1, ctx_dim),
        "polar_rad": torch.full((batch, frames), 1.4),
        "azimuth_rad": torch.linspace(0, 6.0, frames).expand(batch, frames).contiguous(),
    }
    tcfg = TrainConfig.from_dict({"model": {"preset": "tiny"}, "cond_drop_prob": 0.1})
    vae = encoder = None
    enc_flops = 0
    if args.raw_frames:
        vae, encoder = frozen_encoders(reduced, latent * 8, ctx_dim, device)
        g = torch.Generator().manual_seed(0)
        batch_data = {
            "frames": torch.rand(batch, frames, 3, latent * 8, latent * 8, generator=g) * 2 - 1,
            "cond_image": torch.rand(batch, 3, latent * 8, latent * 8, generator=g) * 2 - 1,
            "polar_rad": batch_data["polar_rad"],
            "azimuth_rad": batch_data["azimuth_rad"],
        }
        enc_flops = encoder_flops(vae, encoder, batch_data, device)

    # the defaults the step was measured with: v prediction on plain latents, this UNet's conditioning
    info = ModelInfo(conditioning=conditioning_kind(unet.config))

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(i)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = training_loss(MultiViewDenoiser(unet, vae, encoder, info), batch_data, tcfg, gen, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    # 3. forward FLOPs, counted once (no grad, so checkpointing does not re-run anything)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, torch.autocast(device.type, dtype=torch.bfloat16):
        x = torch.randn(batch, frames, 8, latent, latent, device=device)
        ids = torch.randn(batch, frames, 3, device=device)
        unet(x, torch.zeros(batch, device=device), torch.randn(batch, 1, ctx_dim, device=device), ids)
    fwd_flops = counter.get_total_flops()

    # 4. time the steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_loss = step(0)  # warm-up (allocator, kernels, fused AdamW state)
    _sync(device)
    times, losses = [], []
    for i in range(args.steps):
        t = time.perf_counter()
        losses.append(step(i + 1))
        _sync(device)
        times.append(time.perf_counter() - t)
    step_s = sorted(times)[len(times) // 2]
    peak, peak_src = device_peak_tflops(device, torch.bfloat16)
    if args.peak_tflops:
        peak, peak_src = args.peak_tflops, "--peak-tflops"
    # the frozen encoders run forward only (no backward) when training from raw frames
    floor_s = (3 * fwd_flops + enc_flops) / (peak * 1e12)
    if device.type == "cuda":
        mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
        mem_kind = "torch.cuda.max_memory_allocated"
    else:
        mem_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        mem_kind = "process max RSS"
    dev_name = device_name(device.type == "cuda")
    result = {
        "device": dev_name,
        "reduced": reduced,
        "note": "REDUCED size (CPU): channels (64,128,256,256), not the 1.5 B model"
        if reduced
        else "full SV3D_p size",
        "unet_params": n_params,
        "batch": batch,
        "frames": frames,
        "latent": [4, latent, latent],
        "image_px": latent * 8,
        "gradient_checkpointing": True,
        "autocast": "bf16",
        "fused_adamw": device.type == "cuda",
        "inputs": "raw frames (VAE + CLIP in the step)" if args.raw_frames else "precomputed latents + CLIP",
        "forward_tflop": fwd_flops / 1e12,
        "encoder_tflop": enc_flops / 1e12,
        "step_s_median": step_s,
        "step_s_all": times,
        "samples_per_s": batch / step_s,
        "achieved_tflops_3x_fwd": (3 * fwd_flops + enc_flops) / step_s / 1e12,
        "peak_tflops": peak,
        "peak_source": peak_src,
        "floor_s": floor_s,
        "ratio_to_floor": step_s / floor_s,
        "peak_memory_gib": mem_gib,
        "memory_kind": mem_kind,
        "warmup_loss": warmup_loss,
        "losses": losses,
        "environment": environment(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train_step_{device.type}{'_raw' if args.raw_frames else ''}.json"
    atomic_write_json(path, result)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
