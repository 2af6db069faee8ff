"""Full-size generation (21 views at 576 px, CFG, 50 Euler steps): mv3d's pipeline vs plain diffusers, vs the floor.

    python -m bench.generate_fullsize                        # cuda if present (full size), else REDUCED on CPU
    python -m bench.generate_fullsize --steps 25 --compile --peak-tflops 800

1. Random-weight models of SV3D/SVD size (`video_prior.components.sv3d_config("svd")`: the 1.52 B UNet,
   the temporal VAE, OpenCLIP ViT-H/14's vision tower), built directly on the device. The SVD
   conditioning (one vector per video) is used so that diffusers' `StableVideoDiffusionPipeline` can
   drive the very same modules; SV3D_p only adds per-frame camera sinusoids (negligible FLOPs).
2. FLOPs of each stage counted with `torch.utils.flop_counter.FlopCounterMode` on meta tensors (no
   memory, no time): CLIP, VAE encode, one CFG UNet forward (batch 2) x steps, VAE decode. The floor is
   FLOPs / peak (default 800 TFLOP/s: a bf16 matmul on this workplace's H100).
3. Runs, with per-stage wall time (CLIP, VAE encode, UNet steps, VAE decode) and peak memory:
   the diffusers baseline (`StableVideoDiffusionPipeline`, its Euler scheduler, linear guidance 1 -> 2.5),
   then mv3d's `MultiViewPipeline` (Euler, SV3D's triangle guidance 1 -> 2.5) with the speed options
   given, and prints time / floor and the speed ratio. On CUDA it also prints a table of peak memory per
   memory option (none, model offload, sequential offload, VAE decode chunk sizes).
4. On a CPU the full size would take hours on the 2 cores here: the same layout runs REDUCED (channels
   64/128/256/256 UNet, 32/64/128/128 VAE, 4-layer CLIP, 5 frames, 64 px, 2 steps, float32), which the
   output and the JSON say; the full-size FLOPs and floor are still counted and printed.

Writes bench/results/generate_fullsize_<cuda|cpu>.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import StageTimer, device_name, environment
from render.cameras import static_orbit
from render.common import atomic_write_json
from video_prior.components import VAE_TYPES, model_info_from_config, sv3d_config
from video_prior.pipeline import MultiViewPipeline
from video_prior.speed import SpeedOptions
from video_prior.unet import MultiViewUNet

ROOT = Path(__file__).resolve().parents[1]

#: diffusers' EulerDiscreteScheduler config of SVD (stabilityai/stable-video-diffusion-img2vid, scheduler/).
SVD_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "use_karras_sigmas": True,
}
#: CLIPImageProcessor settings of SVD's feature_extractor/ (OpenAI CLIP statistics, 224 px).
CLIP_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}


def model_config(reduced: bool, frames: int, resolution: int) -> dict:
    """SVD-conditioned SV3D-size config; `reduced` narrows every network (same layout) for a CPU run."""
    cfg = copy.deepcopy(sv3d_config("svd", num_frames=frames, resolution=resolution))
    if reduced:
        ch = (64, 128, 256, 256)
        cfg["unet"].update(
            block_out_channels=ch, num_attention_heads=tuple(c // 64 for c in ch), cross_attention_dim=256
        )
        cfg["vae"].update(block_out_channels=[32, 64, 128, 128])
        cfg["image_encoder"].update(
            hidden_size=256,
            intermediate_size=1024,
            num_attention_heads=4,
            num_hidden_layers=4,
            projection_dim=256,
        )
    return cfg


def build(cfg: dict, device: str) -> dict[str, torch.nn.Module]:
    """The three networks with random weights, initialised directly on `device` (no CPU copy)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vae_cfg = dict(cfg["vae"])
    vae_cls = VAE_TYPES[vae_cfg.pop("type")]
    with torch.device(device):
        unet = MultiViewUNet(**cfg["unet"])
        vae = vae_cls(**vae_cfg)
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["image_encoder"]))
    # a few modules build tensors with legacy constructors that ignore the default device
    return {
        "unet": unet.to(device).eval(),
        "vae": vae.to(device).eval(),
        "image_encoder": enc.to(device).eval(),
    }


def count_flops(cfg: dict, frames: int, resolution: int, steps: int, chunk: int) -> dict[str, float]:
    """FLOPs of each stage on meta tensors: clip, vae_encode, unet (all steps, CFG batch 2), vae_decode."""
    comps = build(cfg, "meta")
    lat = resolution // 8
    out: dict[str, float] = {}

    def flops(fn: Callable[[], object]) -> float:
        with FlopCounterMode(display=False) as c, torch.no_grad():
            fn()
        return float(c.get_total_flops())

    ms = torch.device("meta")
    out["clip"] = flops(lambda: comps["image_encoder"](pixel_values=torch.zeros(1, 3, 224, 224, device=ms)))
    out["vae_encode"] = flops(
        lambda: comps["vae"].encode(torch.zeros(1, 3, resolution, resolution, device=ms))
    )
    k = len(cfg["unet"]["addition_time_embed_dims"])
    unet_one = flops(
        lambda: comps["unet"](
            torch.zeros(2, frames, 8, lat, lat, device=ms),
            torch.zeros(2, device=ms),
            torch.zeros(2, 1, cfg["unet"]["cross_attention_dim"], device=ms),
            torch.zeros(2, k, device=ms),
        )
    )
    out["unet_forward_cfg"] = unet_one
    out["unet"] = unet_one * steps
    dec = 0.0
    for start in range(0, frames, chunk):
        n = min(chunk, frames - start)
        dec += flops(lambda n=n: comps["vae"].decode(torch.zeros(n, 4, lat, lat, device=ms), num_frames=n))
    out["vae_decode"] = dec
    out["total"] = out["clip"] + out["vae_encode"] + out["unet"] + out["vae_decode"]
    return out


