"""One prepared GPU run: mv3d at full size against diffusers and the compute floor, in one command.

    python -m bench.gpu_run OUT_DIR              # on a CUDA machine: full size, about 8.5 minutes
    python -m bench.gpu_run OUT_DIR --dry-run    # on a CPU: the same parts at toy size, about a minute
    bash bench/gpu_run.sh OUT_DIR                # the same, after installing wheels carried in .whl/

Parts, in the order they run (the most valuable first; each in its own process, spawned on CUDA and
forked on a CPU, with its own time budget, so a crash, an out-of-memory error or a hang in one part still
leaves the others' figures):

``flops``
    FLOPs of every stage counted with ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors (no
    memory, no time): CLIP, VAE encode, one UNet forward with classifier-free guidance (batch 2), VAE
    decode, for the SVD-conditioned modules (which diffusers' pipeline can drive) and for SV3D_p; and one
    training forward. The floor of a run is its FLOPs over the peak rate (``--peak-tflops``, 800: a bf16
    matrix product on an H100/H200); a training step's floor counts 3 forwards (forward + backward).
``gen_eager``
    Full-size generation with random weights: 21 views at 576 px, bf16, Euler with CFG (1 -> 2.5), 50 and
    25 steps: diffusers' ``StableVideoDiffusionPipeline`` and mv3d's ``MultiViewPipeline`` (SDPA,
    channels_last) on the very same modules, time per stage (CLIP, VAE encode, UNet steps with the
    sampler, VAE decode) and peak memory; then mv3d on SV3D_p modules (camera-conditioned UNet, image
    VAE). Each pipeline gets one 2-step warm-up call first. Also the measured bf16 matmul rate.
``train``
    One full-size training step (SV3D_p UNet, batch 2, 21 frames at 576 px, gradient checkpointing, bf16
    autocast, fused AdamW, cached latents): median of 3 steps after a warm-up step, peak memory.
``mesh``
    The mesh stage on the GPU: ``mv3d.reconstruct.reconstruct(device="cuda")`` with its defaults on 21
    views at 576 px of a synthetic object (rasterised here, no renderer needed): a first and a second
    call (its defaults fit views downsized to 256 px), then one fitting the views at 576 px.
``default_model``
    The shipped default model's whole job on the GPU (``mv3d.generate.generate``, its defaults: float16,
    64 px, 1 step x 16 draws, the default reconstruction): model load, a first and a second generation
    (preprocess, sample, write, reconstruct).
``gen_compile``
    As gen_eager for mv3d with ``torch.compile`` of the UNet (mode "default"); the warm-up holds the compile.
``lowmem``
    The low-memory modes at full size (25 steps): decode in chunks of 4 frames, model offload (decode 4),
    sequential offload (decode 2): peak memory against the 12 GB goal, and time.
``gen_cudagraphs``
    As gen_compile with mode "reduce-overhead" (CUDA graphs).

A part starts only while the global deadline (``--budget-s``, 510 s) leaves it time; it is killed at its
own budget (whichever comes first). Inside a part, each measurement is guarded: an error is recorded
and the next measurement runs. ``--parts a,b`` runs a subset (a rerun of what failed).

The dry run (``--dry-run``, on the CPU) runs every part the same way with toy sizes (tiny configs, 5
frames at 16 px, 4 and 2 steps, 8 views at 64 px and a short field fit for the mesh, the default model
with 2 draws and the hull reconstruction): the test suite runs it, so the GPU run cannot fail on a typo. Its ``torch.compile`` traces with dynamo's "eager" backend (inductor's C++ compile
takes minutes on a CPU) and its "reduce-overhead" part compiles with mode "default" (CUDA graphs need
CUDA); its memory figures are the process's peak RSS (a CPU has no separate device memory); its floor
uses a measured float32 matmul rate of the CPU. Its figures test the plumbing, not mv3d's speed.

Output: OUT_DIR/gpu_run.json and OUT_DIR/gpu_run.md (both rewritten after every part, atomically, so a
run killed from outside still leaves the figures taken so far); scratch files (views, meshes, the
inductor cache, one JSON per part) go to a temporary folder (``--work-dir`` to keep them).

gpu_run.json (schema "mv3d.gpu_run/1"):
    schema, dry_run, command, started_utc, finished_utc, wall_s, budget_s
    environment: python, platform, cpu_count, packages {name: version}, nvidia_smi (when there is one)
    settings: the sizes used (frames, resolution, steps, dtype, peak_tflops, train and mesh sizes, ...)
    parts: {name: {status, wall_s, budget_s, device, results, errors, notes}} in run order; status is
        "ok", "partial" (a measurement failed or was skipped for time), "failed" (the part raised),
        "timeout" (killed at its budget; results taken before are kept), "crashed" (the process died
        without a word, e.g. killed for memory) or "skipped" (no time left, or not asked for).
    generation: one row per timed call of gen_eager / gen_compile / gen_cudagraphs: part, label,
        pipeline, conditioning, options, steps, stages_s {clip, vae_encode, unet, vae_decode, total},
        floor_s, time_over_floor, unet_over_floor, speedup_vs_diffusers (diffusers' total over this
        row's, same steps and modules), peak_allocated_gib, peak_reserved_gib, memory_kind, warmup_s
    low_memory: one row per mode: label, offload, decode_chunk, steps, total_s, peak_allocated_gib,
        peak_reserved_gib, memory_kind, under_goal
    training: setting {unet_params, batch, frames, latent, ...}, warmup_s, step_s_all, step_s_median,
        samples_per_s, losses, memory {peak_allocated_gib, ...}, floor_s, time_over_floor
    mesh: views {count, size, make_s}, settings, and per call ("first", "second", "full_views"):
        wall_s, settings, stages_s {load, hull, field, mesh, texture, export, total}, faces, warnings
    default_model: load_s, settings, and per call ("first", "second"): stages_s {preprocess, sample,
        write, reconstruct, total}, mesh (a mesh was made), views (shape), warnings
    goals: {name: {target, value, met (true/false/null when not measured), source}} for "floor_50"
        (best mv3d 50-step time / floor <= 1.3), "vs_diffusers_50" (>= 3x), "low_memory_peak"
        (< 12 GB) and "mesh_stage" (< 5 s)
gpu_run.md: the same as tables: parts and their status, generation, low memory, training, mesh, default
    model, goals; a dry run says so in its first line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.generate_fullsize import svd_pipeline
from bench.harness import StageTimer
from render.common import InputError, atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = "mv3d.gpu_run/1"
JSON_NAME = "gpu_run.json"
MD_NAME = "gpu_run.md"
#: The goals the run measures (issue 24); no test asserts them.
GOALS = {
    "floor_50": ("mv3d 50-step generation time / FLOP floor", "<=", 1.3),
    "vs_diffusers_50": ("diffusers' 50-step time / mv3d's", ">=", 3.0),
    "low_memory_peak": ("peak GPU memory of the best low-memory mode, GB (1e9 bytes)", "<", 12.0),
    "mesh_stage": ("mesh stage (reconstruct, second call), s", "<", 5.0),
}
#: Seconds kept at the end of the global budget for writing the report.
REPORT_RESERVE_S = 5.0
#: Extra seconds a part's process gets past its own deadline before it is killed.
KILL_GRACE_S = 3.0
DIFFUSERS_LABEL = "diffusers"


# --------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and budgets of one run: `full()` on a GPU, `dry()` on the CPU."""

    dry_run: bool
    device: str
    dtype: str
    frames: int
    resolution: int
    steps: tuple[int, ...]
    warmup_steps: int
    decode_chunk: int
    lowmem_steps: int
    lowmem_modes: tuple[tuple[str, str, int], ...]  # (label, offload, decode chunk)
    peak_tflops: float | None  # None: measure the CPU's float32 matmul rate (dry run)
    train_batch: int
    train_frames: int
    train_latent: int
    train_steps: int
    mesh_views: int
    mesh_size: int
    reconstruct: dict[str, Any]  # mv3d.reconstruct.reconstruct keyword arguments besides the views
    field_config: dict[str, Any] | None  # mv3d.reconstruct.field.FieldConfig fields (None: its defaults)
    default_reconstruct: dict[str, Any] | None  # generate(reconstruct_options=...) for default_model
    default_ensemble: int | None  # draws averaged by the default model (None: the model's own)
    budgets: dict[str, float]
    budget_s: float
    min_part_s: float
    seed: int = 0

    @classmethod
    def full(cls, peak_tflops: float = 800.0, budget_s: float = 510.0, seed: int = 0) -> Settings:
        return cls(
            dry_run=False,
            device="cuda",
            dtype="bfloat16",
            frames=21,
            resolution=576,
            steps=(50, 25),
            warmup_steps=2,
            decode_chunk=21,
            lowmem_steps=25,
            lowmem_modes=(
                ("no offload, decode 4 frames", "none", 4),
                ("model offload, decode 4 frames", "model", 4),
                ("sequential offload, decode 2 frames", "sequential", 2),
            ),
            peak_tflops=peak_tflops,
            train_batch=2,
            train_frames=21,
            train_latent=72,
            train_steps=3,
            mesh_views=21,
            mesh_size=576,
            reconstruct={},
            field_config=None,
            default_reconstruct=None,
            default_ensemble=None,
            budgets={
                "flops": 60,
                "gen_eager": 150,
                "train": 90,
                "mesh": 90,
                "default_model": 90,
                "gen_compile": 210,
                "lowmem": 150,
                "gen_cudagraphs": 180,
            },
            budget_s=budget_s,
            min_part_s=20.0,
            seed=seed,
        )

    @classmethod
    def dry(cls, budget_s: float = 900.0, seed: int = 0) -> Settings:
        return cls(
            dry_run=True,
            device="cpu",
            dtype="float32",
            frames=5,
            resolution=16,
            steps=(4, 2),
            warmup_steps=1,
            decode_chunk=5,
            lowmem_steps=2,
            lowmem_modes=(
                ("no offload, decode 2 frames", "none", 2),
                ("model offload, decode 2 frames", "model", 2),
                ("sequential offload, decode 1 frame", "sequential", 1),
            ),
            peak_tflops=None,
            train_batch=2,
            train_frames=5,
            train_latent=8,
            train_steps=1,
            mesh_views=8,
            mesh_size=64,
            reconstruct={"resolution": 32, "max_view_resolution": 64, "texture_size": 128},
            field_config={"coarse_iterations": 8, "fine_iterations": 8, "rays_per_batch": 512},
            default_reconstruct={"method": "hull", "resolution": 32, "texture": "vertex"},
            default_ensemble=2,
            budgets=dict.fromkeys(PART_ORDER, 240.0),
            budget_s=budget_s,
            min_part_s=5.0,
            seed=seed,
        )

    def model_config(self, conditioning: str) -> dict:
        """The generation modules' config: SV3D size, or the tiny test config on a dry run.

        The tiny CLIP keeps 224 px inputs (32 px patches) because diffusers' pipeline resizes to 224.
        """
        from video_prior.components import sv3d_config, tiny_config

        if not self.dry_run:
            return sv3d_config(conditioning, num_frames=self.frames, resolution=self.resolution)
        cfg = tiny_config(num_frames=self.frames, sample_size=self.resolution, conditioning=conditioning)
        cfg["image_encoder"].update(image_size=224, patch_size=32)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# a part's record, written after every measurement
