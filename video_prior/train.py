"""Finetuning (or training from scratch) of the multi-view video prior on orbit datasets, on accelerate.

The recipe is SVD's (reference/SV3D.md): EDM v-prediction with ln sigma ~ N(P_mean, P_std^2) and loss
weight (1 + sigma^2) / sigma^2 on the denoised output (`video_prior.edm.edm_loss`), the conditioning view
encoded after noise augmentation ln cond_aug ~ N(-3, 0.5^2), and the conditioning (CLIP embedding and image
latent) dropped with probability `cond_drop_prob` so that classifier-free guidance has an unconditional
branch to extrapolate from.

Engine: `accelerate` (mixed precision, gradient accumulation, DDP / FSDP through `accelerate launch`),
AdamW (fused on CUDA), an EMA of the trainable weights, LoRA through peft, gradient checkpointing on the
UNet, tensorboard through accelerate's trackers.

Resumption is exact: the data order and every random draw of a step (training sigma, noise, cond_aug,
conditioning dropout) are pure functions of (seed, micro-step, process rank), and a checkpoint holds the
model, the EMA, the optimizer, the LR scheduler, the step counters and the RNG states (accelerate's
`save_state`). Checkpoints are written to a temporary folder and renamed into place.

Run folder layout::

    RUN/config.yaml                 the resolved config of the run
    RUN/checkpoints/step-000100/    accelerate state + trainer_state.json (the last `keep_checkpoints`)
    RUN/checkpoints/latest          name of the newest complete checkpoint
    RUN/samples/step-000100.png     contact sheet: per validation object, a ground-truth row, a sample row
    RUN/logs/                       tensorboard
    RUN/metrics.jsonl               one line per logged optimizer step: step, loss, lr, step_s (that
                                    step's seconds), data_s (of which waiting for the loader),
                                    elapsed_s (this call's seconds so far); a resumed run
                                    drops the lines after its checkpoint and logs those steps again
    RUN/model/                      the final model (EMA weights when EMA is on), diffusers layout;
                                    RUN/model/unet_no_ema/ holds the raw weights
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import shutil
import time
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from render.common import (
    MAX_STEPS,
    InputError,
    atomic_output,
    atomic_write_text,
    check_output,
    check_range,
    output_marker,
    write_output_marker,
)
from video_prior import edm
from video_prior.data import DataConfig, OrbitVideoDataset, make_loader
from video_prior.denoiser import MultiViewDenoiser

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.json"
MIXED_PRECISION = ("no", "fp16", "bf16")
#: Bounds of a config's batch size, gradient accumulation and LoRA rank (a batch of 10**9 orbits
#: never finished assembling; a rank of 10**9 asked for 128 GB).
MAX_BATCH = 4096
MAX_LORA_RANK = 4096


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class LoraConfig:
    """LoRA adapters on the UNet (peft); only the adapters train, the final model has them merged."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])

    def __post_init__(self) -> None:
        check_range("train config lora rank", int(self.rank), 1, MAX_LORA_RANK, "a rank")


