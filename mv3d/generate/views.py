"""`ViewGenerator`: a loaded multi-view model that maps one framed RGBA image and an orbit to N RGBA views.

It is the reusable part of `mv3d generate` (also used by `mv3d eval`): the model folder, device, dtype
and speed options, and the `GenerateSettings` it samples with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mv3d.generate.settings import (
    DEFAULT_GUIDANCE,
    DEFAULT_MAX_GUIDANCE,
    DEFAULT_MIN_GUIDANCE,
    GenerateSettings,
    SettingError,
)
from mv3d.models import model_hash, resolve_model
from mv3d.preprocess import frame_object, to_uint8
from render.cameras import Orbit
from render.common import InputError, resolve_device

__all__ = ["DTYPES", "ViewGenerator", "check_settings", "model_limits", "resize_rgba", "resolve_device"]

#: dtype names (torch dtypes)
DTYPES = ("float32", "bfloat16", "float16")
#: The guidance settings and their defaults: a model without guidance warns about any other value.
GUIDANCE_DEFAULTS = {
    "guidance": DEFAULT_GUIDANCE,
    "min_guidance": DEFAULT_MIN_GUIDANCE,
    "max_guidance": DEFAULT_MAX_GUIDANCE,
}


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """A square (H, W, 4) uint8 RGBA (or RGB) image -> (size, size, 4), Lanczos on premultiplied alpha."""
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4) or rgba.dtype != np.uint8:
        raise InputError(
            f"input image of shape {rgba.shape} and dtype {rgba.dtype}: expected (H, W, 4) uint8 RGBA"
        )
    if rgba.shape[2] == 3:
        rgba = np.concatenate([rgba, np.full(rgba.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    h, w = rgba.shape[:2]
    if h != w:
        raise InputError(f"input image is {w}x{h}: expected a square, framed image (see mv3d.preprocess)")
    if h == size:
        return rgba
    # The whole square as the "object box" with no margin: a pure resize.
    return to_uint8(frame_object(rgba.astype(np.float32) / 255.0, size, 0.0, (0, 0, w, h)))


def _or(given: bool | None, default: bool) -> bool:
    """A yes/no setting in effect: the caller's, else the model's default."""
    return bool(default if given is None else given)


def _torch_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from None (float16 on CUDA, float32 on the CPU), a torch dtype or a name in DTYPES."""
    import torch

    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise SettingError("dtype", dtype, f"expected one of {', '.join(DTYPES)}")
        return getattr(torch, dtype)
    return dtype