# --------------------------------------------------------------------------------------------------


class PartRecord:
    """What one part measured, saved to its JSON file after every change (so a kill loses nothing).

    `measure` runs one guarded measurement: an exception is recorded under ``errors[key]`` (one line
    plus the traceback's tail) and the part goes on; with fewer than `min_left_s` seconds left before
    the part's deadline the measurement is skipped and that is recorded instead.
    """

    def __init__(self, path: Path, name: str, deadline: float):
        self.path, self.deadline = path, deadline
        self.data: dict[str, Any] = {
            "name": name,
            "status": "running",
            "results": {},
            "errors": {},
            "notes": [],
        }
        self.save()

    @property
    def results(self) -> dict[str, Any]:
        return self.data["results"]

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def put(self, key: str, value: Any) -> Any:
        self.results[key] = value
        self.save()
        return value

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def error(self, key: str, exc: BaseException) -> None:
        tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]
        self.data["errors"][key] = {
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": "".join(tail),
        }
        self.save()

    def measure(self, key: str, fn: Callable[[], Any], min_left_s: float = 0.0) -> Any:
        left = self.time_left()
        if left < min_left_s:
            self.data["errors"][key] = {
                "error": f"skipped: {left:.0f} s left, needs about {min_left_s:.0f} s"
            }
            self.save()
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not stop the part
            self.error(key, exc)
            _free_memory()
            return None

    def finish(self, status: str | None = None) -> None:
        self.data["status"] = status or ("partial" if self.data["errors"] else "ok")
        self.save()


# --------------------------------------------------------------------------------------------------
# small helpers (torch is imported where used: the parent process never touches CUDA before forking)
# --------------------------------------------------------------------------------------------------


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _reset_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(device) -> dict[str, Any]:
    """Peak memory since the last `_reset_peak`: the CUDA allocator's, or the process's peak RSS on a CPU."""
    import torch

    if torch.device(device).type == "cuda":
        return {
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
            "memory_kind": "torch.cuda max_memory_allocated / max_memory_reserved",
        }
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"peak_allocated_gib": rss, "peak_reserved_gib": rss, "memory_kind": "process peak RSS (CPU)"}