def peak_tflops_cpu() -> float:
    """Measured float32 matmul throughput of this CPU (TFLOP/s): the CPU run's 'peak'."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    return 2 * n**3 * 5 / (time.perf_counter() - t) / 1e12


def test_image(size: int) -> np.ndarray:
    img = np.full((size, size, 4), 0, np.uint8)
    s = size // 4
    img[s : 3 * s, s + s // 2 : 3 * s - s // 2] = (200, 80, 40, 255)
    return img


def _timed(
    call: Callable[[int], object], comps, steps: int, cuda: bool, repeats: int
) -> tuple[dict, float | None]:
    """Warm up (kernels, allocator, a compile), then the fastest of `repeats` timed calls and the peak GiB."""
    call(2 if cuda else 1)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    best = None
    for _ in range(max(1, repeats)):
        with StageTimer(comps, cuda) as timer:
            call(steps)
        stages = timer.stages()
        if best is None or stages["total"] < best["total"]:
            best = stages
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return best, mem


def svd_pipeline(comps: dict):
    """diffusers' `StableVideoDiffusionPipeline` on mv3d's modules, with SVD's scheduler and CLIP
    preprocessing (`SVD_SCHEDULER`, `CLIP_PROCESSOR`), progress bar off."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    pipe = StableVideoDiffusionPipeline(
        vae=comps["vae"],
        image_encoder=comps["image_encoder"],
        unet=comps["unet"],
        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
        feature_extractor=CLIPImageProcessor(**CLIP_PROCESSOR),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_baseline(
    comps, cfg, image, frames, size, steps, chunk, cuda, seed, repeats=1
) -> tuple[dict, float | None]:
    """diffusers' StableVideoDiffusionPipeline on the same modules: per-stage seconds and peak GiB."""
    from PIL import Image

    pipe = svd_pipeline(comps)
    pil = Image.fromarray(image[..., :3])

    def call(n_steps: int):
        return pipe(
            pil,
            height=size,
            width=size,
            num_frames=frames,
            num_inference_steps=n_steps,
            min_guidance_scale=1.0,
            max_guidance_scale=2.5,
            decode_chunk_size=chunk,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="pt",
        )

    return _timed(call, comps, steps, cuda, repeats)


