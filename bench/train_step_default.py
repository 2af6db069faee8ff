"""The default model's training step: FLOPs, compute floor, and where the measured time goes.

    python -m bench.train_step_default [--model mv3d/default_model] [--batch 1] [--iters 5]
        [--data ORBITS_DIR] [--peak-tflops T]

1. Counts the FLOPs of one training step's UNet forward and backward at `--batch` orbits of the model's
   frames (`torch.utils.flop_counter.FlopCounterMode`, 2 FLOPs per multiply-add) and prints the floor:
   FLOPs / peak. The peak is measured (a 2048² matmul in the step's dtype) unless `--peak-tflops` gives
   one; on a GPU the step runs under bf16 autocast, as `mixed_precision: bf16` trains there.
2. Times the step (forward, backward, AdamW step; the median of `--iters` after two warm-up steps) and
   prints time / floor: near 1, only a faster chip or fewer FLOPs help; far above it, the step is bound
   by something else (kernel launches, Python), which a larger batch or network hides for free.
3. With `--data` (an orbit dataset folder, as `mv3d train --data` takes), times the data loader's work
   for one orbit on one core (decoding the views, compositing, the item dict) and prints how many loader
   processes keep up with the measured step.

Results go to bench/results/train_step_default_<device>.json. Stage 4's GPU step (0.255 s for 32 orbits
on an H200, MODEL_CARD.md) against this floor is what says whether a larger network costs time there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import device_name, environment
from render.common import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def _inputs(unet, batch: int, frames: int, device, tokens: int = 5):
    """Random UNet inputs of a training step's shapes: (sample, timestep, context, added ids)."""
    cfg = unet.config
    size = int(cfg.sample_size)
    sample = torch.randn(batch, frames, int(cfg.in_channels), size, size, device=device)
    timestep = torch.full((batch,), 1.0, device=device)
    context = torch.randn(batch, tokens, int(cfg.encoder_hid_dim or cfg.cross_attention_dim), device=device)
    # SV3D_p conditioning: per frame (cond_aug, polar, azimuth); SVD: one (fps, motion, cond_aug) per clip
    ids = (
        torch.zeros(batch, frames, 3, device=device) if cfg.per_frame_conditioning else torch.zeros(batch, 3)
    )
    return sample, timestep, context, ids.to(device)


def measured_peak_tflops(device, dtype) -> float:
    """Dense matmul rate of this device in `dtype` (TFLOP/s): the floor's denominator."""
    n = 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps = 50 if device.type == "cuda" else 3
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def loader_seconds(data: Path, frames: int, resolution: int, items: int = 40) -> float:
    """Seconds the training data loader spends on one orbit on one core (mean over `items`)."""
    from video_prior.data import DataConfig, OrbitVideoDataset

    cfg = DataConfig(
        num_frames=frames, resolution=resolution, background="white", alpha=True, shuffle_frames=True
    )
    ds = OrbitVideoDataset([data], cfg)
    n = min(items, len(ds))
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "mv3d" / "default_model"))
    ap.add_argument("--batch", type=int, default=1, help="orbits a step (stages 1-3: 1; stage 4: 32)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--data", type=Path, help="an orbit dataset folder: also time the loader")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak instead of a measured matmul")
    ap.add_argument(
        "--out", type=Path, help="JSON to write (default bench/results/train_step_default_<device>.json)"
    )
    args = ap.parse_args(argv)
    if not 1 <= args.batch <= 1024 or not 1 <= args.iters <= 1000:
        raise SystemExit(f"--batch {args.batch} / --iters {args.iters}: expected 1..1024 / 1..1000")

    from video_prior.components import load_components

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    components, info = load_components(args.model)
    unet = components["unet"].to(device).train().requires_grad_(True)
    frames = int(info.num_frames)
    inputs = _inputs(unet, args.batch, frames, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)

    def step() -> None:
        with autocast:
            out = unet(*inputs).sample
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # 1. FLOPs of the forward and backward (the optimizer's elementwise work is not counted)
    with FlopCounterMode(display=False) as counter:
        with autocast:
            out = unet(*inputs).sample
        out.float().pow(2).mean().backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    peak = args.peak_tflops or measured_peak_tflops(device, torch.bfloat16 if cuda else torch.float32)
    floor_s = flops / (peak * 1e12)
    # 2. the step
    for _ in range(2):
        step()
    times = []
    for _ in range(args.iters):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    result = {
        "model": str(args.model),
        "unet_params": sum(p.numel() for p in unet.parameters()),
        "batch_orbits": args.batch,
        "frames": frames,
        "dtype": "bf16 autocast" if cuda else "float32",
        "step_gflop": flops / 1e9,
        "peak_tflops": peak,
        "peak_source": "given" if args.peak_tflops else "measured 2048x2048 matmul",
        "floor_s": floor_s,
        "step_s_median": step_s,
        "step_s_all": times,
        "ratio_to_floor": step_s / floor_s,
        "environment": environment(),
    }
    print(
        f"{device_name(cuda)}: {result['unet_params'] / 1e6:.2f} M-parameter UNet, {args.batch} orbit(s) of "
        f"{frames} frames: {flops / 1e9:.1f} GFLOP a step, floor {floor_s * 1e3:.1f} ms at {peak:.3g} TFLOP/s; "
        f"measured {step_s * 1e3:.1f} ms ({step_s / floor_s:.1f}x the floor)"
    )
    # 3. the loader
    if args.data is not None:
        per_orbit = loader_seconds(args.data, frames, int(info.resolution))
        result["loader_s_per_orbit_one_core"] = per_orbit
        result["loader_processes_to_keep_up"] = per_orbit * args.batch / step_s
        print(
            f"loader: {per_orbit * 1e3:.1f} ms an orbit on one core: keeping up with this step takes "
            f"{per_orbit * args.batch / step_s:.2f} loader processes"
        )
    tag = "cuda_" + torch.cuda.get_device_name(0).split()[-1].lower() if cuda else "cpu"
    out = args.out or ROOT / "bench" / "results" / f"train_step_default_{tag}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