def _load_pipeline(path: Path, device: str, dtype: Any) -> Any:
    """`MultiViewPipeline.from_pretrained`, with a broken model folder turned into one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from video_prior.pipeline import MultiViewPipeline

    # The libraries' own "Loading weights" bars would interleave with mv3d's per-stage bars and error
    # line; silence them for the load only.
    was = (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        return MultiViewPipeline.from_pretrained(path, device=device, dtype=dtype)
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise SettingError("model", path, str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError("model", path, f"cannot load the model ({first})") from exc
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            diffusers_logging.enable_progress_bar()


def model_limits(model: str | Path = "default") -> tuple[Path, Any]:
    """(folder, `video_prior.limits.ModelLimits`) of the model `model` names, without loading weights."""
    from video_prior.components import read_model_limits

    path = resolve_model(model)
    try:
        return path, read_model_limits(path)
    except InputError as exc:
        raise SettingError("model", model, str(exc)) from exc


def check_settings(
    limits: Any, settings: GenerateSettings, orbit: Orbit, model: str = "default"
) -> list[str]:
    """Check `settings` and `orbit` against what the model supports (`ModelLimits`), before it loads.

    Raises `SettingError` for what the model cannot do: another view count than its fixed one, a view
    size off its latent grid, or another size for a model that works at one size only. Returns one
    warning (``field value: ...``, a field name first) per value outside what it was trained on: another
    step count than the one it was trained for, an input elevation outside its training range, another
    view size than its training size, a guidance setting other than the default for a model without
    guidance (no unconditional branch: the setting changes nothing).
    """
    warnings: list[str] = []
    name = "the default model" if str(model) == "default" else f"model {model}"
    if limits.num_frames is not None and len(orbit) != limits.num_frames:
        raise SettingError(
            "views",
            len(orbit),
            f"{name} generates exactly {limits.num_frames} views (its view count is fixed)",
        )
    size = settings.resolution
    if size is not None and size != limits.resolution:
        if limits.fixed_resolution:
            raise SettingError(
                "resolution",
                size,
                f"{name} works at {limits.resolution} px only (no upsampling is done): omit the option",
            )
        if size % limits.grid:
            raise SettingError("resolution", size, f"expected a multiple of {limits.grid} for {name}")
        warnings.append(
            f"resolution {size}: {name} was trained at {limits.resolution} px; views at another size are "
            "sampled outside its training (no upsampling is done)"
        )
    steps = settings.steps
    if steps is not None and limits.trained_steps is not None and steps != limits.trained_steps:
        warnings.append(
            f"steps {steps}: {name} was trained for {limits.trained_steps}-step sampling (at that step's "
            "noise level only); other step counts give broken views"
        )
    if not limits.guided:
        given = [f for f, v in GUIDANCE_DEFAULTS.items() if getattr(settings, f) != v]
        if given:
            warnings.append(
                f"{given[0]} {getattr(settings, given[0])}: {name} has no classifier-free guidance (it was "
                "trained without an unconditional branch): the guidance settings change nothing"
            )
    low_high = limits.trained_elevation_deg
    elevation = float(orbit.elevation_deg[0])
    if low_high is not None and not low_high[0] <= elevation <= low_high[1]:
        warnings.append(
            f"elevation {elevation:g}: {name} was trained on input views at elevations {low_high[0]:g} to "
            f"{low_high[1]:g} degrees; it generates views from outside that range as from inside it"
        )
    return warnings


class ViewGenerator:
    """A loaded multi-view model: framed RGBA image + orbit -> N RGBA views.

    Attributes:
        pipeline: the `video_prior.pipeline.MultiViewPipeline`.
        config: the `GenerateSettings` it samples with (its orbit fields are the caller's business).
        model: what was asked for ("default" or a path); model_path: the folder loaded.
        model_hash: short sha256 of the weights and configs (`mv3d.models.model_hash`).
        device: where the model runs ("cpu", "cuda").
        keep_input_view: frame 0 is the input image itself (with its own alpha), as in SV3D's reference;
            False leaves it to the model.
    """

    def __init__(
        self,
        pipeline: Any,
        config: GenerateSettings | None = None,
        model: str = "custom",
        model_path: Path | None = None,
        model_hash: str = "",
        device: str = "cpu",
        keep_input_view: bool = True,
    ):
        self.pipeline = pipeline
        self.config = config if config is not None else GenerateSettings()
        self.model = model
        self.model_path = model_path
        self.model_hash = model_hash
        self.device = device
        self.keep_input_view = keep_input_view

    @classmethod
    def load(
        cls,
        model: str | Path = "default",
        device: str = "auto",
        config: GenerateSettings | None = None,
        dtype: Any = None,
        keep_input_view: bool = True,
        speed: Any = None,
        **settings: Any,
    ) -> ViewGenerator:
        """Resolve `model` ("default" or a folder), load the pipeline on `device` and check `config`.

        `settings` are `GenerateSettings` fields that replace `config`'s (e.g. ``steps=10``; None keeps
        the default). `dtype` (a torch dtype or "float32"/"bfloat16"/"float16") defaults to float16 on CUDA
        and float32 on the CPU. `speed` is a `video_prior.speed.SpeedOptions` (or a dict of its fields:
        attention, channels_last, compile, offload, ...), applied after loading.
        """
        config = (config if config is not None else GenerateSettings()).updated(**settings)
        path = resolve_model(model)
        dev = resolve_device(device)
        dtype = _torch_dtype(dtype, dev)
        if isinstance(speed, dict):
            from video_prior.speed import SpeedOptions

            speed = SpeedOptions(**{"offload_device": dev, **speed})
        pipeline = _load_pipeline(path, dev, dtype)
        if speed is not None:
            pipeline.apply_speed_options(speed)
        if config.resolution is not None:
            grid = pipeline.vae_scale_factor * 2 ** int(pipeline.unet.num_upsamplers)
            if config.resolution % grid:
                raise SettingError(
                    "resolution", config.resolution, f"expected a multiple of {grid} for this model"
                )
        return cls(pipeline, config, str(model), path, model_hash(path), dev, keep_input_view)

    @staticmethod
    def planned_settings(
        model: str | Path = "default",
        device: str = "auto",
        config: GenerateSettings | None = None,
        dtype: Any = None,
        keep_input_view: bool = True,
    ) -> dict[str, Any]:
        """What `settings()` of the generator `load` with these arguments returns, without loading it
        (the model's defaults come from its `ModelLimits`): a rerun decides from it whether there is
        anything to do before the slow load."""
        config = config if config is not None else GenerateSettings()
        path, limits = model_limits(model)
        dev = resolve_device(device)
        return {
            "model": str(model),
            "model_path": str(path),
            "model_hash": model_hash(path),
            "resolution": int(config.resolution or limits.resolution),
            "device": dev,
            "dtype": str(_torch_dtype(dtype, dev)).replace("torch.", ""),
            "steps": int(config.steps or limits.default_steps),
            "ensemble": int(config.ensemble or limits.default_ensemble),
            "mirror_average": _or(config.mirror_average, limits.default_mirror_average),
            "sampler": config.sampler,
            "guidance": config.guidance,
            "min_guidance": config.min_guidance,
            "max_guidance": config.max_guidance,
            "keep_input_view": keep_input_view,
        }

    @property
    def resolution(self) -> int:
        """Side of the generated views in pixels."""
        return int(self.config.resolution or self.pipeline.resolution)

    @property
    def steps(self) -> int:
        """Sampling steps in effect (the model's default when the settings give none)."""
        return int(self.config.steps or self.pipeline.denoiser.defaults()["steps"])

    @property
    def ensemble(self) -> int:
        """Samples averaged per generation in effect (the model's default when the settings give none)."""
        return int(self.config.ensemble or self.pipeline.denoiser.defaults()["ensemble"])

    @property
    def mirror_average(self) -> bool:
        """Whether half of the ensemble is drawn mirrored (the model's default when the settings give
        none)."""
        return _or(self.config.mirror_average, self.pipeline.denoiser.defaults()["mirror_average"])

    @property
    def background(self) -> tuple[float, float, float]:
        """The model's background, RGB in [0, 1]."""
        return self.pipeline.denoiser.background

    @property
    def num_frames(self) -> int | None:
        """The fixed number of views the model generates, or None if any count works."""
        return self.pipeline.denoiser.num_frames

    def settings(self) -> dict[str, Any]:
        """The settings in effect, for run.json."""
        c = self.config
        return {
            "model": self.model,
            "model_path": str(self.model_path) if self.model_path is not None else None,
            "model_hash": self.model_hash,
            "resolution": self.resolution,
            "device": self.device,
            "dtype": str(self.pipeline.dtype).replace("torch.", ""),
            "steps": self.steps,
            "ensemble": self.ensemble,
            "mirror_average": self.mirror_average,
            "sampler": c.sampler,
            "guidance": c.guidance,
            "min_guidance": c.min_guidance,
            "max_guidance": c.max_guidance,
            "keep_input_view": self.keep_input_view,
        }

    def check_orbit(self, orbit: Orbit) -> None:
        """`SettingError` (on "views") if the model cannot generate this many views."""
        if self.num_frames is not None and len(orbit) != self.num_frames:
            raise SettingError(
                "views",
                len(orbit),
                f"this model generates exactly {self.num_frames} views (model {self.model})",
            )

    def __call__(
        self,
        image_rgba: np.ndarray,
        orbit: Orbit,
        seed: int = 0,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Generate the views of `orbit` from one framed image.

        Args:
            image_rgba: (H, W, 4) uint8 RGBA (or (H, W, 3) RGB), square and already framed like a
                default render (a render, or `preprocess_image` output); resized here to the model's size,
                the one resize on its way to the model.
            orbit: N cameras; frame 0 is the input view.
            seed: same seed, same views on the same device.
            progress: show a tqdm bar over the sampling steps.
            callback: called as callback(step, total_steps) after each sampling step.
        Returns:
            (N, R, R, 4) uint8 RGBA, straight alpha (the pipeline's `rgba`); frame 0 is the input itself
            when `keep_input_view`.
        """
        import torch

        from render.common import check_seed

        seed = check_seed(seed)  # torch's generator wraps a negative seed where numpy's refuse it
        self.check_orbit(orbit)
        image = resize_rgba(np.asarray(image_rgba), self.resolution)
        sampling = {**self.config.sampling(), "num_inference_steps": self.steps, "ensemble": self.ensemble}
        sampling["mirror_average"] = self.mirror_average
        out = self.pipeline(
            image,
            orbit,
            **sampling,
            generator=torch.Generator(device="cpu").manual_seed(int(seed)),
            callback=callback,
            output_type="np",
            height=self.resolution,
            width=self.resolution,
            progress=progress,
            keep_input_view=True if self.keep_input_view else None,
        )
        return out.rgba

    def without_cameras(self) -> Callable[[np.ndarray, Orbit, int], np.ndarray]:
        """This model asked for every view at the input's camera: `mv3d eval`'s "no-camera" baseline.

        It shows how much of the score the camera conditioning earns: a model that ignores its cameras
        scores like this. Returns `(image_rgba, orbit, seed) -> (N, R, R, 4) uint8`, as `__call__`.
        """

        def generate(image_rgba: np.ndarray, orbit: Orbit, seed: int = 0) -> np.ndarray:
            n = len(orbit)
            same = Orbit(
                np.full(n, orbit.azimuth_deg[0]),
                np.full(n, orbit.elevation_deg[0]),
                orbit.radius,
                orbit.fov_deg,
                "custom",
            )
            return self(image_rgba, same, seed)

        return generate
