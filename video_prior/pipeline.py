"""The image -> orbit-of-views pipeline, in the style of diffusers' StableVideoDiffusionPipeline.

    pipe = MultiViewPipeline.from_pretrained("models/sv3d_p", device="cuda", dtype=torch.float16)
    out = pipe(rgba, static_orbit(21), generator=torch.Generator("cuda").manual_seed(0))
    out.frames           # (21, 576, 576, 3) float in [0, 1], frame 0 = the input view
    out.camera_to_world  # (21, 4, 4) OpenGL camera-to-world of each frame

It composes the model (`video_prior.unet`, `video_prior.conditioning`) with the denoising functions
(`video_prior.edm`, `video_prior.samplers`, `video_prior.guidance`); it knows nothing of files other than
the model folder, nor of the CLI.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from render.cameras import Orbit, from_sv3d_order, to_sv3d
from render.common import InputError
from render.dataset import composite
from video_prior.components import (
    ModelInfo,
    build_components,
    load_components,
    model_info_from_config,
    save_components,
)
from video_prior.conditioning import (
    camera_time_ids,
    clip_embed,
    condition_latent,
    decode_latents,
    residual_offset,
)
from video_prior.edm import denoise, karras_sigmas
from video_prior.guidance import apply_cfg, guidance_scales
from video_prior.samplers import get_sampler

__all__ = ["MultiViewPipeline", "MultiViewPipelineOutput", "OUTPUT_TYPES", "mirror_orbit"]

OUTPUT_TYPES = ("np", "uint8", "pt")


@dataclass(frozen=True)
class _SamplingPlan:
    """The sampling settings one `__call__` resolved, shared by its branches (`_sample_branch`)."""

    steps: int
    sample_fn: Any
    scales: torch.Tensor
    do_cfg: bool
    cond_aug: float
    generator: torch.Generator | None
    decode_chunk_size: int


def mirror_orbit(orbit: Orbit) -> Orbit:
    """The orbit reflected through the vertical plane of its input camera (frame 0): azimuths phi ->
    2 * phi_0 - phi, elevations, radii and field of view unchanged. Seen from the reflected cameras, the
    reflected object gives the left-right mirror images of the original views."""
    az = np.asarray(orbit.azimuth_deg, dtype=np.float64)
    return Orbit(
        azimuth_deg=(2.0 * az[0] - az) % 360.0,
        elevation_deg=orbit.elevation_deg,
        radius=orbit.radius,
        fov_deg=orbit.fov_deg,
        kind=orbit.kind,
    )


def calibrate_alpha(alpha: torch.Tensor, threshold: float) -> torch.Tensor:
    """Map a matte piecewise-linearly so that `threshold` lands on 0.5; 0 and 1 stay where they are.

    Args:
        alpha: (...) matte in [0, 1].
        threshold: the raw level that separates object from background, in (0, 1).
    Returns:
        (...) matte in [0, 1], monotone in `alpha`: ``out > 0.5`` exactly where ``alpha > threshold``.

    Only the matte moves: a view composited on the background is the same before and after, as
    ``mv3d.generate.unmix_background`` recovers straight colours for whichever alpha it is given.
    """
    t = float(threshold)
    return torch.where(alpha <= t, alpha * (0.5 / t), 0.5 + (alpha - t) * (0.5 / (1.0 - t)))


@dataclass
class MultiViewPipelineOutput:
    """Output of `MultiViewPipeline`.

    Attributes:
        frames: (N, H, W, C) float32 in [0, 1] ("np"), uint8 ("uint8"), or a (N, C, H, W) float tensor in
            [0, 1] ("pt"); in the orbit's order (frame 0 = the input view). C = 3 (RGB on the model's
            background), or 4 for an alpha model (that RGB, then its alpha).
        orbit: the orbit the frames were generated for.
        camera_to_world: (N, 4, 4) OpenGL camera-to-world matrices of the frames.
    """

    frames: np.ndarray | torch.Tensor
    orbit: Orbit
    camera_to_world: np.ndarray


class MultiViewPipeline:
    """One image and an orbit of cameras in, one generated view per camera out.

    Args:
        unet: a `MultiViewUNet`.
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder``.
        image_encoder: ``CLIPVisionModelWithProjection``.
        info: the `ModelInfo` (conditioning kind, frame order, resolution, ...).
    """

    #: the order the models are used in one call; `enable_model_cpu_offload` moves each to the device
    #: only while it runs.
    model_cpu_offload_seq = "image_encoder->vae->unet->vae"

    def __init__(self, unet, vae, image_encoder, info: ModelInfo):
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder
        self.info = info
        channels = int(getattr(vae.config, "in_channels", 3))
        if channels != self.image_channels:
            raise InputError(
                f"model first stage encodes {channels} image channels but the model info says alpha={info.alpha}: "
                f"expected {self.image_channels}"
            )
        self._offload_device: torch.device | None = None
        #: "model" or "sequential" while offloading (see `enable_model_cpu_offload`), else None.
        self._offload_kind: str | None = None
        #: the `video_prior.speed.SpeedOptions` last applied (None: as loaded).
        self.speed_options = None

    # ----------------------------------------------------------------------------------------------
    # construction, devices, saving
    # ----------------------------------------------------------------------------------------------

    @property
    def image_channels(self) -> int:
        """4 for a model that generates RGBA (``info.alpha``), else 3."""
        return 4 if self.info.alpha else 3

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "image_encoder": self.image_encoder}

    @classmethod
    def from_config(cls, config: dict, seed: int = 0) -> MultiViewPipeline:
        """A randomly initialised pipeline from a model config (e.g. `video_prior.components.tiny_config`)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            comps = build_components(config)
        return cls(**comps, info=model_info_from_config(config))

    @classmethod
    def from_pretrained(
        cls, path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> MultiViewPipeline:
        """Load a model folder (diffusers layout + mv3d_model.json) onto `device` in `dtype`."""
        comps, info = load_components(path, device=device, dtype=dtype)
        return cls(**comps, info=info)

    def save_pretrained(self, path) -> Path:
        """Write the model folder atomically (see `video_prior.components.save_components`)."""
        return save_components(self.components, self.info, path)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MultiViewPipeline:
        for module in self.components.values():
            module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        """The device the computation runs on (with offload: where models are moved while used)."""
        if self._offload_device is not None:
            return self._offload_device
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def resolution(self) -> int:
        """The image side in pixels the model was trained at."""
        return int(self.info.resolution)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep the models in CPU memory and move each to `device` only while it runs.

        Peak device memory is then that of the largest model (the UNet) plus activations. On a CPU-only
        machine (``device="cpu"``) it changes nothing.
        """
        self.disable_offload()
        self._offload_device = torch.device(device)
        self._offload_kind = "model"
        for module in self.components.values():
            module.to("cpu")

    def enable_sequential_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep the weights in CPU memory and move each submodule's weights to `device` only while it runs.

        Peak device memory is then the activations plus the largest layer, at the price of moving every
        weight over the bus once per network call (`video_prior.speed.enable_sequential_offload`).
        """
        from video_prior.speed import enable_sequential_offload

        self.disable_offload()
        self._offload_device = torch.device(device)
        self._offload_kind = "sequential"
        for module in self.components.values():
            enable_sequential_offload(module, self._offload_device)

    def disable_offload(self) -> None:
        """Undo `enable_model_cpu_offload` / `enable_sequential_cpu_offload`: every network back on the device."""
        from video_prior.speed import remove_sequential_offload

        device, kind = self._offload_device, self._offload_kind
        self._offload_device, self._offload_kind = None, None
        if kind == "sequential":
            for module in self.components.values():
                remove_sequential_offload(module)
        if device is not None:
            self.to(device)

    def disable_model_cpu_offload(self) -> None:
        self.disable_offload()

    def apply_speed_options(self, options=None, **overrides) -> MultiViewPipeline:
        """Set up attention kernels, memory format, torch.compile and offload (`video_prior.speed.SpeedOptions`).

        ``pipe.apply_speed_options(SpeedOptions(...))`` or ``pipe.apply_speed_options(compile=True)``. The
        numbers computed do not change beyond floating-point reordering; the dtype is chosen at load time.
        """
        from video_prior import speed

        opts = speed.SpeedOptions(**{**(options.to_dict() if options is not None else {}), **overrides})
        # check everything before changing anything
        run_device = torch.device(opts.offload_device) if opts.offload != "none" else self.device
        if opts.compile and opts.offload == "sequential":
            raise InputError(
                "compile with sequential offload: expected one or the other (hooks break graphs)"
            )
        if opts.compile and opts.compile_mode == "reduce-overhead" and run_device.type != "cuda":
            raise InputError(
                f"compile mode 'reduce-overhead' uses CUDA graphs: the model runs on {run_device}, "
                "expected a cuda device"
            )
        if opts.attention == "sdpa":
            for module in self.components.values():
                speed.set_sdpa_attention(module)
        if opts.channels_last:
            speed.to_channels_last(self.unet)
            speed.to_channels_last(self.vae)
        if opts.offload == "model":
            self.enable_model_cpu_offload(opts.offload_device)
        elif opts.offload == "sequential":
            self.enable_sequential_cpu_offload(opts.offload_device)
        if opts.compile:
            # with model offload the UNet waits on the CPU: it compiles at its first call, on the device
            speed.compile_module(self.unet, opts.compile_mode, opts.compile_cache_dir, device=self.device)
        self.speed_options = opts
        return self

    @contextlib.contextmanager
    def _on_device(self, name: str):
        """Yield the model `name`, on the execution device for the duration of the block."""
        module = self.components[name]
        if self._offload_kind != "model":
            yield module
            return
        module.to(self._offload_device)
        try:
            yield module
        finally:
            module.to("cpu")

    # ----------------------------------------------------------------------------------------------
    # inputs
    # ----------------------------------------------------------------------------------------------

    def preprocess_image(self, image: Any, size: int) -> torch.Tensor:
        """An input image as (1, C, size, size) float32 in [-1, 1], RGBA composited on the model background.

        C is `image_channels`: 3, or 4 for an alpha model (the composited RGB, then the alpha matte).
        Accepts (H, W, 4) or (H, W, 3) uint8 arrays (straight alpha), float arrays in [0, 1] of the same
        shapes, PIL images, and (3, H, W) or (1, 3, H, W) tensors in [-1, 1] (opaque). The image must be
        square (framing the object is the caller's job: ``mv3d`` preprocessing does it).
        """
        if isinstance(image, torch.Tensor):
            x = image.detach().to(torch.float32).cpu()
            if x.ndim == 4 and x.shape[0] == 1:
                x = x[0]
            if x.ndim != 3 or x.shape[0] != 3:
                raise InputError(
                    f"input image tensor of shape {tuple(image.shape)}: expected (3, H, W) in [-1, 1]"
                )
            x = x[None]
            if self.info.alpha:  # an RGB tensor is opaque
                x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        else:
            if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
                image = np.asarray(image.convert("RGBA"))
            arr = np.asarray(image)
            if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
                raise InputError(
                    f"input image of shape {arr.shape}: expected (H, W, 4) RGBA or (H, W, 3) RGB"
                )
            if arr.dtype != np.uint8:
                if not np.issubdtype(arr.dtype, np.floating) or arr.min() < 0 or arr.max() > 1:
                    raise InputError(f"input image of dtype {arr.dtype}: expected uint8, or floats in [0, 1]")
                arr = np.round(arr * 255.0).astype(np.uint8)
            if arr.shape[-1] == 3:
                arr = np.concatenate([arr, np.full(arr.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
            rgb = composite(arr, self.info.background)  # (H, W, 3) float32 in [0, 1]
            if self.info.alpha:
                alpha = arr[..., 3:4].astype(np.float32) / 255.0
                rgb = np.concatenate([rgb, alpha], axis=-1)
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None] * 2.0 - 1.0
        h, w = x.shape[-2:]
        if h != w:
            raise InputError(f"input image is {w}x{h}: expected a square image (frame the object first)")
        if h != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1.0, 1.0).contiguous()

    def _camera_inputs(self, orbit: Orbit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Polar and azimuth (radians, relative to the input view) in the model's frame order, and the order.

        Returns (polar (N,), azimuth (N,), order (N,)): model frame j shows orbit frame ``order[j]``.
        """
        if self.info.frame_order == "sv3d":
            sv = to_sv3d(orbit, direction=self.info.sv3d_azimuth_direction)
            return sv.polar_rad, sv.azimuth_rad, sv.order
        azimuth = np.deg2rad((orbit.azimuth_deg - orbit.azimuth_deg[0]) % 360.0)
        return np.deg2rad(orbit.polar_deg), azimuth, np.arange(len(orbit))

    # ----------------------------------------------------------------------------------------------
    # generation
    # ----------------------------------------------------------------------------------------------

    def _sample_branch(
        self,
        image_t: torch.Tensor,
        orbit: Orbit,
        members: int,
        plan: _SamplingPlan,
        on_step: Any,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Steps 2-8 of `__call__` for one input view and orbit: the SUM over `members` draws of the decoded
        frames, (N, C, H, W) in [-1, 1] in the orbit's order. `on_step(j)` after the j-th sampling step of
        this branch (from 1). `latents`: (members, N, C, h, w) unit-variance initial noise in the orbit's
        order (None: drawn from the plan's generator after the conditioning noise)."""
        steps, sample_fn, scales, do_cfg = plan.steps, plan.sample_fn, plan.scales, plan.do_cfg
        cond_aug, generator = plan.cond_aug, plan.generator
        info = self.info
        n = len(orbit)
        size = int(image_t.shape[-1])
        device, dtype = self.device, self.dtype
        # 2. encode the input view: CLIP embedding (clean image) and VAE latent (noise-augmented)
        with self._on_device("image_encoder") as encoder:
            context = clip_embed(encoder, image_t[:, :3].to(device)).to(dtype)  # (1, 1, D), RGB only
        aug = torch.full((1,), float(cond_aug))
        with self._on_device("vae") as vae:
            image_latent = condition_latent(
                vae, image_t.to(device), aug.to(device), generator, mirror=info.mirror_conditioning
            ).to(dtype)

        # 3. camera conditioning, in the model's frame order
        polar, azimuth, order = self._camera_inputs(orbit)
        # kept in float32 whatever the model dtype: angles rounded to bf16 would lose about 0.5 degree
        time_ids = camera_time_ids(
            info, aug, torch.as_tensor(polar, dtype=torch.float32)[None], torch.as_tensor(azimuth)[None]
        ).to(device)

        # CFG as ONE batched forward of [uncond; cond]: the unconditional branch zeroes the CLIP embedding
        # and the image latent, and keeps the vector conditioning (reference SV3D).
        if do_cfg:
            context = torch.cat([torch.zeros_like(context), context])
            image_latent = torch.cat([torch.zeros_like(image_latent), image_latent])
            time_ids = torch.cat([time_ids, time_ids])
        concat = image_latent[:, None].expand(-1, n, -1, -1, -1)  # (B', N, C, h, w), every frame
        scales = scales.to(device)

        # 4. noise levels
        sigmas = karras_sigmas(steps, sigma_max=float(info.sigma_max), device=device)

        # 5. initial noise x = sqrt(1 + sigma_max^2) * n, as the reference's sampler scales it (the
        # marginal std at sigma_max of unit-variance data), drawn on the generator's device after the
        # conditioning noise (diffusers' SVD pipeline's order), or given in the orbit's frame order.
        latent_shape = (
            1,
            n,
            self.vae.config.latent_channels,
            size // self.vae_scale_factor,
            size // self.vae_scale_factor,
        )
        if latents is None:
            noise_device = generator.device if generator is not None else device
            noise = torch.randn(
                (members, *latent_shape), generator=generator, device=noise_device, dtype=torch.float32
            ).to(device)
        else:  # model frame j shows orbit frame order[j]
            noise = latents[:, torch.as_tensor(order)].to(device=device, dtype=torch.float32)[:, None]
        init_scale = (1.0 + sigmas[0].to(torch.float64) ** 2).sqrt().to(torch.float32)

        # 6. sample: one UNet call per denoiser evaluation, both CFG branches in one batch
        with self._on_device("unet") as unet:

            def network_fn(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
                net_in = torch.cat([x_in.to(dtype), concat], dim=2)
                # c_noise stays float32: the UNet's sinusoids are computed in float32
                return unet(net_in, c_noise, context, time_ids).sample.to(x_in.dtype)

            def denoiser(x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
                if not do_cfg:
                    return denoise(network_fn, x_t, sigma, info.prediction)
                both = denoise(network_fn, torch.cat([x_t, x_t]), torch.cat([sigma, sigma]), info.prediction)
                uncond, cond_out = both.chunk(2)
                return apply_cfg(uncond, cond_out, scales)

            samples = []
            for k in range(members):
                x = noise[k] * init_scale

                def report(state: dict, base: int = k * steps) -> None:
                    on_step(base + int(state["i"]) + 1)

                samples.append(sample_fn(denoiser, x, sigmas.to(torch.float32), None, report))

        # 7. decode, a chunk of frames at a time; an ensemble is averaged in image space
        frames = None
        for latents in samples:
            if info.residual:
                # the model diffused (frame latent - input latent): add the input view's scaled latent back
                own = image_latent[-1:].to(latents.dtype)
                latents = latents + residual_offset(own, latents.shape[2], self.vae.config.scaling_factor)
            with self._on_device("vae") as vae:
                decoded = decode_latents(vae, latents.to(dtype), chunk_size=plan.decode_chunk_size)[0].float()
            frames = decoded if frames is None else frames + decoded  # (N, C, H, W)
        # 8. back to the orbit's order
        return from_sv3d_order(frames, order) if info.frame_order == "sv3d" else frames

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        orbit: Orbit,
        num_inference_steps: int | None = None,
        sampler: str = "euler",
        guidance: str = "triangle",
        min_guidance: float = 1.0,
        max_guidance: float = 2.5,
        cond_aug: float | None = None,
        generator: torch.Generator | None = None,
        ensemble: int | None = None,
        mirror_average: bool | None = None,
        decode_chunk_size: int = 8,
        callback=None,
        output_type: str = "np",
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
        latents: torch.Tensor | None = None,
    ) -> MultiViewPipelineOutput:
        """Generate one view per camera of `orbit`, frame 0 being the input view.

        Args:
            image: the input view: (H, W, 4) uint8 RGBA (composited on the model's background, white),
                (H, W, 3) uint8, a PIL image, or a (3, H, W) tensor in [-1, 1]. Square.
            orbit: the cameras (``render.cameras.Orbit``); frame 0 is the input view's camera.
            num_inference_steps: sampling steps (None: the model's default, 50 for SV3D).
            sampler: a name in ``video_prior.samplers.SAMPLERS`` ("euler", "heun", "dpmpp2m").
            guidance: per-frame CFG schedule, "constant", "linear" or "triangle" (SV3D), over the frames in
                the model's order.
            min_guidance, max_guidance: the schedule's range; 1.0 everywhere disables CFG (one branch).
            cond_aug: noise level added to the conditioning image before VAE encoding, also given to the
                network (None: the model's default, 1e-5 for SV3D as its reference sampling script, 0.02
                for SVD).
            generator: seeds the conditioning noise and the initial noise; same seed, same device, same
                output.
            ensemble: K, the number of samples drawn from independent initial noise and averaged (after
                decoding) into the output (None: the model's ``default_ensemble``). K = 1 is plain sampling;
                for a model sampled in one step from pure noise (a posterior-mean estimate) the average
                removes what the estimate still owes to its noise draw (test-time ensembling, as Marigold
                does for depth).
            mirror_average: draw half of the ensemble (the smaller half, none when K = 1) for the input
                mirrored left-right and the orbit mirrored about the input's azimuth (+phi -> -phi), and
                flip those frames back before averaging: test-time augmentation by the task's reflection
                symmetry, at no extra cost (None: the model's ``default_mirror_average``).
            decode_chunk_size: frames decoded per VAE call (memory bound).
            callback: ``callback(step, num_steps)`` after each sampling step (step counts from 1).
            output_type: "np" (float32 [0, 1]), "uint8", or "pt" ((N, 3, H, W) tensor in [0, 1]).
            height, width: output size (None: the model's resolution; must be equal, multiples of the
                latent grid).
            progress: show a tqdm bar over the sampling steps.
            latents: the initial noise, (K, N, C, h, w) with K the ensemble size, N the orbit's views IN
                THE ORBIT'S ORDER (frame 0 = the input view, whatever order the model samples in), C the
                VAE's latent channels and h = w = size / `vae_scale_factor`; unit variance. The pipeline
                multiplies it by sqrt(1 + sigma_max^2), as the reference's sampler does. With mirror
                averaging the first K - K // 2 members go to the input, the rest to the mirrored input.
                `generator` then draws only the conditioning image's noise (its first draw, as in
                diffusers' SVD pipeline); None: drawn from `generator` after that.

        Returns:
            `MultiViewPipelineOutput`.
        """
        info = self.info
        # 1. check inputs
        if not isinstance(orbit, Orbit):
            raise InputError(f"orbit of type {type(orbit).__name__}: expected a render.cameras.Orbit")
        n = len(orbit)
        if info.num_frames is not None and n != info.num_frames:
            raise InputError(f"orbit has {n} views but this model generates exactly {info.num_frames}")
        steps = info.default_steps if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:
            raise InputError(f"number of sampling steps {steps}: expected at least 1")
        members = info.default_ensemble if ensemble is None else int(ensemble)
        if members < 1:
            raise InputError(f"ensemble size {members}: expected at least 1 sample")
        mirror = bool(info.default_mirror_average if mirror_average is None else mirror_average)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output type '{output_type}': expected one of {', '.join(OUTPUT_TYPES)}")
        if height is not None and width is not None and height != width:
            raise InputError(f"output size {width}x{height}: expected a square size")
        size = int(height or width or self.resolution)
        grid = self.vae_scale_factor * 2 ** int(self.unet.num_upsamplers)
        if size % grid:
            raise InputError(
                f"output size {size}: expected a multiple of {grid} (the latent grid of this model)"
            )
        cond_aug = info.default_cond_aug if cond_aug is None else float(cond_aug)
        if cond_aug < 0:
            raise InputError(f"cond_aug {cond_aug}: expected a noise level >= 0")
        sample_fn = get_sampler(sampler)
        scales = guidance_scales(guidance, n, min_guidance, max_guidance)
        # A model trained without conditioning dropout has no unconditional branch: guidance is off for it.
        do_cfg = bool(info.cfg) and bool(torch.any(scales != 1.0))
        image_t = self.preprocess_image(image, size)
        if latents is not None:
            f = self.vae_scale_factor
            expected = (members, n, int(self.vae.config.latent_channels), size // f, size // f)
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise InputError(
                    f"latents of shape {got}: expected {expected} (ensemble, views, channels, h, w)"
                )

        # Mirror averaging: the task is symmetric under the reflection that flips the input view
        # left-right and takes the camera at azimuth +phi (relative to the input) to -phi, so part of the
        # ensemble is drawn for the mirrored input and mirrored orbit and flipped back before averaging.
        branches = [(image_t, orbit, members - members // 2 if mirror else members, False)]
        if mirror and members // 2:
            branches.append((image_t.flip(-1), mirror_orbit(orbit), members // 2, True))
        plan = _SamplingPlan(steps, sample_fn, scales, do_cfg, cond_aug, generator, decode_chunk_size)
        total = steps * members
        bar = tqdm(total=total, desc="sampling", unit="step", disable=not progress, leave=False)
        frames, offset, first = None, 0, 0
        try:
            for branch_image, branch_orbit, branch_members, flipped in branches:
                branch_latents = None if latents is None else latents[first : first + branch_members]
                first += branch_members

                def on_step(j: int, offset: int = offset) -> None:
                    bar.update(1)
                    if callback is not None:
                        callback(offset + j, total)

                decoded_sum = self._sample_branch(
                    branch_image, branch_orbit, branch_members, plan, on_step, branch_latents
                )
                offset += branch_members * steps
                # the mirrored branch's frames flipped back
                decoded_sum = decoded_sum.flip(-1) if flipped else decoded_sum
                frames = decoded_sum if frames is None else frames + decoded_sum
        finally:
            bar.close()
        frames = frames / members
        frames = ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0).cpu()
        if info.alpha and float(info.alpha_threshold) != 0.5:
            frames[:, 3] = calibrate_alpha(frames[:, 3], float(info.alpha_threshold))
        # optionally show the input itself as the input view
        if info.overwrite_input_frame:
            frames[0] = ((image_t[0].float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        if output_type == "pt":
            result: np.ndarray | torch.Tensor = frames
        else:
            result = frames.permute(0, 2, 3, 1).numpy()
            if output_type == "uint8":
                result = np.round(result * 255.0).astype(np.uint8)
        return MultiViewPipelineOutput(frames=result, orbit=orbit, camera_to_world=orbit.camera_to_world())