def run_mv3d(comps, cfg, image, frames, size, steps, chunk, cuda, seed, options: SpeedOptions, repeats=1):
    """mv3d's MultiViewPipeline (Euler, triangle CFG) on the same modules: per-stage seconds and peak GiB."""
    pipe = MultiViewPipeline(**comps, info=model_info_from_config(cfg))
    pipe.apply_speed_options(options)
    orbit = static_orbit(frames)

    def call(n_steps: int):
        return pipe(
            image,
            orbit,
            num_inference_steps=n_steps,
            sampler="euler",
            guidance="triangle",
            min_guidance=1.0,
            max_guidance=2.5,
            generator=torch.Generator("cpu").manual_seed(seed),
            decode_chunk_size=chunk,
            output_type="pt",
        )

    try:
        return _timed(call, comps, steps, cuda, repeats)
    finally:
        pipe.disable_offload()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="default 50 (2 on the reduced CPU run)")
    p.add_argument("--frames", type=int, default=None, help="default 21 (5 on CPU)")
    p.add_argument("--resolution", type=int, default=None, help="default 576 (64 on CPU)")
    p.add_argument("--decode-chunk", type=int, default=None, help="frames per VAE decode (default: all)")
    p.add_argument("--peak-tflops", type=float, default=800.0, help="device peak for the floor (GPU)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--compile", action="store_true", help="torch.compile mv3d's UNet")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--memory-table", action="store_true", help="CUDA: also bench offload/chunk options")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None, help="timed calls, best kept (default 1 GPU, 3 CPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    reduced = not cuda
    frames = args.frames or (21 if cuda else 5)
    size = args.resolution or (576 if cuda else 64)
    steps = args.steps or (50 if cuda else 2)
    chunk = args.decode_chunk or frames
    repeats = args.repeats or (1 if cuda else 3)
    dtype = getattr(torch, args.dtype) if cuda else torch.float32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dev_name = device_name(cuda)

    # 1. FLOPs and floor: the full size always, the run's own size when reduced
    full_cfg = model_config(False, 21, 576)
    full = count_flops(full_cfg, 21, 576, args.steps or 50, args.decode_chunk or 21)
    cfg = model_config(reduced, frames, size)
    run_flops = count_flops(cfg, frames, size, steps, chunk) if reduced else full
    peak = args.peak_tflops if cuda else peak_tflops_cpu()
    floor_s = run_flops["total"] / (peak * 1e12)
    print(f"device: {dev_name}")
    print(
        f"full size (21 x 576 px, {args.steps or 50} steps, CFG): UNet {full['unet_forward_cfg'] / 1e12:.1f} TFLOP "
        f"per step, VAE decode {full['vae_decode'] / 1e12:.1f} TFLOP, total {full['total'] / 1e12:.0f} TFLOP; "
        f"floor at {args.peak_tflops:.0f} TFLOP/s: {full['total'] / (args.peak_tflops * 1e12):.2f} s"
    )
    mode = (
        f"full size, {args.dtype}"
        if not reduced
        else (
            f"REDUCED on CPU (no GPU): UNet channels 64/128/256/256, VAE 32/64/128/128, 4-layer CLIP, "
            f"{frames} frames, {size} px, {steps} steps, float32; floor from a measured CPU matmul "
            f"({peak * 1000:.0f} GFLOP/s)"
        )
    )
    print(f"this run: {mode}; {run_flops['total'] / 1e9:.1f} GFLOP, floor {floor_s:.3f} s")

    torch.manual_seed(args.seed)
    comps = build(cfg, device)
    for m in comps.values():
        m.to(dtype=dtype).requires_grad_(False)
    image = test_image(size)
    result: dict = {
        "device": dev_name,
        "mode": mode,
        "reduced": reduced,
        "frames": frames,
        "resolution": size,
        "steps": steps,
        "decode_chunk": chunk,
        "timing": f"after a warm-up call, best of {repeats} timed call(s)",
        "dtype": str(dtype).replace("torch.", ""),
        "flops_full_size": full,
        "flops_this_run": run_flops,
        "peak_tflops": peak,
        "floor_s": floor_s,
        "environment": environment(),
    }

    # 2. the diffusers baseline, then mv3d's pipeline, on the same modules
    runs: dict[str, dict] = {}
    if not args.no_baseline:
        stages, mem = run_baseline(comps, cfg, image, frames, size, steps, chunk, cuda, args.seed, repeats)
        runs["diffusers StableVideoDiffusionPipeline"] = {"stages_s": stages, "peak_memory_gib": mem}
    opts = SpeedOptions(
        attention="sdpa",
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
    )
    stages, mem = run_mv3d(comps, cfg, image, frames, size, steps, chunk, cuda, args.seed, opts, repeats)
    runs["mv3d MultiViewPipeline"] = {"stages_s": stages, "peak_memory_gib": mem, "options": opts.to_dict()}
    for r in runs.values():
        r["time_over_floor"] = r["stages_s"]["total"] / floor_s
    result["runs"] = runs

    print(
        f"\n{'pipeline':40s} {'CLIP':>8s} {'VAE enc':>8s} {'UNet':>9s} {'VAE dec':>8s} {'total':>9s} "
        f"{'/floor':>7s} {'peak GiB':>9s}"
    )
    for name, r in runs.items():
        s = r["stages_s"]
        mem = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "n/a (CPU)"
        print(
            f"{name:40s} {s['clip']:8.3f} {s['vae_encode']:8.3f} {s['unet']:9.3f} {s['vae_decode']:8.3f} "
            f"{s['total']:9.3f} {r['time_over_floor']:7.1f} {mem:>9s}"
        )
    print(
        f"{'floor (FLOPs / peak)':40s} {'':8s} {'':8s} {run_flops['unet'] / peak / 1e12:9.3f} "
        f"{run_flops['vae_decode'] / peak / 1e12:8.3f} {floor_s:9.3f} {1.0:7.1f}"
    )
    if len(runs) == 2:
        ratio = runs["diffusers StableVideoDiffusionPipeline"]["stages_s"]["total"] / stages["total"]
        result["speedup_vs_diffusers"] = ratio
        print(f"mv3d is {ratio:.2f}x the speed of the diffusers baseline (same modules, same run)")

    # 3. peak memory per memory option (CUDA only: on a CPU there is no separate device memory)
    if cuda and args.memory_table:
        table = {}
        for name, o, ch in (
            ("no offload, decode all frames", SpeedOptions(), frames),
            ("no offload, decode 4 frames", SpeedOptions(), 4),
            ("model offload, decode 4 frames", SpeedOptions(offload="model"), 4),
            ("sequential offload, decode 2 frames", SpeedOptions(offload="sequential"), 2),
        ):
            st, mem = run_mv3d(comps, cfg, image, frames, size, min(steps, 5), ch, cuda, args.seed, o)
            table[name] = {"peak_memory_gib": mem, "total_s_at_5_steps": st["total"]}
            print(f"  {name:40s} peak {mem:6.2f} GiB   {st['total']:7.2f} s (5 steps)")
        result["memory_table"] = table
    elif not cuda:
        print("peak device memory per option: GPU only (no separate device memory on a CPU)")

    out = args.out or ROOT / "bench" / "results" / f"generate_fullsize_{device}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
