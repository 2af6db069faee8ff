"""Speed and memory options of `MultiViewPipeline`: attention kernels, memory format, torch.compile, offload.

    from video_prior.speed import SpeedOptions
    pipe = MultiViewPipeline.from_pretrained("models/sv3d_p", device="cuda", dtype=torch.bfloat16)
    pipe.apply_speed_options(SpeedOptions(compile=True, compile_cache_dir="~/.cache/mv3d/inductor"))

What each option does, and why:

* ``attention="sdpa"``: every attention of the UNet (spatial and temporal transformer blocks) and of the
  VAE runs ``torch.nn.functional.scaled_dot_product_attention`` through diffusers' ``AttnProcessor2_0``
  (flash / memory-efficient kernels on CUDA), and the CLIP encoder uses transformers' "sdpa"
  implementation. diffusers already picks ``AttnProcessor2_0`` when SDPA exists; setting it explicitly
  also undoes a processor a caller may have swapped in (e.g. a LoRA or a slicing processor).
* ``channels_last``: the convolution weights (and so the activations that follow them) in NHWC layout,
  which cuDNN's tensor-core convolutions prefer; on CPU oneDNN also likes it. Same numbers, other layout.
* ``compile``: ``torch.compile`` of the UNet's forward (in place, the module keeps its class and config).
  Inductor's FX-graph and autotuning caches go to ``compile_cache_dir`` (``TORCHINDUCTOR_CACHE_DIR``), so
  the compile is paid once per machine and shape, not once per process. ``compile_mode="reduce-overhead"``
  adds CUDA graphs (CUDA only: it replays the whole step's kernel launches at once).
* ``offload="model"``: each network lives in CPU memory and moves to the device only while it runs
  (peak device memory = the UNet + activations). ``offload="sequential"``: every submodule's own weights
  move to the device just before it runs and back after it (peak = activations + the largest layer;
  slow: the weights cross the bus once per call). Both are no-ops for the numbers computed.

Extension point: `OFFLOAD_KINDS`, `ATTENTION_KINDS`, `COMPILE_MODES` are the accepted names.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from render.common import InputError

__all__ = [
    "ATTENTION_KINDS",
    "COMPILE_MODES",
    "OFFLOAD_KINDS",
    "SpeedOptions",
    "attention_processor_names",
    "compile_module",
    "enable_sequential_offload",
    "remove_sequential_offload",
    "set_sdpa_attention",
    "to_channels_last",
]

#: "sdpa": force PyTorch SDPA everywhere; "keep": leave the processors as loaded.
ATTENTION_KINDS = ("sdpa", "keep")
#: torch.compile modes; "reduce-overhead" uses CUDA graphs and needs a CUDA device.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")
#: "none": all networks stay on the device; "model": per network; "sequential": per submodule.
OFFLOAD_KINDS = ("none", "model", "sequential")


@dataclass
class SpeedOptions:
    """How `MultiViewPipeline.apply_speed_options` sets the pipeline up (dtype is chosen at load time).

    Attributes:
        attention: a name in `ATTENTION_KINDS`.
        channels_last: NHWC convolution weights in the UNet and the VAE.
        compile: ``torch.compile`` the UNet.
        compile_mode: a name in `COMPILE_MODES`.
        compile_cache_dir: inductor's cache folder (None: inductor's default, per user in /tmp).
        offload: a name in `OFFLOAD_KINDS`.
        offload_device: the device the computation runs on when offloading (the networks wait on the CPU).
    """

    attention: str = "sdpa"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_cache_dir: str | None = None
    offload: str = "none"
    offload_device: str = "cuda"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS:
            raise InputError(f"attention '{self.attention}': expected one of {', '.join(ATTENTION_KINDS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(
                f"compile mode '{self.compile_mode}': expected one of {', '.join(COMPILE_MODES)}"
            )
        if self.offload not in OFFLOAD_KINDS:
            raise InputError(
                f"offload '{self.offload}': expected one of {', '.join(OFFLOAD_KINDS)}", field="offload"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------------


def set_sdpa_attention(module: nn.Module) -> int:
    """Give every diffusers ``Attention`` inside `module` an ``AttnProcessor2_0``; returns how many.

    transformers models (the CLIP image encoder) are switched to their "sdpa" implementation instead.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    if hasattr(module, "set_attn_implementation") and not hasattr(module, "attn_processors"):
        module.set_attn_implementation("sdpa")
        return int(getattr(module.config, "num_hidden_layers", 0))
    count = 0
    for sub in module.modules():
        if isinstance(sub, Attention):
            sub.set_processor(AttnProcessor2_0())
            count += 1
    return count


def attention_processor_names(module: nn.Module) -> dict[str, int]:
    """How many attention layers of `module` use each processor class, e.g. ``{"AttnProcessor2_0": 16}``.

    For a transformers model: ``{"<implementation>": number of layers}`` (e.g. ``{"sdpa": 32}``).
    """
    if hasattr(module, "attn_processors"):
        names: dict[str, int] = {}
        for proc in module.attn_processors.values():
            names[type(proc).__name__] = names.get(type(proc).__name__, 0) + 1
        return names
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None) or "unknown"
    return {str(impl): int(getattr(module.config, "num_hidden_layers", 0))}