def device_info(device) -> dict[str, Any]:
    """Name and size of the device a part ran on."""
    import torch

    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(0)
        return {
            "name": p.name,
            "memory_gib": p.total_memory / 2**30,
            "multiprocessors": p.multi_processor_count,
            "capability": f"{p.major}.{p.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return {"name": platform.processor() or platform.machine() or "cpu", "threads": torch.get_num_threads()}


def matmul_tflops(device, dtype) -> float:
    """Measured throughput of a square matrix product on `device` (TFLOP/s): 8192 on CUDA, 512 on a CPU."""
    import torch

    cuda = torch.device(device).type == "cuda"
    n, reps = (8192, 10) if cuda else (512, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def _dtype(settings: Settings):
    import torch

    return getattr(torch, settings.dtype)


def build_modules(cfg: dict, device, dtype) -> dict[str, Any]:
    """The three networks of `cfg` with random weights, made directly on `device` (no CPU copy)."""
    import torch

    from video_prior.components import build_components

    with torch.device(device):
        comps = build_components(cfg)
    # a few modules build tensors with legacy constructors that ignore the default device
    return {k: m.to(device=device, dtype=dtype).requires_grad_(False) for k, m in comps.items()}


def block_image(size: int):
    """(size, size, 4) uint8 RGBA: an orange block on a transparent background."""
    import numpy as np

    img = np.zeros((size, size, 4), np.uint8)
    s = size // 4
    img[s : 3 * s, s + s // 2 : 3 * s - s // 2] = (200, 80, 40, 255)
    return img


def _use_eager_compile_backend() -> None:
    """Dry run: make ``torch.compile`` trace with dynamo's "eager" backend (no inductor code generation).

    The tracing (graph capture, guards, graph breaks) is the same; inductor's C++ compile of every kernel
    would take minutes on a shared CPU. Its mode is dropped: the eager backend has none.
    """
    import torch

    original = torch.compile

    def compile_eager(model=None, *args, mode=None, **kwargs):
        kwargs.pop("backend", None)
        return original(model, *args, backend="eager", **kwargs)

    torch.compile = compile_eager


# --------------------------------------------------------------------------------------------------
# stage timing of one generation call
# --------------------------------------------------------------------------------------------------


def timed_generation(call: Callable[[int], Any], comps: dict[str, Any], device, steps: int) -> dict[str, Any]:
    """One timed call of `call(steps)`: seconds per stage and peak memory."""
    _free_memory()
    _reset_peak(device)
    with StageTimer(comps, cuda=str(device).startswith("cuda")) as timer:
        call(steps)
    return {"steps": steps, "stages_s": timer.stages(), **_peak_memory(device)}


def diffusers_call(comps: dict[str, Any], settings: Settings) -> Callable[[int], Any]:
    """`call(steps)` of diffusers' StableVideoDiffusionPipeline on `comps` (Euler, linear CFG 1 -> 2.5)."""
    import torch
    from PIL import Image

    pipe = svd_pipeline(comps)
    image = Image.fromarray(block_image(settings.resolution)[..., :3])

    def call(steps: int):
        return pipe(
            image,
            height=settings.resolution,
            width=settings.resolution,
            num_frames=settings.frames,
            num_inference_steps=steps,
            min_guidance_scale=1.0,
            max_guidance_scale=2.5,
            decode_chunk_size=settings.decode_chunk,
            generator=torch.Generator("cpu").manual_seed(settings.seed),
            output_type="pt",
        )

    return call


def mv3d_pipeline(comps: dict[str, Any], cfg: dict, options) -> Any:
    from video_prior.components import model_info_from_config
    from video_prior.pipeline import MultiViewPipeline

    pipe = MultiViewPipeline(**comps, info=model_info_from_config(cfg))
    pipe.apply_speed_options(options)
    return pipe


def mv3d_call(pipe: Any, settings: Settings, decode_chunk: int | None = None) -> Callable[[int], Any]:
    """`call(steps)` of mv3d's MultiViewPipeline (Euler, SV3D's triangle CFG 1 -> 2.5) on a static orbit."""
    import torch

    from render.cameras import static_orbit

    orbit = static_orbit(settings.frames)
    image = block_image(settings.resolution)

    def call(steps: int):
        return pipe(
            image,
            orbit,
            num_inference_steps=steps,
            sampler="euler",
            guidance="triangle",
            min_guidance=1.0,
            max_guidance=2.5,
            generator=torch.Generator("cpu").manual_seed(settings.seed),
            decode_chunk_size=decode_chunk or settings.decode_chunk,
            output_type="pt",
        )

    return call


def _generation_series(
    rec: PartRecord,
    label: str,
    meta: dict[str, Any],
    call: Callable[[int], Any],
    comps: dict[str, Any],
    settings: Settings,
    min_left_s: float,
) -> None:
    """A warm-up call, then one timed call per step count, each appended to ``results["runs"]``."""
    device = settings.device

    def warm() -> float:
        t = time.perf_counter()
        call(settings.warmup_steps)
        _sync(device)
        return time.perf_counter() - t

    warmup = rec.measure(f"{label} warm-up", warm, min_left_s)
    if warmup is None:
        return
    rec.results.setdefault("warmup_s", {})[label] = warmup
    rec.save()
    for steps in settings.steps:
        row = rec.measure(
            f"{label} {steps} steps",
            lambda steps=steps: timed_generation(call, comps, device, steps),
            min_left_s * steps / max(settings.steps),
        )
        if row is not None:
            rec.results.setdefault("runs", []).append({"label": label, **meta, **row, "warmup_s": warmup})
            rec.save()


# --------------------------------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------------------------------


def count_generation_flops(cfg: dict, settings: Settings) -> dict[str, float]:
    """FLOPs of each generation stage on meta tensors: clip, vae_encode, unet_forward_cfg, vae_decode."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder
    from torch.utils.flop_counter import FlopCounterMode

    comps = build_modules(cfg, "meta", torch.float32)
    unet, vae, enc = comps["unet"], comps["vae"], comps["image_encoder"]
    size, frames = settings.resolution, settings.frames
    lat = size // 2 ** (len(vae.config.block_out_channels) - 1)
    ms = torch.device("meta")

    def flops(fn: Callable[[], object]) -> float:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return float(counter.get_total_flops())

    px = enc.config.image_size
    out = {"clip": flops(lambda: enc(pixel_values=torch.zeros(1, 3, px, px, device=ms)))}
    out["vae_encode"] = flops(lambda: vae.encode(torch.zeros(1, 3, size, size, device=ms)))
    k = len(cfg["unet"]["addition_time_embed_dims"])
    ids_shape = (2, frames, k) if cfg["unet"].get("per_frame_conditioning") else (2, k)
    out["unet_forward_cfg"] = flops(
        lambda: unet(
            torch.zeros(2, frames, unet.config.in_channels, lat, lat, device=ms),
            torch.zeros(2, device=ms),
            torch.zeros(2, 1, unet.config.cross_attention_dim, device=ms),
            torch.zeros(*ids_shape, device=ms),
        )
    )
    temporal = isinstance(vae, AutoencoderKLTemporalDecoder)
    dec = 0.0
    for start in range(0, frames, settings.decode_chunk):
        n = min(settings.decode_chunk, frames - start)
        z = torch.zeros(n, vae.config.latent_channels, lat, lat, device=ms)
        dec += flops(lambda z=z, n=n: vae.decode(z, num_frames=n) if temporal else vae.decode(z))
    out["vae_decode"] = dec
    return out


def count_train_forward_flops(settings: Settings) -> float:
    """FLOPs of one training forward of the SV3D_p UNet at the train batch (meta tensors)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from video_prior.unet import MultiViewUNet

    cfg = settings.model_config("sv3d_p")["unet"]
    b, f, lat = settings.train_batch, settings.train_frames, settings.train_latent
    ms = torch.device("meta")
    with ms:
        unet = MultiViewUNet(**cfg)
    unet.to(ms)  # a few modules build tensors with legacy constructors that ignore the default device
    k = len(cfg["addition_time_embed_dims"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(
            torch.zeros(b, f, cfg["in_channels"], lat, lat, device=ms),
            torch.zeros(b, device=ms),
            torch.zeros(b, 1, cfg["cross_attention_dim"], device=ms),
            torch.zeros(b, f, k, device=ms),
        )
    return float(counter.get_total_flops())


def part_flops(settings: Settings, rec: PartRecord, work: Path) -> None:
    """FLOP counts (meta tensors, on the CPU) and the peak rate the floors use."""
    import torch

    if settings.peak_tflops is None:
        rec.put("peak_tflops", matmul_tflops("cpu", torch.float32))
        rec.put("peak_source", "measured 512x512 float32 matmul on this CPU (dry run)")
    else:
        rec.put("peak_tflops", float(settings.peak_tflops))
        rec.put("peak_source", "--peak-tflops (bf16 dense matmul rate)")
    gen: dict[str, Any] = {}
    for cond in ("svd", "sv3d_p"):
        value = rec.measure(
            f"generation {cond}", lambda c=cond: count_generation_flops(settings.model_config(c), settings)
        )
        if value is not None:
            gen[cond] = value
            rec.put("generation", gen)
    rec.measure("train forward", lambda: rec.put("train_forward", count_train_forward_flops(settings)))


def part_gen_eager(settings: Settings, rec: PartRecord, work: Path) -> None:
    """diffusers vs mv3d (SDPA, channels_last) on the same SVD-conditioned modules; mv3d on SV3D_p modules."""
    from video_prior.speed import SpeedOptions

    dev, dtype = settings.device, _dtype(settings)
    rec.measure("matmul", lambda: rec.put("matmul_tflops", matmul_tflops(dev, dtype)))
    rec.put("matmul_dtype", settings.dtype)
    opts = SpeedOptions(attention="sdpa", channels_last=True)
    mv3d_meta = {"pipeline": "mv3d MultiViewPipeline", "options": opts.to_dict()}

    def same_modules() -> None:
        # diffusers first: mv3d's options change the modules in place (channels_last)
        cfg = settings.model_config("svd")
        comps = build_modules(cfg, dev, dtype)
        diffusers_meta = {
            "pipeline": "diffusers StableVideoDiffusionPipeline",
            "conditioning": "svd",
            "options": {},
        }
        rec.measure(
            "diffusers",
            lambda: _generation_series(
                rec, DIFFUSERS_LABEL, diffusers_meta, diffusers_call(comps, settings), comps, settings, 25
            ),
        )
        rec.measure(
            "mv3d eager",
            lambda: _generation_series(
                rec,
                "mv3d eager",
                {**mv3d_meta, "conditioning": "svd"},
                mv3d_call(mv3d_pipeline(comps, cfg, opts), settings),
                comps,
                settings,
                25,
            ),
        )

    def sv3d_p() -> None:
        cfg = settings.model_config("sv3d_p")
        comps = build_modules(cfg, dev, dtype)
        call = mv3d_call(mv3d_pipeline(comps, cfg, opts), settings)
        _generation_series(
            rec, "mv3d eager sv3d_p", {**mv3d_meta, "conditioning": "sv3d_p"}, call, comps, settings, 20
        )

    rec.measure("same modules", same_modules)
    _free_memory()
    rec.measure("mv3d eager sv3d_p", sv3d_p, min_left_s=30)


def _gen_compiled(settings: Settings, rec: PartRecord, work: Path, mode: str, label: str) -> None:
    from video_prior.speed import SpeedOptions

    dev, dtype = settings.device, _dtype(settings)
    if settings.dry_run:
        _use_eager_compile_backend()
        rec.note("dry run: torch.compile traced with dynamo's eager backend (no inductor code generation)")
        if mode == "reduce-overhead":
            mode = "default"
            rec.note("dry run: mode 'reduce-overhead' needs CUDA; compiled with mode 'default' instead")
    cfg = settings.model_config("svd")
    comps = build_modules(cfg, dev, dtype)
    opts = SpeedOptions(
        attention="sdpa",
        channels_last=True,
        compile=True,
        compile_mode=mode,
        compile_cache_dir=str(work / "inductor"),
    )
    _generation_series(
        rec,
        label,
        {"pipeline": "mv3d MultiViewPipeline", "conditioning": "svd", "options": opts.to_dict()},
        mv3d_call(mv3d_pipeline(comps, cfg, opts), settings),
        comps,
        settings,
        min_left_s=25,
    )
    rec.note("warmup_s holds the compile (first call, at the warm-up's step count)")


def part_gen_compile(settings: Settings, rec: PartRecord, work: Path) -> None:
    """mv3d with torch.compile of the UNet (mode "default")."""
    _gen_compiled(settings, rec, work, "default", "mv3d compile")


def part_gen_cudagraphs(settings: Settings, rec: PartRecord, work: Path) -> None:
    """mv3d with torch.compile mode "reduce-overhead" (CUDA graphs)."""
    _gen_compiled(settings, rec, work, "reduce-overhead", "mv3d compile + CUDA graphs")


def part_lowmem(settings: Settings, rec: PartRecord, work: Path) -> None:
    """Chunked decode, model offload and sequential offload: peak memory and time at `lowmem_steps`."""
    from video_prior.speed import SpeedOptions

    dev, dtype = settings.device, _dtype(settings)
    cfg = settings.model_config("svd")
    comps = build_modules(cfg, dev, dtype)
    for label, offload, chunk in settings.lowmem_modes:

        def one(label=label, offload=offload, chunk=chunk) -> None:
            opts = SpeedOptions(attention="sdpa", offload=offload, offload_device=dev)
            pipe = mv3d_pipeline(comps, cfg, opts)
            try:
                call = mv3d_call(pipe, settings, decode_chunk=chunk)
                t = time.perf_counter()
                call(1)  # warm-up: kernels, allocator, pinned buffers
                warmup = time.perf_counter() - t
                row = timed_generation(call, comps, dev, settings.lowmem_steps)
            finally:
                pipe.disable_offload()
            rec.results.setdefault("runs", []).append(
                {"label": label, "offload": offload, "decode_chunk": chunk, "warmup_s": warmup, **row}
            )
            rec.save()

        rec.measure(label, one, min_left_s=30 if offload == "sequential" else 15)


def part_train(settings: Settings, rec: PartRecord, work: Path) -> None:
    """One training step of the SV3D_p UNet: gradient checkpointing, bf16 autocast, fused AdamW."""
    import torch

    from video_prior.components import ModelInfo
    from video_prior.conditioning import conditioning_kind
    from video_prior.denoiser import MultiViewDenoiser
    from video_prior.train import TrainConfig, training_loss
    from video_prior.unet import MultiViewUNet

    dev = torch.device(settings.device)
    cuda = dev.type == "cuda"
    cfg = settings.model_config("sv3d_p")["unet"]
    torch.manual_seed(settings.seed)
    with dev:
        unet = MultiViewUNet(**cfg)
    unet.to(dev)  # float32 master weights
    unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, fused=cuda)
    b, f, lat = settings.train_batch, settings.train_frames, settings.train_latent
    g = torch.Generator().manual_seed(settings.seed)
    batch = {  # as the latent cache gives it (SV3D trained from precomputed latents and CLIP embeddings)
        "latents": torch.randn(b, f, 4, lat, lat, generator=g),
        "cond_latent": torch.randn(b, 4, lat, lat, generator=g) * 5,
        "clip": torch.randn(b, 1, cfg["cross_attention_dim"], generator=g),
        "polar_rad": torch.full((b, f), 1.4),
        "azimuth_rad": torch.linspace(0, 6.0, f).expand(b, f).contiguous(),
    }
    tcfg = TrainConfig.from_dict({"model": {"preset": "tiny"}, "cond_drop_prob": 0.1})
    # v prediction on plain latents with this UNet's conditioning, from the cached latents and CLIP
    # embeddings (no VAE or image encoder in the step)
    denoiser = MultiViewDenoiser(unet, None, None, ModelInfo(conditioning=conditioning_kind(unet.config)))

    def step(i: int) -> tuple[float, float]:
        _sync(dev)
        t = time.perf_counter()
        gen = torch.Generator().manual_seed(i)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = training_loss(denoiser, batch, tcfg, gen, dev)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        _sync(dev)
        return time.perf_counter() - t, value

    rec.put(
        "setting",
        {
            "unet_params": sum(p.numel() for p in unet.parameters()),
            "batch": b,
            "frames": f,
            "latent": [4, lat, lat],
            "gradient_checkpointing": True,
            "autocast": "bfloat16",
            "fused_adamw": cuda,
            "inputs": "precomputed latents + CLIP embeddings",
        },
    )
    warm_s, warm_loss = step(0)  # allocator, kernels, AdamW state
    rec.put("warmup_s", warm_s)
    _reset_peak(dev)  # the peak after this still holds weights, gradients and optimizer state
    times, losses = [], []
    for i in range(settings.train_steps):
        if rec.time_left() < 2 * max(times + [warm_s]):
            rec.note(f"stopped after {len(times)} timed steps: the part's time was running out")
            break
        s, v = step(i + 1)
        times.append(s)
        losses.append(v)
        rec.put("step_s_all", times)
    if not times:
        raise RuntimeError("no timed training step fitted in the part's time")
    rec.put("step_s_median", sorted(times)[len(times) // 2])
    rec.put("samples_per_s", b / rec.results["step_s_median"])
    rec.put("losses", [warm_loss, *losses])
    rec.put("memory", _peak_memory(dev))


def synthetic_object():
    """A mug-like object of three coloured parts (body, handle, knob), normalised to the unit cube.

    Returns:
        (mesh, face_colours): a trimesh.Trimesh centred at the origin with largest extent 1, and (F, 3)
        float RGB in [0, 1] with stripes around the body, so that texture baking has detail to find.
    """
    import numpy as np
    import trimesh

    body = trimesh.creation.cylinder(radius=0.32, height=0.8, sections=48)
    handle = trimesh.creation.torus(major_radius=0.2, minor_radius=0.05, major_sections=32, minor_sections=12)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    handle.apply_translation([0.36, 0.0, 0.0])
    knob = trimesh.creation.icosphere(subdivisions=2, radius=0.12)
    knob.apply_translation([0.0, 0.0, 0.48])
    parts = [body, handle, knob]
    base = np.array([[0.85, 0.25, 0.15], [0.15, 0.35, 0.85], [0.95, 0.8, 0.2]])
    colours = []
    for part, c in zip(parts, base, strict=True):
        centres = part.triangles_center
        stripe = 0.75 + 0.25 * np.sign(np.sin(6 * np.arctan2(centres[:, 1], centres[:, 0])))
        colours.append(c[None] * stripe[:, None])
    mesh = trimesh.util.concatenate(parts)
    mesh.apply_translation(-mesh.bounds.mean(axis=0))
    mesh.apply_scale(1.0 / mesh.extents.max())
    return mesh, np.concatenate(colours)


def synthetic_views(num_views: int, size: int):
    """RGBA views of `synthetic_object` on a static orbit, by mv3d's numpy rasteriser (no renderer needed).

    Shading: face colour x (0.35 + 0.65 |n . v|), two-sided. Returns ((N, size, size, 4) uint8 straight
    alpha, the `render.cameras.Orbit`).
    """
    import numpy as np

    from render.cameras import static_orbit
    from render.raster import render_depth

    mesh, colours = synthetic_object()
    orbit = static_orbit(num_views, elevation_deg=10.0)
    intr = orbit.intrinsics(size)
    verts, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    normals, centres = np.asarray(mesh.face_normals), np.asarray(mesh.triangles_center)
    out = np.zeros((num_views, size, size, 4), np.uint8)
    out[..., :3] = 255
    for i, c2w in enumerate(orbit.camera_to_world()):
        frags = render_depth(verts, faces, c2w, intr)
        hit = frags.face >= 0
        f = frags.face[hit]
        view = c2w[:3, 3][None] - centres[f]
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        shade = 0.35 + 0.65 * np.abs(np.sum(normals[f] * view, axis=1))
        out[i][hit, :3] = np.clip(colours[f] * shade[:, None] * 255, 0, 255).astype(np.uint8)
        out[i][hit, 3] = 255
    return out, orbit


def part_mesh(settings: Settings, rec: PartRecord, work: Path) -> None:
    """`mv3d.reconstruct.reconstruct` on the device for N views: a first (cold) and a second call with its
    defaults (views downsized to 256 px for fitting), then one fitting the views at their full size."""
    from mv3d.reconstruct import reconstruct
    from mv3d.reconstruct.field import FieldConfig
    from render.dataset import write_orbit_dataset

    t = time.perf_counter()
    rgba, orbit = synthetic_views(settings.mesh_views, settings.mesh_size)
    views = write_orbit_dataset(work / "mesh_views", rgba, orbit)
    made = time.perf_counter() - t
    rec.put("views", {"count": settings.mesh_views, "size": settings.mesh_size, "make_s": made})
    kwargs = {"device": settings.device, "progress": False, "seed": settings.seed, **settings.reconstruct}
    shown = {k: v for k, v in kwargs.items() if k != "progress"}
    rec.put("settings", {**shown, "field_config": settings.field_config})
    if settings.field_config is not None:
        kwargs["field_config"] = FieldConfig(**settings.field_config)
    calls = (("first", {}), ("second", {}), ("full_views", {"max_view_resolution": settings.mesh_size}))
    for call, extra in calls:

        def one(call=call, extra=extra) -> None:
            t = time.perf_counter()
            result = reconstruct(views, out=work / f"mesh_{call}.glb", **{**kwargs, **extra})
            wall = time.perf_counter() - t
            rec.put(
                call,
                {
                    "wall_s": wall,
                    "settings": extra,
                    "stages_s": {k: float(v) for k, v in result.timings.items()},
                    "faces": int(len(result.mesh.faces)),
                    "warnings": list(result.warnings),
                },
            )

        rec.measure(f"reconstruct {call}", one, min_left_s=10 if call != "full_views" else 25)


def part_default_model(settings: Settings, rec: PartRecord, work: Path) -> None:
    """The shipped default model's job (`mv3d.generate.generate`) on the device: load, then two images."""
    from PIL import Image

    from mv3d.generate import ViewGenerator, generate

    rgba, _ = synthetic_views(1, 576 if not settings.dry_run else 64)
    image = work / "default_input.png"
    Image.fromarray(rgba[0], "RGBA").save(image)
    t = time.perf_counter()
    generator = ViewGenerator.load("default", device=settings.device, ensemble=settings.default_ensemble)
    rec.put("load_s", time.perf_counter() - t)
    rec.put(
        "settings",
        {**generator.settings(), "reconstruct_options": settings.default_reconstruct or "defaults"},
    )
    for call in ("first", "second"):

        def one(call=call) -> None:
            (result,) = generate(
                [image],
                out_dir=work / f"default_{call}",
                generator=generator,
                seed=settings.seed,
                progress=False,
                reconstruct_options=settings.default_reconstruct,
            )
            rec.put(
                call,
                {
                    "stages_s": {k: float(v) for k, v in result.timings.items()},
                    "mesh": result.mesh_path is not None,
                    "views": list(result.views.shape),
                    "warnings": list(result.warnings),
                },
            )

        rec.measure(f"generate {call}", one, min_left_s=10)


#: The parts in run order (the most valuable first) and what each runs.
PARTS: dict[str, Callable[[Settings, PartRecord, Path], None]] = {
    "flops": part_flops,
    "gen_eager": part_gen_eager,
    "train": part_train,
    "mesh": part_mesh,
    "default_model": part_default_model,
    "gen_compile": part_gen_compile,
    "lowmem": part_lowmem,
    "gen_cudagraphs": part_gen_cudagraphs,
}
PART_ORDER = tuple(PARTS)
#: Parts that need the accelerator (a GPU run refuses to start them without CUDA).
DEVICE_PARTS = tuple(p for p in PART_ORDER if p != "flops")


# --------------------------------------------------------------------------------------------------
# running parts in forked processes
# --------------------------------------------------------------------------------------------------


def _child(name: str, settings: Settings, work: Path, deadline: float, path: Path) -> None:
    """Body of a part's process: its own process group (so a kill takes its compile workers too)."""
    os.setpgid(0, 0)
    rec = PartRecord(path, name, deadline)
    code = 0
    try:
        import torch

        if name in DEVICE_PARTS and settings.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available: run with --dry-run on a machine without a GPU")
        # "modules that should be kept in float32: []" and similar, once per module cast
        for logging_module in ("diffusers.utils.logging", "transformers.utils.logging"):
            if logging_module in sys.modules:  # loaded by _preload
                sys.modules[logging_module].set_verbosity_error()
        torch.manual_seed(settings.seed)
        rec.data["device"] = device_info(settings.device if name != "flops" else "cpu")
        PARTS[name](settings, rec, work)
        rec.finish()
    except BaseException as exc:  # noqa: BLE001 - recorded, the parent goes on with the next part
        rec.error("part", exc)
        rec.finish("failed")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit handlers of the parent in the child


def _start_method(settings: Settings) -> str:
    """How a part's process starts: "spawn" (a fresh interpreter) on CUDA, "fork" on a CPU.

    On the lent H200 (2026-12-04) every forked part failed with "Cannot re-initialize CUDA in forked
    subprocess": the parent's imports had touched the driver (torch's device count does, where NVML is
    not reachable). A spawned part imports its modules itself, a few seconds each; the CPU dry run keeps
    fork, which is faster and safe there.
    """
    return "spawn" if settings.device == "cuda" else "fork"


def run_part(name: str, settings: Settings, work: Path, deadline: float) -> dict[str, Any]:
    """Run one part in its own process until it ends or `deadline` (time.monotonic) passes.

    Returns the part's record with its status set: the child's own ("ok", "partial", "failed"), or
    "timeout" (killed; what it had saved is kept) or "crashed" (died without finishing its record).
    """
    path = work / "parts" / f"{name}.json"
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    ctx = multiprocessing.get_context(_start_method(settings))
    proc = ctx.Process(target=_child, args=(name, settings, work, deadline, path), name=f"gpu_run-{name}")
    proc.start()
    proc.join(max(0.0, deadline - time.monotonic()) + KILL_GRACE_S)
    timed_out = proc.is_alive()
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.join(10)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {"name": name, "status": "running", "results": {}, "errors": {}, "notes": []}
    if timed_out:
        record["status"] = "timeout"
    elif record.get("status") == "running":
        record["status"] = "crashed"
        record["errors"]["part"] = {"error": f"the part's process ended with exit code {proc.exitcode}"}
    record["wall_s"] = time.monotonic() - start
    return record


def run_parts(
    names: list[str],
    settings: Settings,
    work: Path,
    on_part: Callable[[dict[str, dict]], None] | None = None,
    clock_start: float | None = None,
) -> dict[str, dict]:
    """Run `names` in PART_ORDER within the global budget; `on_part(records)` after each one."""
    start = time.monotonic() if clock_start is None else clock_start
    end = start + settings.budget_s - REPORT_RESERVE_S
    records: dict[str, dict] = {}
    for name in PART_ORDER:
        if name not in names:
            records[name] = {
                "name": name,
                "status": "skipped",
                "results": {},
                "errors": {},
                "notes": ["not asked for"],
            }
            continue
        budget = float(settings.budgets.get(name, 60.0))
        now = time.monotonic()
        deadline = min(now + budget, end)
        if deadline - now < settings.min_part_s:
            records[name] = {
                "name": name,
                "status": "skipped",
                "results": {},
                "errors": {},
                "notes": [f"no time left in the global budget ({end - now:.0f} s)"],
                "budget_s": budget,
            }
        else:
            print(f"[gpu_run] {name}: up to {deadline - now:.0f} s", flush=True)
            records[name] = run_part(name, settings, work, deadline)
            records[name]["budget_s"] = budget
            print(
                f"[gpu_run] {name}: {records[name]['status']} in {records[name]['wall_s']:.1f} s", flush=True
            )
        if on_part is not None:
            on_part(records)
    return records


# --------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------


def generation_floor_flops(flops: dict[str, float], steps: int) -> float:
    """Total FLOPs of one generation: CLIP + VAE encode + steps x (CFG UNet forward) + VAE decode."""
    return flops["clip"] + flops["vae_encode"] + flops["unet_forward_cfg"] * steps + flops["vae_decode"]


def generation_rows(parts: dict[str, dict]) -> list[dict[str, Any]]:
    """Every timed generation call of the gen_* parts, with floor, ratios and the speed-up over diffusers."""
    fl = parts.get("flops", {}).get("results", {})
    peak = fl.get("peak_tflops")
    gen_flops = fl.get("generation", {})
    rows = []
    for part in ("gen_eager", "gen_compile", "gen_cudagraphs"):
        for run in parts.get(part, {}).get("results", {}).get("runs", []):
            row = {"part": part, **run, "total_s": run["stages_s"]["total"]}
            f = gen_flops.get(run.get("conditioning"))
            if f and peak:
                row["floor_s"] = generation_floor_flops(f, run["steps"]) / (peak * 1e12)
                row["time_over_floor"] = row["total_s"] / row["floor_s"]
                row["unet_over_floor"] = run["stages_s"]["unet"] / (
                    f["unet_forward_cfg"] * run["steps"] / (peak * 1e12)
                )
            rows.append(row)
    base = {r["steps"]: r["total_s"] for r in rows if r["label"] == DIFFUSERS_LABEL}
    for r in rows:
        if r.get("conditioning") == "svd" and r["steps"] in base:
            r["speedup_vs_diffusers"] = base[r["steps"]] / r["total_s"]
    return rows


def low_memory_rows(parts: dict[str, dict]) -> list[dict[str, Any]]:
    goal_gib = GOALS["low_memory_peak"][2] * 1e9 / 2**30
    rows = []
    for run in parts.get("lowmem", {}).get("results", {}).get("runs", []):
        rows.append(
            {**run, "total_s": run["stages_s"]["total"], "under_goal": run["peak_allocated_gib"] < goal_gib}
        )
    return rows


def training_summary(parts: dict[str, dict]) -> dict[str, Any]:
    res = dict(parts.get("train", {}).get("results", {}))
    fl = parts.get("flops", {}).get("results", {})
    if "step_s_median" in res and fl.get("train_forward") and fl.get("peak_tflops"):
        res["floor_s"] = 3 * fl["train_forward"] / (fl["peak_tflops"] * 1e12)
        res["time_over_floor"] = res["step_s_median"] / res["floor_s"]
    return res


def goals(gen: list[dict], low: list[dict], parts: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Each goal's target, measured value and whether it is met (None: not measured)."""
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, value: float | None, source: str) -> None:
        what, op, target = GOALS[name]
        met = None
        if value is not None:
            met = value <= target if op == "<=" else value >= target if op == ">=" else value < target
        out[name] = {"what": what, "target": f"{op} {target}", "value": value, "met": met, "source": source}

    mv3d50 = [
        r
        for r in gen
        if r["label"] != DIFFUSERS_LABEL and r["steps"] == max((g["steps"] for g in gen), default=0)
    ]
    floored = [r for r in mv3d50 if "time_over_floor" in r]
    best = min(floored, key=lambda r: r["time_over_floor"], default=None)
    put("floor_50", best and best["time_over_floor"], best["label"] if best else "not measured")
    sped = [r for r in mv3d50 if "speedup_vs_diffusers" in r]
    best = max(sped, key=lambda r: r["speedup_vs_diffusers"], default=None)
    put("vs_diffusers_50", best and best["speedup_vs_diffusers"], best["label"] if best else "not measured")
    offloads = [r for r in low if r["offload"] != "none"] or low
    best = min(offloads, key=lambda r: r["peak_allocated_gib"], default=None)
    put(
        "low_memory_peak",
        best and best["peak_allocated_gib"] * 2**30 / 1e9,
        best["label"] if best else "not measured",
    )
    mesh = parts.get("mesh", {}).get("results", {})
    call = mesh.get("second") or mesh.get("first")
    put(
        "mesh_stage",
        call and call["wall_s"],
        ("second call" if "second" in mesh else "first call") if call else "not measured",
    )
    return out


def build_report(records: dict[str, dict], settings: Settings, meta: dict[str, Any]) -> dict[str, Any]:
    gen = generation_rows(records)
    low = low_memory_rows(records)
    return {
        "schema": SCHEMA,
        "dry_run": settings.dry_run,
        **meta,
        "settings": settings.to_dict(),
        "parts": records,
        "generation": gen,
        "low_memory": low,
        "training": training_summary(records),
        "mesh": records.get("mesh", {}).get("results", {}),
        "default_model": records.get("default_model", {}).get("results", {}),
        "goals": goals(gen, low, records),
    }


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _g(value: float | None) -> str:
    """A rate to 3 significant digits (0.0412, 788)."""
    return "–" if value is None else f"{value:.3g}"


def _stage_line(stages: dict[str, float]) -> str:
    return (
        ", ".join(f"{k} {v:.2f} s" for k, v in stages.items() if k != "total")
        + f"; total {stages.get('total', 0):.2f} s"
    )


def render_markdown(report: dict[str, Any]) -> str:
    """gpu_run.md: the report's tables."""
    env = report.get("environment", {})
    devices = {p.get("device", {}).get("name") for p in report["parts"].values() if p.get("device")}
    lines = []
    if report["dry_run"]:
        lines.append("**DRY RUN on the CPU at toy size: these figures test the script, not mv3d's speed.**\n")
    lines += [
        "# mv3d GPU run",
        "",
        f"Device: {', '.join(sorted(d for d in devices if d)) or 'unknown'}; started {report.get('started_utc')} "
        f"UTC, {_f(report.get('wall_s'), 0)} s of a {_f(report['settings']['budget_s'], 0)} s budget; torch "
        f"{env.get('packages', {}).get('torch', '?')}, diffusers {env.get('packages', {}).get('diffusers', '?')}.",
        "",
        "## Parts",
        "",
        "| part | status | seconds | budget | errors |",
        "|---|---|---:|---:|---|",
    ]
    for name, p in report["parts"].items():
        errs = "; ".join(f"{k}: {v['error']}" for k, v in p.get("errors", {}).items())
        errs = " ".join(errs.replace("|", "/").split())  # one table row: no newlines
        lines.append(
            f"| {name} | {p['status']} | {_f(p.get('wall_s'), 1)} | {_f(p.get('budget_s'), 0)} | {errs[:300]} |"
        )
    s = report["settings"]
    fl = report["parts"].get("flops", {}).get("results", {})
    lines += [
        "",
        f"## Generation ({s['frames']} views at {s['resolution']} px, {s['dtype']}, Euler with CFG)",
        "",
        f"Floor: FLOPs / {_g(fl.get('peak_tflops'))} TFLOP/s ({fl.get('peak_source', 'no FLOP count')}); "
        f"measured matmul rate on the device: "
        f"{_g(report['parts'].get('gen_eager', {}).get('results', {}).get('matmul_tflops'))} TFLOP/s. "
        "Rows with conditioning svd run on the same random modules (diffusers' pipeline can drive them); "
        "sv3d_p rows on SV3D_p modules (per-frame camera conditioning, image VAE). Each row is one call "
        "after a warm-up call (warm-up s: for the compiled rows, the compile).",
        "",
        "| run | cond. | steps | CLIP s | VAE enc s | UNet s | VAE dec s | total s | floor s | time/floor | UNet/floor | vs diffusers | peak GiB | warm-up s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["generation"]:
        st = r["stages_s"]
        lines.append(
            f"| {r['label']} | {r.get('conditioning')} | {r['steps']} | {_f(st['clip'], 3)} | {_f(st['vae_encode'], 3)} | "
            f"{_f(st['unet'])} | {_f(st['vae_decode'])} | {_f(r['total_s'])} | {_f(r.get('floor_s'))} | "
            f"{_f(r.get('time_over_floor'))} | {_f(r.get('unet_over_floor'))} | {_f(r.get('speedup_vs_diffusers'))}"
            f"{'x' if r.get('speedup_vs_diffusers') else ''} | {_f(r.get('peak_allocated_gib'))} | {_f(r.get('warmup_s'), 1)} |"
        )
    lines += [
        "",
        f"## Low-memory modes ({s['lowmem_steps']} steps; goal: peak under {GOALS['low_memory_peak'][2]:.0f} GB)",
        "",
        "| mode | total s | peak allocated GiB | peak reserved GiB | under goal |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report["low_memory"]:
        lines.append(
            f"| {r['label']} | {_f(r['total_s'])} | {_f(r.get('peak_allocated_gib'))} | {_f(r.get('peak_reserved_gib'))} | {_f(r.get('under_goal'))} |"
        )
    t = report["training"]
    lines += ["", "## Training step", ""]
    if "step_s_median" in t:
        st = t.get("setting", {})
        lines.append(
            f"UNet {st.get('unet_params', 0) / 1e9:.3f} B parameters, batch {st.get('batch')}, {st.get('frames')} frames, "
            f"latents {st.get('latent')}, gradient checkpointing, bf16 autocast, fused AdamW {_f(st.get('fused_adamw'))}: "
            f"**{_f(t['step_s_median'], 3)} s per step** (median of {len(t.get('step_s_all', []))}; warm-up "
            f"{_f(t.get('warmup_s'), 1)} s), {_f(t.get('samples_per_s'))} samples/s, floor {_f(t.get('floor_s'), 3)} s "
            f"(3 forwards), time/floor {_f(t.get('time_over_floor'))}, peak {_f(t.get('memory', {}).get('peak_allocated_gib'))} GiB."
        )
    else:
        lines.append("not measured")
    m = report["mesh"]
    lines += ["", "## Mesh stage (mv3d.reconstruct on the device)", ""]
    if m.get("views"):
        lines.append(f"{m['views']['count']} views at {m['views']['size']} px; settings {m.get('settings')}.")
    for call in ("first", "second", "full_views"):
        if call in m:
            lines.append(
                f"- {call} call{' ' + str(m[call]['settings']) if m[call].get('settings') else ''}: "
                f"{_f(m[call]['wall_s'])} s ({_stage_line(m[call]['stages_s'])}), {m[call]['faces']} faces"
            )
    d = report["default_model"]
    lines += ["", "## Default model (mv3d generate on the device)", ""]
    if "load_s" in d:
        ds = d.get("settings", {})
        lines.append(
            f"load {_f(d['load_s'])} s; dtype {ds.get('dtype')}, {ds.get('resolution')} px, {ds.get('steps')} "
            f"step(s) x {ds.get('ensemble')} draws, reconstruction {ds.get('reconstruct_options')}."
        )
    for call in ("first", "second"):
        if call in d:
            lines.append(f"- {call} image: {_stage_line(d[call]['stages_s'])}")
    lines += ["", "## Goals", "", "| goal | target | measured | met | from |", "|---|---|---:|---|---|"]
    for g in report["goals"].values():
        lines.append(f"| {g['what']} | {g['target']} | {_f(g['value'])} | {_f(g['met'])} | {g['source']} |")
    lines.append("")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Versions and the GPU as nvidia-smi names it (no CUDA initialisation in this process)."""
    import importlib.metadata as md

    pkgs = {}
    for name in (
        "torch",
        "diffusers",
        "transformers",
        "accelerate",
        "numpy",
        "trimesh",
        "xatlas",
        "PyMCubes",
        "scipy",
        "triton",
    ):
        try:
            pkgs[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": pkgs,
    }
    if shutil.which("nvidia-smi"):
        try:
            q = "name,memory.total,driver_version,clocks.max.sm"
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"failed: {exc}"
    return env


def _preload() -> None:
    """Import the heavy modules once here, so every forked part starts with them loaded.

    A module that fails to import is left to fail again in the part that needs it (recorded there).
    """
    for module in (
        "torch",
        "diffusers",
        "transformers",
        "video_prior.pipeline",
        "video_prior.train",
        "mv3d.generate",
        "mv3d.reconstruct",
        "mv3d.reconstruct.field",
        "mv3d.reconstruct.texture",
    ):
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001
            print(f"[gpu_run] preload of {module} failed: {type(exc).__name__}: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_run", description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path, help="where gpu_run.json and gpu_run.md are written")
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: tests the script")
    p.add_argument(
        "--parts", default=",".join(PART_ORDER), help=f"comma-separated subset of {','.join(PART_ORDER)}"
    )
    p.add_argument(
        "--budget-s", type=float, default=None, help="global deadline in seconds (510 GPU, 900 dry run)"
    )
    p.add_argument("--peak-tflops", type=float, default=800.0, help="device peak for the floors (GPU run)")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder to keep (default: a temporary one)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--part-budget",
        action="append",
        default=[],
        metavar="PART=S",
        help="a part's own time limit in seconds instead of its default (repeatable; the global one still holds)",
    )
    args = p.parse_args(argv)
    try:
        names = [n.strip() for n in args.parts.split(",") if n.strip()]
        unknown = [n for n in names if n not in PARTS]
        if unknown or not names:
            raise InputError(
                f"--parts {args.parts}: unknown {unknown}; expected names from {', '.join(PART_ORDER)}"
            )
        if args.budget_s is not None and args.budget_s <= 0:
            raise InputError(f"--budget-s {args.budget_s}: expected a positive number of seconds")
        if args.peak_tflops <= 0:
            raise InputError(f"--peak-tflops {args.peak_tflops}: expected a positive rate")
        part_budgets = {}
        for spec in args.part_budget:
            name, _, seconds = spec.partition("=")
            try:
                value = float(seconds)
            except ValueError:
                value = -1.0
            if name not in PARTS or not 0 < value <= 3600:
                raise InputError(
                    f"--part-budget {spec}: expected PART=SECONDS, a part of {', '.join(PART_ORDER)} and 0 < S <= 3600"
                )
            part_budgets[name] = value
        if args.out_dir.exists() and not args.out_dir.is_dir():
            raise InputError(f"{args.out_dir}: exists and is not a folder; expected an output folder")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        settings = Settings.dry(**({"budget_s": args.budget_s} if args.budget_s else {}), seed=args.seed)
    else:
        settings = Settings.full(
            args.peak_tflops, **({"budget_s": args.budget_s} if args.budget_s else {}), seed=args.seed
        )
    settings = dataclasses.replace(settings, budgets={**settings.budgets, **part_budgets})
    clock = time.monotonic()
    started = datetime.now(timezone.utc)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    own_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="mv3d-gpu-run-")) if own_work else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": ["python", "-m", "bench.gpu_run", *(sys.argv[1:] if argv is None else argv)],
        "started_utc": started.strftime("%Y-%m-%d %H:%M:%S"),
        "budget_s": settings.budget_s,
        "environment": environment(),
    }
    print(
        f"[gpu_run] {'DRY RUN (CPU, toy size)' if settings.dry_run else 'GPU run (full size)'}; parts {names}",
        flush=True,
    )
    _preload()

    def write(records: dict[str, dict]) -> dict[str, Any]:
        meta["wall_s"] = time.monotonic() - clock
        meta["finished_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        report = build_report(records, settings, meta)
        atomic_write_json(args.out_dir / JSON_NAME, report)
        try:
            text = render_markdown(report)
        except Exception as exc:  # noqa: BLE001 - the JSON holds the figures; say why the tables are missing
            text = f"# mv3d GPU run\n\nthe tables could not be written ({type(exc).__name__}: {exc}); see {JSON_NAME}\n"
        atomic_write_text(args.out_dir / MD_NAME, text)
        return report

    try:
        records = run_parts(names, settings, work, on_part=write, clock_start=clock)
        write(records)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    print((args.out_dir / MD_NAME).read_text())
    print(f"[gpu_run] wrote {args.out_dir / JSON_NAME} and {args.out_dir / MD_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