@dataclass
class CurriculumStage:
    """Until optimizer step `until_step` (exclusive), train with these frames / resolution."""

    until_step: int
    num_frames: int | None = None
    resolution: int | None = None


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data folders and the output folder (YAML-loadable).

    Model: `model` is a components config ({"unet", "vae", "image_encoder", "info"}) or a preset
    ({"preset": "tiny" | "sv3d", **its arguments}); `init_from` instead names a model folder in diffusers
    layout (a converted SVD/SV3D checkpoint, or a previous run's RUN/model) to finetune.

    Trainable parts: UNet parameters whose names match a `trainable` pattern and no `frozen` pattern
    (fnmatch, e.g. "*temporal*"); the VAE and the image encoder are always frozen. With `lora`, only the
    adapters train.

    The learning rate warms up linearly over `lr_warmup_steps`, stays at `lr`, and with
    `lr_cooldown_steps` decays linearly to zero over the last that many steps of the run (a
    warmup-stable-decay schedule: the stable phase can be cut anywhere and cooled down).

    `zero_init_output` zeroes the UNet's output convolution of a from-scratch model: with the model info's
    ``prediction: x0`` and ``residual: true`` the untrained model then returns the input view in every
    frame (the copy baseline), a deterministic warm start that training improves on.

    `alpha_loss_weight` multiplies the squared error of the latent channels that hold the alpha matte
    (a model generating RGBA through the exact patch first stage, whose latent channels are pixels): the
    silhouette's share of a small network's capacity. 1 weights every channel alike.

    `model_notes` replaces the `notes` (where the weights came from) of the saved model's info; by default
    the model keeps the notes of its model config or of its `init_from` folder, which would describe an
    earlier stage.
    """

    model: dict[str, Any] | None = None
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-5
    lr_warmup_steps: int = 0
    lr_cooldown_steps: int = 0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0
    lora: LoraConfig | None = None
    trainable: list[str] = field(default_factory=lambda: ["*"])
    frozen: list[str] = field(default_factory=list)
    p_mean: float = 0.7
    p_std: float = 1.6
    cond_aug_mean: float = -3.0
    cond_aug_std: float = 0.5
    cond_drop_prob: float = 0.1
    alpha_loss_weight: float = 1.0
    curriculum: list[CurriculumStage] = field(default_factory=list)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    zero_init_output: bool = False
    sample_every: int = 0
    sample_steps: int = 10
    sample_guidance: float = 2.5
    num_sample_objects: int = 2
    log_every: int = 1
    model_notes: str | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.init_from is None):
            raise InputError(
                "train config: give exactly one of 'model' (a config or preset) and 'init_from' (a folder)"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise InputError(
                f"train config mixed_precision '{self.mixed_precision}': expected one of {MIXED_PRECISION}"
            )
        for name in ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"train config {name} {getattr(self, name)}: expected a positive integer")
        for name in ("sample_every", "lr_warmup_steps", "num_sample_objects"):  # 0 turns each off
            if int(getattr(self, name)) < 0:
                raise InputError(
                    f"train config {name} {getattr(self, name)}: expected 0 or a positive integer"
                )
        # the counts with an upper bound too (check_range refuses below 1 as well)
        for name, hi in (("batch_size", MAX_BATCH), ("grad_accum", MAX_BATCH), ("sample_steps", MAX_STEPS)):
            check_range(f"train config {name}", int(getattr(self, name)), 1, hi, "a count")
        # NaN passes every `<` test below and trains to a NaN loss (or a torch ValueError traceback)
        for name in (
            "lr",
            "adam_eps",
            "weight_decay",
            "max_grad_norm",
            "p_mean",
            "p_std",
            "cond_aug_mean",
            "cond_aug_std",
            "alpha_loss_weight",
            "sample_guidance",
        ):
            if not math.isfinite(float(getattr(self, name))):
                raise InputError(f"train config {name} {getattr(self, name)}: expected a finite number")
        if self.weight_decay < 0 or self.adam_eps <= 0:
            raise InputError(
                f"train config weight_decay {self.weight_decay} and adam_eps {self.adam_eps}: "
                "expected weight_decay >= 0 and adam_eps > 0"
            )
        betas = [float(b) for b in self.adam_betas]
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InputError(f"train config adam_betas {self.adam_betas}: expected two values in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(
                f"train config ema_decay {self.ema_decay}: expected a value in [0, 1) (0 = no EMA)"
            )
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise InputError(f"train config cond_drop_prob {self.cond_drop_prob}: expected a value in [0, 1)")
        if self.lr <= 0:
            raise InputError(f"train config lr {self.lr}: expected a positive learning rate")
        if not float(self.alpha_loss_weight) > 0:
            raise InputError(
                f"train config alpha_loss_weight {self.alpha_loss_weight}: expected a positive weight"
            )
        if self.model_notes is not None and not isinstance(self.model_notes, str):
            raise InputError(f"train config model_notes {self.model_notes!r}: expected text")
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        if not 0 <= int(self.lr_cooldown_steps) <= int(self.max_steps):
            raise InputError(
                f"train config lr_cooldown_steps {self.lr_cooldown_steps}: expected 0 to max_steps ({self.max_steps})"
            )
        steps = [s.until_step for s in self.curriculum]
        if steps != sorted(steps):
            raise InputError(f"train config curriculum until_step values {steps}: expected increasing")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "train config") -> TrainConfig:
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        try:
            return cls._from_checked_dict(dict(data), source)
        except InputError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type deeper down
            raise InputError(f"{source}: a setting has the wrong type ({exc})") from None

    @classmethod
    def _from_checked_dict(cls, data: dict[str, Any], source: str) -> TrainConfig:
        if "curriculum" in data and data["curriculum"] is None:  # `curriculum:` with nothing after it
            data["curriculum"] = []
        _reject_unknown(cls, data, source)
        if "data" in data:
            _reject_unknown(DataConfig, data["data"], f"{source} 'data'")
            data["data"] = DataConfig(**data["data"])
        if data.get("lora") is not None:
            _reject_unknown(LoraConfig, data["lora"], f"{source} 'lora'")
            data["lora"] = LoraConfig(**data["lora"])
        if "curriculum" in data:
            stages = []
            for i, s in enumerate(data["curriculum"] or []):
                _reject_unknown(CurriculumStage, s, f"{source} curriculum[{i}]")
                stages.append(CurriculumStage(**s))
            data["curriculum"] = stages
        try:
            return cls(**data)
        except TypeError as exc:
            raise InputError(f"{source}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: training config file does not exist")
        try:
            data = yaml.load(path.read_text(), Loader=_yaml_loader())
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        return cls.from_dict(data or {}, str(path))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    def stage_at(self, step: int) -> tuple[int, int]:
        """(num_frames, resolution) in effect at optimizer step `step`."""
        for s in self.curriculum:
            if step < s.until_step:
                return s.num_frames or self.data.num_frames, s.resolution or self.data.resolution
        return self.data.num_frames, self.data.resolution


#: YAML 1.2's floats: PyYAML's YAML 1.1 resolver reads `lr: 1e-4` (no dot) as the text "1e-4".
_YAML_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _yaml_loader():
    """PyYAML's safe loader that reads `1e-4` as a number, as YAML 1.2 does (and as a user means it)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return Loader


def _reject_unknown(cls, data: Any, source: str) -> None:
    """`InputError` for a section of a config that is not a mapping, has a key `cls` does not know, or a
    value of the wrong type (`_type_problem`), naming the first such key and its value."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        expected = _type_problem(hints[key], value)
        if expected is not None:
            raise InputError(f"{source} {key} {value!r}: expected {expected}")


def _type_problem(hint: Any, value: Any) -> str | None:
    """What a config value of type `hint` must be, when `value` is not that (None when it is).

    YAML gives a setting the wrong type quietly: `batch_size: 2.5`, `zero_init_output: "no"` (text, so
    true), `trainable: "*temporal*"` (text, whose characters became the patterns). Nested configs
    (`data`, `lora`, curriculum stages) only need to be mappings here; their own keys are checked in turn.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _type_problem(inner, value)
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number else "a number"
    if hint is str:
        return None if isinstance(value, str) else "text"
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return "a list"
        if args and any(_type_problem(args[0], v) is not None for v in value):
            return f"a list of {'text' if args[0] is str else 'numbers' if args[0] is float else 'mappings'}"
        return None
    if origin is dict or hint in (DataConfig, LoraConfig):
        return None if isinstance(value, dict) else "a mapping"
    return None


# ------------------------------------------------------------------------------------------------
# Model set-up
# ------------------------------------------------------------------------------------------------


def _presets() -> dict[str, Any]:
    from video_prior.components import sv3d_config, tiny_config

    return {"tiny": tiny_config, "sv3d": sv3d_config}


def resolve_model_config(model: dict[str, Any]) -> dict[str, Any]:
    """A components config from the `model` section: a preset name with its arguments, or the config itself."""
    if not isinstance(model, dict):
        raise InputError(
            f"train config model: expected a mapping (a preset or a config), got {type(model).__name__}"
        )
    model = dict(model)
    preset = model.pop("preset", None)
    if preset is None:
        return model
    presets = _presets()
    if preset not in presets:
        raise InputError(f"train config model preset '{preset}': expected one of {sorted(presets)}")
    overrides = {k: model.pop(k) for k in ("unet", "vae", "image_encoder", "info") if k in model}
    hints = typing.get_type_hints(presets[preset])
    for key, value in model.items():
        expected = _type_problem(hints[key], value) if key in hints else None
        if expected is not None:
            raise InputError(f"train config model {key} {value!r}: expected {expected}")
    try:
        config = presets[preset](**model)
    except TypeError as exc:
        raise InputError(f"train config model preset '{preset}': {exc}") from exc
    for part, values in overrides.items():
        config[part] = {**config.get(part, {}), **values}
    return config


def build_model(config: TrainConfig) -> tuple[dict[str, torch.nn.Module], Any]:
    """(components, ModelInfo): random init from `model` (seeded by `config.seed`) or loaded `init_from`."""
    from video_prior.components import build_components, load_components, model_info_from_config

    if config.init_from is not None:
        components, info = load_components(config.init_from)
        # A matte calibration belongs to the weights it was chosen on; training changes them.
        return components, info.uncalibrated()
    model_config = resolve_model_config(config.model)
    torch.manual_seed(config.seed)  # the deterministic initialisation of a from-scratch run
    components = build_components(model_config)
    if config.zero_init_output:
        with torch.no_grad():
            components["unet"].conv_out.weight.zero_()
            components["unet"].conv_out.bias.zero_()
    return components, model_info_from_config(model_config)


def select_trainable(unet: torch.nn.Module, trainable: list[str], frozen: list[str]) -> list[str]:
    """Set requires_grad on UNet parameters by name patterns; returns the names that train."""
    names = []
    for name, p in unet.named_parameters():
        on = any(fnmatch.fnmatchcase(name, pat) for pat in trainable) and not any(
            fnmatch.fnmatchcase(name, pat) for pat in frozen
        )
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise InputError(
            f"train config: trainable {trainable} and frozen {frozen} leave no UNet parameter to train"
        )
    return names


def add_lora(unet: torch.nn.Module, lora: LoraConfig) -> list[str]:
    """Inject LoRA adapters (peft) into the UNet; freeze everything else. Returns the adapter parameter names."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    try:
        inject_adapter_in_model(peft_config, unet)
    except ValueError as exc:
        raise InputError(f"train config lora: {exc}") from exc
    names = []
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            names.append(name)
    return names


def merged_unet_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's weights as a plain state dict, with any LoRA adapters merged into their base layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = []
    for m in unet.modules():
        if isinstance(m, BaseTunerLayer) and not m.merged:
            m.merge()
            merged.append(m)
    try:
        state = {
            k.replace(".base_layer.", "."): v.detach().clone()
            for k, v in unet.state_dict().items()
            if "lora_" not in k
        }
    finally:
        for m in merged:
            m.unmerge()
    return state


class EMA:
    """Exponential moving average of the trainable parameters (kept in float32).

    shadow <- d shadow + (1 - d) param with d = min(decay, (1 + n) / (10 + n)) after n updates (the
    warm-up of diffusers' EMAModel / Karras et al.'s practice), so early averages are not dominated by
    the initialisation.
    """

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: p.detach().float().clone() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for k, p in named_params.items():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        for k, p in named_params.items():
            p.copy_(self.shadow[k].to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.float() for k, v in state["shadow"].items()}


class TrainerState:
    """Step counters, checkpointed in trainer_state.json (`_save_custom_state`)."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done
        self.micro_step = 0  # batches consumed by this process

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "micro_step": self.micro_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.micro_step = int(state["step"]), int(state["micro_step"])


# ------------------------------------------------------------------------------------------------
# One training step
# ------------------------------------------------------------------------------------------------


def lr_factor(step: int, warmup_steps: int, max_steps: int, cooldown_steps: int = 0) -> float:
    """The learning-rate multiplier after `step` optimizer steps: linear warm-up, constant, linear cool-down.

    Warm-up reaches 1 after `warmup_steps`; with `cooldown_steps` > 0 the factor falls linearly so that
    the last step of the run (step `max_steps` - 1) uses 1 / `cooldown_steps` of the rate.
    """
    factor = min(1.0, (step + 1) / max(1, warmup_steps))
    if cooldown_steps > 0:
        factor = min(factor, max(0.0, (max_steps - step) / cooldown_steps))
    return factor


def step_generator(seed: int, micro_step: int, rank: int) -> torch.Generator:
    """The CPU generator of one micro-step: its draws depend only on (seed, micro_step, rank)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(micro_step)) * 1024 + int(rank))


def training_loss(
    denoiser,
    batch: dict[str, Any],
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The EDM loss of one batch (see the module docstring); every random draw comes from `generator`.

    Args:
        denoiser: the model's `video_prior.denoiser.MultiViewDenoiser` (its UNet the one being trained,
            possibly wrapped for distributed training): prediction, residual targets, conditioning.
        batch: in the model's frame order (`MultiViewDenoiser.to_model_order`): "frames" (B, F, C, H, W)
            and "cond_image" (B, C, H, W) in [-1, 1], or cached "latents" (B, F, C_latent, h, w),
            "cond_latent" (B, C_latent, h, w), "clip" (B, 1, D); and "polar_rad", "azimuth_rad" (B, F).
    """
    from video_prior.conditioning import encode_frames
    from video_prior.denoiser import Conditioning

    b = batch["polar_rad"].shape[0]
    cond_aug = edm.sample_cond_aug(b, config.cond_aug_mean, config.cond_aug_std, generator=generator)
    sigma = edm.sample_training_sigmas(b, config.p_mean, config.p_std, generator=generator)
    keep = (torch.rand(b, generator=generator) >= config.cond_drop_prob).float()
    with torch.no_grad():
        if "latents" in batch:
            if denoiser.mirror_conditioning:
                raise InputError(
                    "data.use_cache with a mirror-conditioned model (info.mirror_conditioning): the latent "
                    "cache holds no mirrored conditioning latent; train without the cache"
                )
            latents = batch["latents"].to(device)
            clean_cond = batch["cond_latent"].to(device)
            # Cache: the augmentation noise is added in latent space (a stand-in for encoding a noisy image).
            cond_noise = torch.randn(batch["cond_latent"].shape, generator=generator)
            cond_latent = (batch["cond_latent"] + cond_aug.view(-1, 1, 1, 1) * cond_noise).to(device)
            embeds = {"context": batch["clip"].to(device)}
        else:
            images = batch["cond_image"].to(device)
            latents = encode_frames(denoiser.vae, batch["frames"].to(device)).float()
            aug_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            aug_gen = torch.Generator(device).manual_seed(aug_seed)
            cond_latent = denoiser.encode_vae_image(images, cond_aug.to(device), aug_gen).float()
            embeds = {k: v.float() for k, v in denoiser.encode_image(images).items()}
            clean_cond = denoiser.encode_clean_latent(images).float() if denoiser.residual else None
        latents = denoiser.to_residual(latents, clean_cond)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    time_ids = denoiser.time_ids(cond_aug, batch["polar_rad"], batch["azimuth_rad"]).to(device)
    # Conditioning dropout: zero both the image latent and the CLIP embedding, as the sampler's
    # unconditional branch does; the camera vector is kept.
    cond = Conditioning(**embeds, image_latent=cond_latent, time_ids=time_ids).drop(keep.to(device))
    return denoiser.loss(
        latents, sigma.to(device), noise, cond, channel_weight=_channel_weight(denoiser, config)
    )


def _channel_weight(denoiser, config: TrainConfig) -> torch.Tensor | None:
    """(C,) latent-channel loss weights for `config.alpha_loss_weight`, or None when it is 1."""
    if float(config.alpha_loss_weight) == 1.0:
        return None
    channels = denoiser.alpha_channels()
    if channels is None:
        raise InputError(
            f"train config alpha_loss_weight {config.alpha_loss_weight}: expected a model that generates "
            "alpha (info alpha: true) through the patch first stage (vae type patch), whose latent "
            "channels are pixels; use 1 otherwise"
        )
    weight = torch.ones(denoiser.vae.config.latent_channels)
    weight[channels] = float(config.alpha_loss_weight)
    return weight


# ------------------------------------------------------------------------------------------------
# Sampling previews
# ------------------------------------------------------------------------------------------------


def preview_orbit(batch: dict[str, Any], index: int):
    """The cameras of object `index` of a batch in mv3d's order, as a `render.cameras.Orbit`."""
    from render.cameras import Orbit

    az = np.rad2deg(batch["azimuth_rad"][index].double().numpy())
    el = 90.0 - np.rad2deg(batch["polar_rad"][index].double().numpy())
    return Orbit(az, el, 1.0)


@torch.no_grad()
def sample_videos(pipeline, batch: dict[str, Any], config: TrainConfig) -> list[torch.Tensor]:
    """Training previews: one `MultiViewPipeline` call per object of `batch`, so a preview is exactly what
    the model generates at inference (its sigma_max, cond_aug, prediction, guidance and matte).

    Args:
        pipeline: a `video_prior.pipeline.MultiViewPipeline` of the weights to preview.
        batch: "cond_image" (B, C, H, W) in [-1, 1] and "polar_rad", "azimuth_rad" (B, F), in mv3d's order.
        config: `sample_steps` Euler steps, triangle guidance from 1 to `sample_guidance`, noise seeded
            by `seed` (the same for every object).
    Returns:
        B videos (F, C, H, W) in [0, 1] (the pipeline's "pt" frames), in mv3d's order.
    """
    size = int(batch["cond_image"].shape[-1])
    videos = []
    for i in range(batch["cond_image"].shape[0]):
        out = pipeline(
            batch["cond_image"][i],
            preview_orbit(batch, i),
            num_inference_steps=config.sample_steps,
            max_guidance=config.sample_guidance,
            generator=torch.Generator().manual_seed(config.seed),
            output_type="pt",
            height=size,
            width=size,
        )
        videos.append(out.frames)
    return videos


def preview_sheet(batch: dict[str, Any], videos: list[torch.Tensor]) -> np.ndarray:
    """The contact sheet of a preview: per object a ground-truth row and a sample row (`contact_sheet`)."""
    rows = []
    for truth, video in zip(batch["frames"], videos, strict=True):
        rows += [truth, video.cpu() * 2.0 - 1.0]
    return contact_sheet(rows)


def contact_sheet(rows: list[torch.Tensor]) -> np.ndarray:
    """Tile rows of frames (each (F, 3, H, W) in [-1, 1]) into one (rows*H, F*W, 3) uint8 image."""
    tiles = [torch.cat(list(r.float().clamp(-1, 1)), dim=-1) for r in rows]
    sheet = torch.cat(tiles, dim=-2)
    return ((sheet.permute(1, 2, 0) + 1.0) * 127.5).round().clamp(0, 255).byte().cpu().numpy()


def write_png(path: Path, image: np.ndarray) -> None:
    import io

    from PIL import Image

    from render.common import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (the `latest` pointer, else the highest step folder)."""
    ckpt_root = Path(out_dir) / CHECKPOINTS
    pointer = ckpt_root / LATEST
    if pointer.is_file():
        cand = ckpt_root / pointer.read_text().strip()
        if (cand / TRAINER_STATE).is_file():
            return cand
    done = sorted(p for p in ckpt_root.glob("step-*") if (p / TRAINER_STATE).is_file())
    return done[-1] if done else None


EMA_FILE = "ema.safetensors"


def _save_custom_state(folder: Path, state: TrainerState, ema: EMA | None, extra: dict[str, Any]) -> None:
    """The trainer's own state without pickle: counters in trainer_state.json, the EMA weights in
    ema.safetensors (decay and update count in its metadata). accelerate's `register_for_checkpointing`
    would pickle them (custom_checkpoint_N.pkl) and unpickle them on resume with `weights_only=False`:
    a run folder someone sends could then run code."""
    from safetensors.torch import save_file

    (folder / TRAINER_STATE).write_text(json.dumps({**state.state_dict(), **extra}, indent=2) + "\n")
    if ema is not None:
        meta = {"decay": repr(ema.decay), "num_updates": str(ema.num_updates)}
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in ema.shadow.items()},
            str(folder / EMA_FILE),
            metadata=meta,
        )


def _load_custom_state(folder: Path, state: TrainerState, ema: EMA | None) -> None:
    """Counterpart of `_save_custom_state`; checkpoints of older mv3d versions keep the EMA in
    accelerate's custom_checkpoint_1.pkl, read here with `weights_only=True` (tensors and plain values
    only: a pickle that names code is refused with one line)."""
    try:
        saved = json.loads((folder / TRAINER_STATE).read_text())
        state.load_state_dict(saved)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{folder / TRAINER_STATE}: not a trainer state ({exc}): expected step and micro_step"
        ) from None
    if ema is None:
        return
    if (folder / EMA_FILE).is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(folder / EMA_FILE), "pt") as fh:
                meta = fh.metadata() or {}
                shadow = {k: fh.get_tensor(k) for k in fh.keys()}
            ema.load_state_dict(
                {"decay": float(meta["decay"]), "num_updates": int(meta["num_updates"]), "shadow": shadow}
            )
        except Exception as exc:  # safetensors raises its own errors for malformed headers
            raise InputError(f"{folder / EMA_FILE}: cannot read the EMA weights ({exc})") from None
        return
    legacy = folder / "custom_checkpoint_1.pkl"
    if not legacy.is_file():
        raise InputError(f"{folder}: no {EMA_FILE}: expected the EMA weights of a run with ema_decay > 0")
    try:
        ema.load_state_dict(torch.load(str(legacy), map_location="cpu", weights_only=True))
    except Exception as exc:  # torch's UnpicklingError and friends
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{legacy}: refused: holds more than tensors and plain values ({reason[:120]})"
        ) from None


def _check_resumable(folder: Path, unet: torch.nn.Module, out_dir: Path) -> None:
    """`InputError` if the checkpoint's model weights (accelerate's model.safetensors) do not have the
    names and shapes of `unet`'s: the run is resumed with a config of another model (another preset,
    architecture, --init-from or LoRA), which torch would refuse with a traceback."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():  # FSDP and older accelerate layouts: accelerate checks them itself
        return
    try:
        with safe_open(str(path), "pt") as fh:
            saved = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # safetensors raises its own errors for malformed headers
        raise InputError(f"{path}: cannot read the checkpoint's weights ({exc})") from None
    here = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    if saved == here:
        return
    differ = sorted(k for k in saved.keys() & here.keys() if saved[k] != here[k])
    if differ:
        detail = f"{differ[0]} is {list(saved[differ[0]])} there, {list(here[differ[0]])} here"
    else:
        only = sorted(saved.keys() ^ here.keys())[0]
        detail = f"{only} only {'there' if only in saved else 'here'}"
    raise InputError(
        f"{folder}: holds another model than this config's ({detail}): resume with the run's own config "
        f"({out_dir / 'config.yaml'}) or choose a new out_dir",
        mentions=("out_dir",),
    )


