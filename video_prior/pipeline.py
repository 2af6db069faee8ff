"""The image -> orbit-of-views pipeline, in the style of diffusers' StableVideoDiffusionPipeline.

    pipe = MultiViewPipeline.from_pretrained("models/sv3d_p", device="cuda", dtype=torch.float16)
    out = pipe(rgba, static_orbit(21), generator=torch.Generator("cuda").manual_seed(0))
    out.frames           # (21, 576, 576, 3) float in [0, 1] on the model's background; frame 0: input
    out.rgba             # (21, 576, 576, 4) uint8 straight-alpha views (the matte: video_prior.matte)
    out.camera_to_world  # (21, 4, 4) OpenGL camera-to-world of each frame

`__call__` runs numbered steps, each a method: check inputs, encode image (CLIP), encode VAE image, time
ids, prepare latents, denoise, decode, postprocess. What the model's info means (conditioning, frame
order, prediction, residual, guidance, matte calibration, defaults) is the denoiser's
(`video_prior.denoiser.MultiViewDenoiser`, also what training calls); the samplers are
`video_prior.samplers`. The pipeline knows nothing of files other than the model folder, nor of the CLI.
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

from render.cameras import Orbit
from render.common import MAX_ENSEMBLE, MAX_IMAGE_SIDE, InputError, check_range
from render.dataset import composite
from video_prior.components import (
    ModelInfo,
    build_components,
    load_components,
    model_info_from_config,
    save_components,
)
from video_prior.conditioning import decode_latents
from video_prior.denoiser import Conditioning, MultiViewDenoiser, calibrate_alpha
from video_prior.edm import karras_sigmas
from video_prior.matte import matte_views
from video_prior.samplers import get_sampler

__all__ = ["MultiViewPipeline", "MultiViewPipelineOutput", "OUTPUT_TYPES", "calibrate_alpha", "mirror_orbit"]

OUTPUT_TYPES = ("np", "uint8", "pt")


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


@dataclass
class MultiViewPipelineOutput:
    """Output of `MultiViewPipeline`.

    Attributes:
        frames: (N, H, W, C) float32 in [0, 1] ("np"), uint8 ("uint8"), or a (N, C, H, W) tensor in
            [0, 1] ("pt"; float32, float64 for a float64 model); in the orbit's order (frame 0 = the
            input view). C = 3 (RGB on the model's background), or 4 for an alpha model (that RGB, then
            its alpha).
        orbit: the orbit the frames were generated for.
        camera_to_world: (N, 4, 4) OpenGL camera-to-world matrices of the frames.
        rgba: (N, H, W, 4) uint8 straight-alpha views: the alpha model's own matte, else one cut from the
            background (`video_prior.matte.matte_views`); frame 0 is the input as given when the input
            view is kept. These are the views `mv3d generate` writes.
    """

    frames: np.ndarray | torch.Tensor
    orbit: Orbit
    camera_to_world: np.ndarray
    rgba: np.ndarray | None = None


class MultiViewPipeline:
    """One image and an orbit of cameras in, one generated view per camera out.

    Args:
        unet: a `MultiViewUNet`.
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder``.
        image_encoder: ``CLIPVisionModelWithProjection``.
        info: the `ModelInfo` (conditioning kind, frame order, resolution, ...); its meaning is the
            `denoiser`'s (`video_prior.denoiser.MultiViewDenoiser`).
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
                f"model first stage encodes {channels} image channels but the model info says "
                f"alpha={self.denoiser.alpha}: expected {self.image_channels}"
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
    def denoiser(self) -> MultiViewDenoiser:
        """The model's denoiser: its conditioning, frame order, parameterisation, guidance and defaults."""
        return MultiViewDenoiser(self.unet, self.vae, self.image_encoder, self.info)

    @property
    def image_channels(self) -> int:
        """4 for a model that generates RGBA, else 3."""
        return self.denoiser.image_channels

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

    def save_pretrained(self, path, overwrite: bool = False) -> Path:
        """Write the model folder atomically (see `video_prior.components.save_components`).

        An existing folder is replaced whole, so it must be empty or a model folder (mv3d_model.json)
        unless `overwrite`; any other folder is refused with an `InputError` and left untouched.
        """
        return save_components(self.components, self.info, path, overwrite=overwrite)

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
    def compute_dtype(self) -> torch.dtype:
        """The dtype of everything around the networks (noise, sigmas, sampler steps, guidance, decoded
        frames): the model's dtype, but at least float32 (a float16 or bfloat16 model samples in float32;
        a float64 one in float64, which `tools.check_reference --end-to-end --float64` relies on)."""
        return torch.promote_types(self.dtype, torch.float32)

    @property
    def resolution(self) -> int:
        """The image side in pixels the model was trained at."""
        return self.denoiser.resolution

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

    @staticmethod
    def _input_rgba(image: Any) -> np.ndarray | None:
        """An array or PIL input as (H, W, 4) uint8 straight RGBA (opaque if RGB); None for a tensor."""
        if isinstance(image, torch.Tensor):
            return None
        if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
            image = np.asarray(image.convert("RGBA"))
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise InputError(f"input image of shape {arr.shape}: expected (H, W, 4) RGBA or (H, W, 3) RGB")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating) or arr.min() < 0 or arr.max() > 1:
                raise InputError(f"input image of dtype {arr.dtype}: expected uint8, or floats in [0, 1]")
            arr = np.round(arr * 255.0).astype(np.uint8)
        if arr.shape[-1] == 3:
            arr = np.concatenate([arr, np.full(arr.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
        return arr

    def preprocess_image(self, image: Any, size: int) -> torch.Tensor:
        """An input image as (1, C, size, size) float32 in [-1, 1], RGBA composited on the model background.

        C is `image_channels`: 3, or 4 for an alpha model (the composited RGB, then the alpha matte).
        Accepts (H, W, 4) or (H, W, 3) uint8 arrays (straight alpha), float arrays in [0, 1] of the same
        shapes, PIL images, and (C, H, W) or (1, C, H, W) tensors in [-1, 1] already composited, with C = 3
        (opaque) or `image_channels`. The image must be square (framing the object is the caller's job:
        ``mv3d`` preprocessing does it).
        """
        alpha = self.denoiser.alpha
        if isinstance(image, torch.Tensor):
            x = image.detach().to(torch.float32).cpu()
            if x.ndim == 4 and x.shape[0] == 1:
                x = x[0]
            if x.ndim != 3 or x.shape[0] not in (3, self.image_channels):
                raise InputError(
                    f"input image tensor of shape {tuple(image.shape)}: expected "
                    f"({self.image_channels}, H, W) or (3, H, W) in [-1, 1]"
                )
            x = x[None]
            if alpha and x.shape[1] == 3:  # an RGB tensor is opaque
                x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        else:
            arr = self._input_rgba(image)
            rgb = composite(arr, self.denoiser.background)  # (H, W, 3) float32 in [0, 1]
            if alpha:
                rgb = np.concatenate([rgb, arr[..., 3:4].astype(np.float32) / 255.0], axis=-1)
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None] * 2.0 - 1.0
        h, w = x.shape[-2:]
        if h != w:
            raise InputError(f"input image is {w}x{h}: expected a square image (frame the object first)")
        if h != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x.clamp(-1.0, 1.0).contiguous()

    def check_inputs(
        self,
        orbit: Orbit,
        num_inference_steps: int | None,
        ensemble: int | None,
        mirror_average: bool | None,
        cond_aug: float | None,
        output_type: str,
        height: int | None,
        width: int | None,
    ) -> dict[str, Any]:
        """Step 1 of `__call__`: check the arguments and fill in the model's defaults.

        Returns {"steps", "members", "mirror", "cond_aug", "size"}.
        """
        defaults = self.denoiser.defaults()
        if not isinstance(orbit, Orbit):
            raise InputError(f"orbit of type {type(orbit).__name__}: expected a render.cameras.Orbit")
        n, fixed = len(orbit), self.denoiser.num_frames
        if fixed is not None and n != fixed:
            raise InputError(f"orbit has {n} views but this model generates exactly {fixed}")
        steps = defaults["steps"] if num_inference_steps is None else int(num_inference_steps)
        if steps < 1:
            raise InputError(f"number of sampling steps {steps}: expected at least 1")
        members = defaults["ensemble"] if ensemble is None else int(ensemble)
        check_range("ensemble", members, 1, MAX_ENSEMBLE, "a number of samples")
        mirror = bool(defaults["mirror_average"] if mirror_average is None else mirror_average)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output type '{output_type}': expected one of {', '.join(OUTPUT_TYPES)}")
        if height is not None and width is not None and height != width:
            raise InputError(f"output size {width}x{height}: expected a square size")
        size = check_range(
            "resolution", int(height or width or self.resolution), 16, MAX_IMAGE_SIDE, "pixels"
        )
        grid = self.vae_scale_factor * 2 ** int(self.unet.num_upsamplers)
        if size % grid:
            raise InputError(
                f"output size {size}: expected a multiple of {grid} (the latent grid of this model)"
            )
        cond_aug = defaults["cond_aug"] if cond_aug is None else float(cond_aug)
        if cond_aug < 0:
            raise InputError(f"cond_aug {cond_aug}: expected a noise level >= 0")
        return {"steps": steps, "members": members, "mirror": mirror, "cond_aug": cond_aug, "size": size}

    # ----------------------------------------------------------------------------------------------
    # the steps of one generation
    # ----------------------------------------------------------------------------------------------

    def encode_image(self, image_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 2: the image embeddings of the clean input view in the model's dtype, by `Conditioning`
        field (the CLIP embedding "context", (1, 1, D); `MultiViewDenoiser.encode_image`)."""
        with self._on_device("image_encoder"):
            embeds = self.denoiser.encode_image(image_t.to(self.device))
        return {k: v.to(self.dtype) for k, v in embeds.items()}

    def encode_vae_image(
        self, image_t: torch.Tensor, cond_aug: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Step 3: the VAE latent of the input view noised by `cond_aug` (drawn from `generator`)."""
        aug = torch.full((1,), float(cond_aug), dtype=self.compute_dtype)
        with self._on_device("vae"):
            latent = self.denoiser.encode_vae_image(image_t.to(self.device), aug.to(self.device), generator)
        return latent.to(self.dtype)

    def get_time_ids(self, orbit: Orbit, cond_aug: float) -> tuple[torch.Tensor, np.ndarray]:
        """Step 4: the added time ids (cond_aug and cameras) in the model's frame order, and that order
        (model frame j shows orbit frame ``order[j]``)."""
        polar, azimuth, order = self.denoiser.cameras(orbit)
        aug = torch.full((1,), float(cond_aug))
        # kept in float32 whatever the model dtype: angles rounded to bf16 would lose about 0.5 degree
        time_ids = self.denoiser.time_ids(
            aug, torch.as_tensor(polar, dtype=torch.float32)[None], torch.as_tensor(azimuth)[None]
        )
        return time_ids.to(self.device), order

    def prepare_latents(
        self,
        members: int,
        num_frames: int,
        size: int,
        generator: torch.Generator | None,
        latents: torch.Tensor | None = None,
        order: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Step 5: unit-variance initial noise (members, 1, F, C, h, w) in the model's frame order, in
        `compute_dtype`.

        Drawn in float32 on the generator's device (the same draws whatever the model's dtype), or the
        caller's `latents` ((members, F, C, h, w), unit variance, in the orbit's order) reordered to the
        model's frame order with `order` (`get_time_ids`). The sampler starts from it times
        sqrt(1 + sigma_max^2) (`denoise`)."""
        if latents is not None:
            index = torch.as_tensor(np.asarray(order), device=latents.device)
            return latents.index_select(1, index).to(device=self.device, dtype=self.compute_dtype)[:, None]
        shape = (
            1,
            num_frames,
            self.vae.config.latent_channels,
            size // self.vae_scale_factor,
            size // self.vae_scale_factor,
        )
        noise_device = generator.device if generator is not None else self.device
        noise = torch.randn((members, *shape), generator=generator, device=noise_device, dtype=torch.float32)
        return noise.to(device=self.device, dtype=self.compute_dtype)

    def denoise(
        self,
        noise: torch.Tensor,
        cond: Conditioning,
        scales: torch.Tensor | None,
        steps: int,
        sampler: str,
        on_step: Any,
    ) -> list[torch.Tensor]:
        """Step 6: sample each member of `noise` (`prepare_latents`) from the model's sigma_max to 0.

        The start is noise x sqrt(1 + sigma_max^2), as Stability's reference sampler scales its initial
        noise (diffusers' SVD pipeline uses sigma_max; the two differ by 0.1% at sigma_max 20 and by
        1e-6 at 700).

        One network call per denoiser evaluation, both CFG branches in one batch when `scales` is given.
        `on_step(j)` after the j-th step of this call (from 1). Returns one (1, F, C, h, w)
        latent per member (residual ones for a residual model), in `compute_dtype`."""
        denoiser, dtype = self.denoiser, self.dtype
        sample_fn = get_sampler(sampler)
        sigmas = karras_sigmas(steps, sigma_max=denoiser.sigma_max, device=self.device).to(self.compute_dtype)
        init_scale = float(np.sqrt(1.0 + float(sigmas[0].double()) ** 2))
        both = cond.unconditional().cat(cond) if scales is not None else cond
        samples = []
        with self._on_device("unet"):

            def model(x_t: torch.Tensor, sigma: torch.Tensor, _cond: Any) -> torch.Tensor:
                return denoiser.denoise(x_t, sigma, both, scales, dtype=dtype)

            for k in range(noise.shape[0]):

                def report(state: dict, base: int = k * steps) -> None:
                    on_step(base + int(state["i"]) + 1)

                samples.append(sample_fn(model, noise[k] * init_scale, sigmas, None, report))
        return samples

    def decode(
        self, latents: list[torch.Tensor], cond: Conditioning, order: np.ndarray, chunk_size: int
    ) -> torch.Tensor:
        """Step 7: decode each member's latents, a chunk of frames at a time, and SUM them (an ensemble is
        averaged in image space); (F, C, H, W) in [-1, 1] scale, in the orbit's order, in `compute_dtype`."""
        frames = None
        for sample in latents:
            sample = self.denoiser.from_residual(sample, cond.image_latent)
            with self._on_device("vae") as vae:
                decoded = decode_latents(vae, sample.to(self.dtype), chunk_size=chunk_size)[0]
            frames = decoded if frames is None else frames + decoded  # (F, C, H, W)
        return self.denoiser.from_model_order(frames, order)

    def postprocess(
        self,
        frames: torch.Tensor,
        image: Any,
        image_t: torch.Tensor,
        keep_input_view: bool,
        output_type: str,
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray]:
        """Step 8: (N, C, H, W) averaged frames in [-1, 1] -> (frames as `output_type`, RGBA views).

        The matte is calibrated (`MultiViewDenoiser.calibrate_matte`); with `keep_input_view` frame 0 is
        the input itself; RGBA views are (N, H, W, 4) uint8 straight alpha (`video_prior.matte.matte_views`).
        """
        frames = ((frames.to(self.compute_dtype) + 1.0) / 2.0).clamp(0.0, 1.0).cpu()
        frames = self.denoiser.calibrate_matte(frames)
        if keep_input_view:
            frames[0] = ((image_t[0].to(frames.dtype).cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        array = frames.float().permute(0, 2, 3, 1).numpy()
        rgba = matte_views(array, self.denoiser.background)
        given = self._input_rgba(image) if keep_input_view else None
        if given is not None and given.shape == rgba.shape[1:]:
            rgba[0] = given  # the input as given, not its round trip through compositing
        if output_type == "pt":
            return frames, rgba
        if output_type == "uint8":
            return np.round(array * 255.0).astype(np.uint8), rgba
        return array, rgba

    # ----------------------------------------------------------------------------------------------
    # generation
    # ----------------------------------------------------------------------------------------------

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
        keep_input_view: bool | None = None,
        latents: torch.Tensor | None = None,
    ) -> MultiViewPipelineOutput:
        """Generate one view per camera of `orbit`, frame 0 being the input view.

        Args:
            image: the input view: (H, W, 4) uint8 RGBA (composited on the model's background, white),
                (H, W, 3) uint8, a PIL image, or a (C, H, W) tensor in [-1, 1]. Square.
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
                decoding) into the output (None: the model's default). K = 1 is plain sampling; for a model
                sampled in one step from pure noise (a posterior-mean estimate) the average removes what
                the estimate still owes to its noise draw (test-time ensembling, as Marigold does for depth).
            mirror_average: draw half of the ensemble (the smaller half, none when K = 1) for the input
                mirrored left-right and the orbit mirrored about the input's azimuth (+phi -> -phi), and
                flip those frames back before averaging: test-time augmentation by the task's reflection
                symmetry, at no extra cost (None: the model's default).
            decode_chunk_size: frames decoded per VAE call (memory bound).
            callback: ``callback(step, num_steps)`` after each sampling step (step counts from 1).
            output_type: "np" (float32 [0, 1]), "uint8", or "pt" ((N, C, H, W) tensor in [0, 1]).
            height, width: output size (None: the model's resolution; must be equal, multiples of the
                latent grid).
            progress: show a tqdm bar over the sampling steps.
            keep_input_view: frame 0 is the input image itself (None: the model's default, True for SV3D).
            latents: the initial noise, unit variance, (K, N, C, h, w) in the orbit's frame order (K the
                ensemble, N the orbit's views, h = w = size / the VAE's scale); the pipeline reorders it to
                the model's frame order and scales it by sqrt(1 + sigma_max^2). With mirror averaging the
                input branch takes the first members. None: drawn from `generator` (after the conditioning
                image's noise, which is its first draw, as in diffusers' SVD pipeline).

        Returns:
            `MultiViewPipelineOutput`.
        """
        # 1. check inputs; the model's defaults for what the caller left out
        opts = self.check_inputs(
            orbit, num_inference_steps, ensemble, mirror_average, cond_aug, output_type, height, width
        )
        steps, members, size = opts["steps"], opts["members"], opts["size"]
        get_sampler(sampler)
        scales = self.denoiser.guidance_scales(
            guidance, len(orbit), min_guidance, max_guidance, dtype=self.compute_dtype
        )
        image_t = self.preprocess_image(image, size)
        if latents is not None:
            h = size // self.vae_scale_factor
            want = (members, len(orbit), self.vae.config.latent_channels, h, h)
            if tuple(latents.shape) != want:
                raise InputError(f"latents of shape {tuple(latents.shape)}: expected {want}", field="latents")

        # Mirror averaging: the task is symmetric under the reflection that flips the input view
        # left-right and takes the camera at azimuth +phi (relative to the input) to -phi, so part of the
        # ensemble is drawn for the mirrored input and mirrored orbit and flipped back before averaging.
        branches = [(image_t, orbit, members - members // 2 if opts["mirror"] else members, False)]
        if opts["mirror"] and members // 2:
            branches.append((image_t.flip(-1), mirror_orbit(orbit), members // 2, True))
        total = steps * members
        # The bar counts what it names: draws (averaged into the views) when each is one step, else
        # steps over all draws.
        if steps == 1:
            desc, unit = f"sampling {members} draw{'s' if members > 1 else ''} of 1 step", "draw"
        else:
            desc, unit = f"sampling {members} draw{'s' if members > 1 else ''} x {steps} steps", "step"
        bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False)
        frames, offset, first = None, 0, 0
        try:
            for branch_image, branch_orbit, branch_members, flipped in branches:

                def on_step(j: int, offset: int = offset) -> None:
                    bar.update(1)
                    if callback is not None:
                        callback(offset + j, total)

                # 2.-4. the conditioning: CLIP embedding, noise-augmented image latent, time ids
                embeds = self.encode_image(branch_image)
                image_latent = self.encode_vae_image(branch_image, opts["cond_aug"], generator)
                time_ids, order = self.get_time_ids(branch_orbit, opts["cond_aug"])
                cond = Conditioning(**embeds, image_latent=image_latent, time_ids=time_ids)
                # 5. initial noise
                given = None if latents is None else latents[first : first + branch_members]
                noise = self.prepare_latents(branch_members, len(orbit), size, generator, given, order)
                first += branch_members
                # 6. sampling
                sampled = self.denoise(noise, cond, scales, steps, sampler, on_step)
                # 7. decoding, summed over the branch's members, back in the orbit's order
                decoded = self.decode(sampled, cond, order, decode_chunk_size)
                offset += branch_members * steps
                decoded = decoded.flip(-1) if flipped else decoded  # the mirrored branch flipped back
                frames = decoded if frames is None else frames + decoded
        finally:
            bar.close()
        # 8. the ensemble's average, the matte, the input view, RGBA views
        keep = self.denoiser.keep_input_view if keep_input_view is None else bool(keep_input_view)
        result, rgba = self.postprocess(frames / members, image, image_t, keep, output_type)
        return MultiViewPipelineOutput(
            frames=result, orbit=orbit, camera_to_world=orbit.camera_to_world(), rgba=rgba
        )
