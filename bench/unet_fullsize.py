"""Full-size (SV3D, 1.52 B parameters) UNet forward: FLOPs, compute floor, and measured time and memory.

    python -m bench.unet_fullsize [--peak-tflops 989] [--frames 21] [--latent 72] [--iters 5]

1. Builds the SV3D_p-sized `MultiViewUNet` (`video_prior.components.sv3d_config`) on the meta device and
   counts the FLOPs of ONE classifier-free-guidance forward (batch 2 = [uncond; cond]) at 21 frames and
   72x72 latents (576x576 images) with `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per
   multiply-add; convolutions, linear layers and attention matmuls). Prints it and the floor time
   FLOPs / peak at the given TFLOP/s.
2. On a GPU it builds the real network in bf16, times the forward (CUDA events after warm-up) and prints
   time / floor (how far from the compute floor it runs) and the peak memory.
3. On a CPU the full-size forward (about 69 TFLOP) would take hours on the 2 cores here, so it runs a
   REDUCED network instead (channels 64/128/256/256, the same depth and layout, 21 frames at 24x24
   latents, float32), counts that network's FLOPs the same way and reports the achieved GFLOP/s.

Results go to bench/results/unet_fullsize_<device>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import datasheet_peak_tflops, device_name, environment
from render.common import atomic_write_json
from video_prior.components import sv3d_config
from video_prior.unet import MultiViewUNet

ROOT = Path(__file__).resolve().parents[1]


def reduced_unet_config() -> dict:
    """The SV3D_p layout at a fifth of the width: small enough for a CPU forward of 21 frames."""
    cfg = dict(sv3d_config("sv3d_p")["unet"])
    channels = (64, 128, 256, 256)
    cfg.update(block_out_channels=channels, num_attention_heads=tuple(c // 64 for c in channels))
    return cfg


def make_inputs(unet: MultiViewUNet, batch: int, frames: int, latent: int, device, dtype) -> tuple:
    """(sample (B, F, 8, h, w), c_noise (B,), CLIP context (B, 1, D), per-frame ids (B, F, 3))."""
    cfg = unet.config
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    sample = randn(batch, frames, cfg.in_channels, latent, latent)
    c_noise = torch.full((batch,), 0.25 * torch.log(torch.tensor(10.0)).item(), device=device)
    context = randn(batch, 1, cfg.cross_attention_dim)
    k = len(cfg.addition_time_embed_dims)
    ids = torch.rand(batch, frames, k, generator=g).to(device)
    if device == "meta":
        c_noise, ids = c_noise.to("meta"), ids.to("meta")
    return sample, c_noise, context, ids


def count_flops(unet_config: dict, batch: int, frames: int, latent: int) -> tuple[int, int]:
    """(FLOPs of one forward, parameter count), computed on the meta device: no memory, no time."""
    with torch.device("meta"):
        unet = MultiViewUNet(**unet_config)
    # AlphaBlender builds its mix_factor with the legacy torch.Tensor([...]), which ignores the default
    # device: move the stragglers too.
    unet = unet.to("meta")
    n_params = sum(p.numel() for p in unet.parameters())
    inputs = make_inputs(unet, batch, frames, latent, "meta", torch.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(*inputs)
    return int(counter.get_total_flops()), n_params


def time_forward(unet: MultiViewUNet, inputs: tuple, iters: int, warmup: int) -> list[float]:
    """Seconds per forward, measured `iters` times after `warmup` runs."""
    cuda = inputs[0].is_cuda
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                unet(*inputs)
                end.record()
                torch.cuda.synchronize()
                elapsed = start.elapsed_time(end) / 1000.0
            else:
                t0 = time.perf_counter()
                unet(*inputs)
                elapsed = time.perf_counter() - t0
            if i >= warmup:
                times.append(elapsed)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--latent", type=int, default=72, help="latent side (image side / 8)")
    parser.add_argument("--batch", type=int, default=2, help="2 = one CFG forward [uncond; cond]")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for the floor time")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu-latent", type=int, default=24, help="latent side of the reduced CPU run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dev_name = device_name(cuda)
    peak = args.peak_tflops
    if peak is None and cuda:
        peak = datasheet_peak_tflops(dev_name)

    # 1. full-size FLOPs on the meta device
    full_cfg = sv3d_config("sv3d_p")["unet"]
    flops, n_params = count_flops(full_cfg, args.batch, args.frames, args.latent)
    result: dict = {
        "device": dev_name,
        "environment": environment(),
        "unet_params": n_params,
        "shape": {"batch": args.batch, "frames": args.frames, "latent": args.latent},
        "flops_full": flops,
        "peak_tflops": peak,
    }
    print(f"full-size UNet: {n_params / 1e9:.3f} B parameters")
    print(
        f"one CFG forward (batch {args.batch}, {args.frames} frames, {args.latent}x{args.latent} latents): "
        f"{flops / 1e12:.2f} TFLOP"
    )
    if peak:
        floor = flops / (peak * 1e12)
        result["floor_s"] = floor
        print(f"compute floor at {peak:.0f} TFLOP/s: {floor * 1000:.1f} ms per forward")

    if cuda:
        # 2. real full-size forward in bf16
        torch.backends.cuda.matmul.allow_tf32 = True
        with torch.device("cuda"):
            unet = MultiViewUNet(**full_cfg)
        unet = unet.to(device="cuda", dtype=torch.bfloat16).eval()
        inputs = make_inputs(unet, args.batch, args.frames, args.latent, "cuda", torch.bfloat16)
        torch.cuda.reset_peak_memory_stats()
        times = time_forward(unet, inputs, args.iters, args.warmup)
        best = min(times)
        result.update(
            mode="full-size, bf16",
            times_s=times,
            best_s=best,
            achieved_tflops=flops / best / 1e12,
            peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30,
        )
        print(
            f"measured: {best * 1000:.1f} ms (best of {len(times)}), {flops / best / 1e12:.0f} TFLOP/s achieved"
        )
        if peak:
            result["time_over_floor"] = best / result["floor_s"]
            print(f"time / floor: {result['time_over_floor']:.2f}")
        print(f"peak memory: {result['peak_memory_gib']:.2f} GiB")
    else:
        # 3. reduced-size forward on the CPU
        cfg = reduced_unet_config()
        red_flops, red_params = count_flops(cfg, args.batch, args.frames, args.cpu_latent)
        torch.manual_seed(0)
        unet = MultiViewUNet(**cfg).eval()
        inputs = make_inputs(unet, args.batch, args.frames, args.cpu_latent, "cpu", torch.float32)
        times = time_forward(unet, inputs, max(1, min(args.iters, 2)), 1)
        best = min(times)
        result.update(
            mode="REDUCED on CPU (no GPU): channels 64/128/256/256, float32",
            reduced={
                "block_out_channels": list(cfg["block_out_channels"]),
                "params": red_params,
                "latent": args.cpu_latent,
                "frames": args.frames,
                "flops": red_flops,
                "times_s": times,
                "best_s": best,
                "achieved_gflops": red_flops / best / 1e9,
                "threads": torch.get_num_threads(),
            },
        )
        print(
            f"no GPU: REDUCED network ({red_params / 1e6:.1f} M parameters, channels 64/128/256/256), "
            f"batch {args.batch}, {args.frames} frames, {args.cpu_latent}x{args.cpu_latent} latents, float32: "
            f"{red_flops / 1e9:.1f} GFLOP"
        )
        print(
            f"measured on CPU ({torch.get_num_threads()} threads): {best:.2f} s per forward, "
            f"{red_flops / best / 1e9:.1f} GFLOP/s achieved"
        )
        if not peak:
            print("pass --peak-tflops to print the floor time of the full-size forward on a given device")

    out = args.out or ROOT / "bench" / "results" / f"unet_fullsize_{'cuda' if cuda else 'cpu'}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