def _load_accelerate_state(accelerator, folder: Path) -> None:
    """accelerate's `load_state` (models from safetensors, optimizer, scheduler and RNG states with
    `torch.load(weights_only=True)`), never shown a custom_checkpoint_N.pkl: accelerate unpickles those
    with `weights_only=False`. A folder holding such files (an older mv3d's checkpoint, or a crafted
    one) is loaded through a temporary folder of links to its other files."""
    import tempfile

    pickles = {p.name for p in folder.iterdir() if re.fullmatch(r"custom_checkpoint_\d+\.pkl", p.name)}
    if not pickles:
        accelerator.load_state(str(folder))
        return
    with tempfile.TemporaryDirectory(prefix="mv3d-resume-") as tmp:
        for p in folder.iterdir():
            if p.name not in pickles:
                (Path(tmp) / p.name).symlink_to(p.resolve())
        accelerator.load_state(tmp)


def _save_checkpoint(
    accelerator,
    out_dir: Path,
    state: TrainerState,
    keep: int,
    extra: dict[str, Any],
    ema: EMA | None = None,
) -> Path:
    """accelerate state into a temporary folder, renamed to checkpoints/step-N when whole."""
    ckpt_root = out_dir / CHECKPOINTS
    final = ckpt_root / f"step-{state.step:06d}"
    tmp = ckpt_root / f".tmp-step-{state.step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _save_custom_state(tmp, state, ema, extra)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(ckpt_root / LATEST, final.name + "\n")
        old = sorted(p for p in ckpt_root.glob("step-*") if p != final)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What `train` returns: the final model folder, the steps done and the loss history of this call."""

    model_dir: Path | None
    steps: int
    losses: list[float]
    resumed_from: Path | None


def _validation_batch(dataset: OrbitVideoDataset, count: int) -> dict[str, Any] | None:
    from video_prior.data import collate

    if dataset.cached or count <= 0:
        return None
    saved = dataset.epoch
    dataset.set_epoch(0)
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    dataset.set_epoch(saved)
    return collate(items)


def _make_accelerator(config: TrainConfig, out_dir: Path):
    """The run's `accelerate.Accelerator` and its tracker ("tensorboard" when installed, else None)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    log_with = None
    try:
        import tensorboard  # noqa: F401

        log_with = "tensorboard"
    except ImportError:
        pass
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(out_dir), logging_dir=str(out_dir / "logs")),
        step_scheduler_with_optimizer=False,
    )
    return accelerator, log_with