# --------------------------------------------------------------------------------------------------
# memory format, compile
# --------------------------------------------------------------------------------------------------


def to_channels_last(module: nn.Module) -> nn.Module:
    """4-D parameters (convolution weights) to ``torch.channels_last``, in place; other tensors unchanged.

    A convolution whose weight is channels_last returns a channels_last output, so the layout spreads
    through the network from its first convolution on. (``module.to(memory_format=...)`` refuses the
    5-D weights of the temporal convolutions, hence the loop; channels_last_3d does not help them.)
    """
    for p in module.parameters():
        if p.ndim == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return module


def compile_module(
    module: nn.Module,
    mode: str = "default",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
):
    """``torch.compile`` `module`'s forward in place (it keeps its class, config and state dict).

    Args:
        mode: a name in `COMPILE_MODES`; "reduce-overhead" (CUDA graphs) needs the module on CUDA.
        cache_dir: inductor's persistent cache (FX-graph cache and autotuning results). Set through
            ``TORCHINDUCTOR_CACHE_DIR``, which inductor reads when it first compiles; an already set
            variable is left alone so that a user's choice wins.
        device: where the module will run (default: where its parameters are now).
    Returns:
        `module`.
    """
    if mode not in COMPILE_MODES:
        raise InputError(f"compile mode '{mode}': expected one of {', '.join(COMPILE_MODES)}")
    device = torch.device(device) if device is not None else next(module.parameters()).device
    if mode == "reduce-overhead" and device.type != "cuda":
        raise InputError(
            f"compile mode 'reduce-overhead' uses CUDA graphs: the model is on {device}, expected cuda"
        )
    if cache_dir is not None:
        path = Path(cache_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
    import torch._inductor.config as inductor_config

    # The FX graph cache makes a second process load the compiled kernels instead of compiling again.
    inductor_config.fx_graph_cache = True
    # Shapes are fixed for a model (frames, latent size, CFG batch): static shapes give the best kernels.
    module.compile(mode=mode, dynamic=False, fullgraph=False)
    return module


# --------------------------------------------------------------------------------------------------
# sequential offload
# --------------------------------------------------------------------------------------------------


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _has_own_tensors(module: nn.Module) -> bool:
    return any(t is not None for t in [*module._parameters.values(), *module._buffers.values()])


def _swap_to_device(module: nn.Module, device: torch.device) -> None:
    """Replace `module`'s own parameters and buffers by copies on `device`, keeping the CPU originals."""
    originals = {"_parameters": dict(module._parameters), "_buffers": dict(module._buffers)}
    module.__dict__["_mv3d_offload_cpu"] = originals
    for name, p in originals["_parameters"].items():
        if p is not None:
            module._parameters[name] = nn.Parameter(p.to(device, non_blocking=True), p.requires_grad)
    for name, b in originals["_buffers"].items():
        if b is not None:
            module._buffers[name] = b.to(device, non_blocking=True)


def _restore_cpu(module: nn.Module) -> None:
    """Put back the CPU originals saved by `_swap_to_device` (the device copies are dropped, not copied back)."""
    originals = module.__dict__.pop("_mv3d_offload_cpu", None)
    if originals is not None:
        module._parameters.update(originals["_parameters"])
        module._buffers.update(originals["_buffers"])


def enable_sequential_offload(module: nn.Module, device: str | torch.device) -> int:
    """Keep `module`'s weights on the CPU; give each submodule device copies of its own weights only while it runs.

    Every submodule that holds parameters or buffers of its own gets a forward pre-hook (device copies
    of its weights, and its tensor inputs moved to `device`) and a forward hook (the CPU weights put back;
    the device copies are dropped, never copied back, so this is for inference: weights do not change).
    Outputs stay on `device`. Between calls the weights are the real CPU tensors (not accelerate's meta
    placeholders), so code that reads ``next(module.parameters())`` for a dtype or device keeps working;
    inputs that such code leaves on the CPU are moved by the next hook.

    Returns:
        the number of submodules hooked.
    """
    device = torch.device(device)
    remove_sequential_offload(module)
    module.to("cpu")
    hooked = 0
    for sub in module.modules():
        if not _has_own_tensors(sub):
            continue

        def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            _restore_cpu(mod)  # a call that raised half way left device copies behind
            _swap_to_device(mod, device)
            return _move(args, device), _move(kwargs, device)

        def post_hook(mod: nn.Module, args: tuple, output: Any) -> None:
            _restore_cpu(mod)

        handles = (
            sub.register_forward_pre_hook(pre_hook, with_kwargs=True),
            sub.register_forward_hook(post_hook),
        )
        sub.__dict__["_mv3d_offload_handles"] = handles
        hooked += 1
    return hooked


def remove_sequential_offload(module: nn.Module) -> None:
    """Remove the hooks of `enable_sequential_offload` (the weights stay on the CPU)."""
    for sub in module.modules():
        _restore_cpu(sub)
        handles = sub.__dict__.pop("_mv3d_offload_handles", None)
        if handles is not None:
            for h in handles:
                h.remove()