def _setup_model(
    config: TrainConfig, device: torch.device
) -> tuple[dict[str, torch.nn.Module], Any, list[str]]:
    """Step 1 of `train`: (components, info, trainable parameter names); the UNet in train mode on
    `device` in float32, the VAE and image encoder frozen in the compute dtype."""
    components, info = build_model(config)
    unet, vae, encoder = components["unet"], components["vae"], components["image_encoder"]
    model_alpha = MultiViewDenoiser(**components, info=info).alpha
    if bool(config.data.alpha) != model_alpha:
        raise InputError(
            f"train config: data alpha is {config.data.alpha} but the model's info alpha is {model_alpha}: "
            "expected the same (an alpha model trains on RGBA frames)"
        )
    # InputError now, not at the first step, if alpha_loss_weight asks for matte channels the model lacks
    _channel_weight(MultiViewDenoiser(**components, info=info), config)
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        config.mixed_precision
    ]
    for frozen_part in (vae, encoder):
        frozen_part.requires_grad_(False).eval().to(device)
        if device.type == "cuda" and weight_dtype != torch.float32:
            # frozen parts run in the compute dtype; the UNet trains in fp32
            frozen_part.to(dtype=weight_dtype)
    unet.to(device)
    if config.lora is not None:
        unet.requires_grad_(False)
        train_names = add_lora(unet, config.lora)
    else:
        train_names = select_trainable(unet, config.trainable, config.frozen)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return components, info, train_names


def _make_optimizer(
    params: list[torch.nn.Parameter], config: TrainConfig, max_steps: int, device: torch.device
):
    """Step 2 of `train`: AdamW (fused on CUDA) and the warm-up / cool-down schedule (`lr_factor`)."""
    optimizer = torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, config.lr_warmup_steps, max_steps, config.lr_cooldown_steps),
    )
    return optimizer, scheduler


def _stage_data(
    config: TrainConfig, objects: OrbitVideoDataset, step: int, micro_step: int, rank: int, world: int
):
    """Step 4 of `train`: ((frames, resolution), dataset, batch iterator) of the curriculum stage at
    `step` over the objects of step 0, the iterator positioned at `micro_step` (exact resumption)."""
    frames, resolution = config.stage_at(step)
    data_cfg = DataConfig(**{**asdict(config.data), "num_frames": frames, "resolution": resolution})
    ds = objects.with_config(data_cfg)
    batches = iter(make_loader(ds, config.batch_size, config.seed, micro_step, rank, world))
    return (frames, resolution), ds, batches


def _check_cache(dataset: OrbitVideoDataset, components: dict[str, torch.nn.Module]) -> None:
    """`InputError` if the dataset's latent cache was made with another VAE / image encoder."""
    if not dataset.cached:
        return
    from video_prior.data import cache_fingerprint, components_fingerprint

    want = components_fingerprint(components)
    have = cache_fingerprint(dataset.object_dirs[0], dataset.config.resolution)
    if have != want:
        raise InputError(
            f"{dataset.object_dirs[0]}: its latent cache was made with another VAE / image encoder "
            f"(fingerprint {have}, this model {want}): precompute the caches again (precompute=True)",
            mentions=("precompute",),
        )


def _accumulate(
    accelerator, denoiser, batches, params, optimizer, config, state, rank, device
) -> tuple[float, float]:
    """One optimizer step's `grad_accum` micro-steps (backward, clipping, the step): (the mean loss, the
    seconds spent waiting for the data loader)."""
    accum_loss = data_s = 0.0
    for _ in range(config.grad_accum):
        t = time.perf_counter()
        raw = next(batches)
        data_s += time.perf_counter() - t
        batch = denoiser.to_model_order(raw)
        gen = step_generator(config.seed, state.micro_step, rank)
        with accelerator.accumulate(denoiser.unet), accelerator.autocast():
            loss = training_loss(denoiser, batch, config, gen, device)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        state.micro_step += 1
        accum_loss += float(loss.detach()) / config.grad_accum
    if not accelerator.sync_gradients:  # pragma: no cover - accumulate() syncs on the last micro-step
        raise RuntimeError("gradient accumulation out of step")
    return accum_loss, data_s


def train(
    config: TrainConfig,
    data_dirs: list[str | Path],
    out_dir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train until `max_steps` optimizer steps (config's unless given), checkpointing and sampling on the way.

    One function of about 110 lines on purpose: the order of its numbered steps (seeding, model build,
    accelerate's prepare, checkpoint registration, resume, data position) is what makes resumption exact,
    and it reads top to bottom here; the work of each step is in the helpers above.

    Args:
        config: the run's settings.
        data_dirs: orbit dataset folders (objects, or roots of many).
        out_dir: the run folder (see the module docstring).
        resume: continue from the newest checkpoint in `out_dir` (error if there is none and the folder
            already has one's traces; a fresh start otherwise).
        max_steps: overrides `config.max_steps` (a positive whole number; None: the config's).
        progress: show a tqdm bar with the loss.
        stop_after: return (without saving the final model) after this many optimizer steps of this call;
            for tests and time-boxed jobs that resume later.
        log: receives the run's one-line notes (what it resumes, what it trains, a skipped preview);
            None: printed while `progress` is on (between the bar's updates), dropped otherwise.
    Returns:
        A `TrainResult`.
    """
    import yaml
    from accelerate.utils import set_seed
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if log is None:
        log = tqdm.write if progress else lambda line: None
    # as `mv3d train --max-steps`: from Python 0 meant the config's count and a negative one was taken
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1
    ):
        raise InputError(f"max_steps {max_steps}: expected a positive number of steps", field="max_steps")
    max_steps = int(max_steps if max_steps is not None else config.max_steps)
    if out_dir.exists() and not resume and latest_checkpoint(out_dir) is not None:
        raise InputError(
            f"{out_dir}: this run folder already has checkpoints: pass resume=True or choose a new out_dir",
            mentions=("resume", "out_dir"),
        )
    if not (resume and latest_checkpoint(out_dir) is not None):
        check_output(
            out_dir, "train", field="out_dir", overwrite_option=False
        )  # a new run writes only into a new, empty or earlier run folder
    accelerator, log_with = _make_accelerator(config, out_dir)
    set_seed(config.seed)
    device = accelerator.device
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process

    # 1. model: trainable UNet, frozen VAE and image encoder in the compute dtype
    components, info, train_names = _setup_model(config, device)
    # the data: every object's orbit read and checked before the run folder is made
    objects = OrbitVideoDataset(data_dirs, config.data, seed=config.seed)
    unet, vae, encoder = components["unet"], components["vae"], components["image_encoder"]
    named = dict(unet.named_parameters())
    params = [named[n] for n in train_names]
    # 2. optimizer, warm-up / cool-down schedule, EMA
    optimizer, scheduler = _make_optimizer(params, config, max_steps, device)
    unet, optimizer, scheduler = accelerator.prepare(unet, optimizer, scheduler)
    denoiser = MultiViewDenoiser(unet, vae, encoder, info)  # the (wrapped) UNet that trains
    ema = EMA({n: named[n] for n in train_names}, config.ema_decay) if config.ema_decay > 0 else None
    state = TrainerState()  # checkpointed without pickle: _save_custom_state / _load_custom_state

    # 3. resume
    resumed_from = latest_checkpoint(out_dir) if resume else None
    if resumed_from is not None:
        _check_resumable(resumed_from, accelerator.unwrap_model(unet), out_dir)
        try:
            _load_accelerate_state(accelerator, resumed_from)
        except ValueError as exc:  # torch's optimizer: another set of trainable parameters
            raise InputError(
                f"{resumed_from}: the run trained other parameters than this config's ({exc}): resume with "
                f"the run's own config ({out_dir / 'config.yaml'}) or choose a new out_dir",
                mentions=("out_dir",),
            ) from None
        _load_custom_state(resumed_from, state, ema)
        if main:
            log(f"resuming from {resumed_from} (step {state.step})")
    if main:  # what this run is, before its first step
        start = (
            f"from {config.init_from}"
            if config.init_from
            else f"a new {config.model.get('preset', 'model')} model (seed {config.seed})"
        )
        trainable, count = sum(p.numel() for p in params), len(objects.object_dirs)
        log(
            f"training {start}: {trainable / 1e6:.2f} M trainable parameters, {count} "
            f"object{'s' * (count != 1)}, {max_steps} step{'s' * (max_steps != 1)} of "
            f"{config.batch_size * config.grad_accum * world} orbits; run folder {out_dir}"
        )
        if config.lr_cooldown_steps > max_steps:
            # allowed (a one-step trial of a long recipe), but the rate is not the configured one
            log(
                f"note: {max_steps} step{'s' * (max_steps != 1)}, fewer than the config's lr_cooldown_steps "
                f"({config.lr_cooldown_steps}): the whole run is in the cool-down, below the configured lr"
            )
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if output_marker(out_dir) is None:
            write_output_marker(out_dir, "train")
        _trim_metrics(out_dir / "metrics.jsonl", state.step)  # step 0: a run that starts again
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    if log_with is not None:
        # purge_step: TensorBoard hides the events a killed run logged after the checkpoint this one
        # resumes from (all of them for a run that starts again), as _trim_metrics does for
        # metrics.jsonl; steps are logged after their update, so the first this run logs is step + 1
        accelerator.init_trackers("mv3d_train", init_kwargs={"tensorboard": {"purge_step": state.step + 1}})

    # 4. data for the current curriculum stage (rebuilt when the stage changes)
    stage, dataset, batches = _stage_data(config, objects, state.step, state.micro_step, rank, world)
    _check_cache(dataset, components)
    preview = _validation_batch(dataset, config.num_sample_objects) if main else None

    # 5. the loop
    losses: list[float] = []
    steps_this_call = 0
    # "elapsed_s" in metrics.jsonl: this call's wall time, for step-time probes
    call_start = time.perf_counter()
    bar = tqdm(
        total=max_steps, initial=state.step, desc="train", unit="step", disable=not (progress and main)
    )
    try:  # the bar closed before an interrupt's message, not redrawn after it
        while state.step < max_steps:
            if config.stage_at(state.step) != stage:
                stage, dataset, batches = _stage_data(
                    config, objects, state.step, state.micro_step, rank, world
                )
                preview = _validation_batch(dataset, config.num_sample_objects) if main else None
            t0 = time.perf_counter()
            accum_loss, data_s = _accumulate(
                accelerator, denoiser, batches, params, optimizer, config, state, rank, device
            )
            lr = scheduler.get_last_lr()[0]  # the rate this step used (logged below)
            scheduler.step()
            if ema is not None:
                ema.update({n: named[n] for n in train_names})
            state.step += 1
            steps_this_call += 1
            loss_value = float(accelerator.reduce(torch.tensor(accum_loss, device=device), reduction="mean"))
            losses.append(loss_value)
            if main:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
                if state.step % config.log_every == 0:
                    record = {
                        "step": state.step,
                        "loss": loss_value,
                        "lr": lr,
                        "step_s": time.perf_counter() - t0,
                        # of which waiting for the loader: a step-time probe tells data-bound from compute-bound
                        "data_s": data_s,
                        "elapsed_s": time.perf_counter() - call_start,
                    }
                    with open(out_dir / "metrics.jsonl", "a") as fh:
                        fh.write(json.dumps(record) + "\n")
            if log_with is not None and state.step % config.log_every == 0:
                accelerator.log({"loss": loss_value, "lr": lr}, step=state.step)
            if state.step % config.checkpoint_every == 0 or state.step == max_steps:
                _save_checkpoint(
                    accelerator, out_dir, state, config.keep_checkpoints, {"loss": loss_value}, ema
                )
            if config.sample_every and state.step % config.sample_every == 0 and main and preview:
                unwrapped = accelerator.unwrap_model(unet)
                _write_preview(
                    unwrapped,
                    vae,
                    encoder,
                    info,
                    preview,
                    config,
                    out_dir,
                    state.step,
                    ema,
                    named,
                    train_names,
                    log,
                )
            if stop_after is not None and steps_this_call >= stop_after and state.step < max_steps:
                bar.close()
                accelerator.end_training()
                return TrainResult(None, state.step, losses, resumed_from)
    finally:
        bar.close()

    # 6. the final model, in the layout the pipeline loads (EMA weights when EMA is on)
    model_dir = None
    accelerator.wait_for_everyone()
    if main:
        model_dir = save_final_model(
            accelerator.unwrap_model(unet), vae, encoder, info, config, out_dir, ema, named, train_names
        )
    accelerator.end_training()
    return TrainResult(model_dir, state.step, losses, resumed_from)


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the lines of metrics.jsonl up to optimizer step `step`, the checkpoint a run resumes from (0
    for a run that starts again in the folder of one stopped before its first checkpoint): the steps a
    killed run logged after it are trained and logged again (one line per step), and a line the kill
    cut short is dropped."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
            if int(record["step"]) <= step and line.endswith("\n"):
                kept.append(line)
        except (ValueError, TypeError, KeyError):
            continue
    if kept != lines:
        atomic_write_text(path, "".join(kept))


def _swap_in_ema(ema: EMA | None, named: dict[str, torch.nn.Parameter], names: list[str]):
    """Context: the trainable parameters hold the EMA weights inside the block, their own weights after."""

    @contextlib.contextmanager
    def ctx():
        if ema is None:
            yield
            return
        backup = {n: named[n].detach().clone() for n in names}
        ema.copy_to({n: named[n] for n in names})
        try:
            yield
        finally:
            with torch.no_grad():
                for n in names:
                    named[n].copy_(backup[n])

    return ctx()


def _write_preview(unet, vae, encoder, info, preview, config, out_dir, step, ema, named, names, log) -> None:
    """RUN/samples/step-N.png: the preview batch through the pipeline, with the EMA weights when EMA is on."""
    from video_prior.pipeline import MultiViewPipeline

    pipeline = MultiViewPipeline(unet, vae, encoder, info)
    frames = pipeline.denoiser.num_frames
    if frames is not None and frames != preview["frames"].shape[1]:
        log(
            f"step {step}: no preview (this curriculum stage has {preview['frames'].shape[1]} frames, "
            f"the model generates {frames})"
        )
        return
    was_training = unet.training
    unet.eval()
    try:
        with _swap_in_ema(ema, named, names):
            videos = sample_videos(pipeline, preview, config)
        write_png(out_dir / "samples" / f"step-{step:06d}.png", preview_sheet(preview, videos))
    finally:
        unet.train(was_training)


def save_final_model(unet, vae, encoder, info, config, out_dir: Path, ema, named, names) -> Path:
    """RUN/model (EMA weights when EMA is on, LoRA merged) + RUN/model/unet_no_ema (raw weights)."""
    from video_prior.components import save_components
    from video_prior.unet import MultiViewUNet

    frames, resolution = config.stage_at(math.inf)
    info = info.trained_at(resolution, frames, config.model_notes)
    raw_state = merged_unet_state(unet)
    with _swap_in_ema(ema, named, names):
        ema_state = merged_unet_state(unet)
    unet_config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    plain = MultiViewUNet.from_config(unet_config)
    plain.load_state_dict(ema_state)
    parts = {"unet": plain.eval(), "vae": vae.float(), "image_encoder": encoder.float()}
    path = save_components(parts, info, out_dir / "model")
    if ema is not None:
        plain.load_state_dict(raw_state)
        with atomic_output(path / "unet_no_ema") as tmp:
            plain.save_pretrained(tmp)
    return path
