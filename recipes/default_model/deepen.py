"""Make a deeper copy of a model's UNet that computes the same function: a larger network's warm start.

    python -m recipes.default_model.deepen --layers-per-block 2 --out runs/v3/deep_init \
        [--from mv3d/default_model] [--seed 0]

Why: the next model needs more capacity than v2's UNet (7.6 M parameters; MODEL_CARD.md, "Next model"),
and a network trained from scratch stays far behind v2's warm start for as long as a CPU or one GPU
command can train it (the width experiment there). Widening v2 so that it computes the same function is
not possible under the weight budget: the up path concatenates the unchanged 128-channel level with the
widened skip connections, so the GroupNorm groups of the concatenation no longer hold the same channels,
and widening every level instead quadruples the 128-channel level (about 110 MB). Depth can be added
exactly: with `layers_per_block` 2 instead of 1 the UNet has 11.0 M parameters (44.0 MB in float32, with
the image encoder 57.7 MB, under the 60 MB limit), and every new block starts as the identity.

How each new block is the identity (diffusers' spatio-temporal blocks, whose outputs are residual):
- a new down-path res block: the last convolution of its spatial and of its temporal res block is zero,
  so each returns its input, and the time mixer blends two equal tensors;
- a new attention block: its output projection is zero, so it returns its residual input;
- a new up-path res block: it also takes a skip connection (the output of a new down-path block, equal to
  the previous block's), so its 1x1 shortcut convolution keeps the first half of the concatenation (the
  hidden state) and drops the skip, and its last convolutions are zero.
The up path consumes skip connections from the deepest first: the old first res block of each up block
keeps its place (its skip, the last down-path block's output, has the same value), the old last one
(the skip from the level below) moves to the end, and the new blocks sit between them. Everything else
(embeddings, the mid block, the samplers, the output) is copied. The new blocks' other parameters are
diffusers' default initialisation drawn from `torch.manual_seed(--seed)` on the CPU, so training moves
them from the first step. The info is the source's: the same function, so the same matte calibration and
mesh method; `recipes/default_model/drop_camera.py` derives the no-camera twin from the result.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from recipes.default_model.fresh_init import seeded_unet, starting_point_main, state_digest
from render.common import InputError
from video_prior.components import load_components, save_components
from video_prior.unet import MultiViewUNet

#: Bound on the depth asked for: 3 already exceeds the 60 MB weight budget at v2's widths.
MAX_LAYERS_PER_BLOCK = 4

_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$")


def _new_index(kind: str, index: int, old_layers: int, new_layers: int) -> int:
    """Where an old block's parameters go: down-path blocks keep their index; up-path blocks after the
    first move back by the number of blocks added (module docstring)."""
    if kind == "down" or index == 0:
        return index
    return index + new_layers - old_layers


def _zero(*modules) -> None:
    """Zero the weight and bias of each module."""
    for module in modules:
        module.weight.zero_()
        module.bias.zero_()


def _identity_up_shortcut(resnet, channels: int) -> None:
    """The 1x1 shortcut of a new up-path res block keeps the hidden state's channels, drops the skip's."""
    conv = resnet.spatial_res_block.conv_shortcut
    weight = torch.zeros_like(conv.weight)
    weight[:channels, :channels, 0, 0] = torch.eye(channels, dtype=weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.zero_()


def _identity_block(block, i: int) -> None:
    """Make block i of an up or down block the identity on its hidden state: the last convolution of
    its spatial and temporal res blocks zero, and its attention's output projection where it has one."""
    resnet = block.resnets[i]
    _zero(resnet.spatial_res_block.conv2, resnet.temporal_res_block.conv2)
    if hasattr(block, "attentions"):
        _zero(block.attentions[i].proj_out)


def deepen_unet(old: MultiViewUNet, layers_per_block: int, seed: int = 0) -> MultiViewUNet:
    """A MultiViewUNet with `layers_per_block` blocks per level that computes what `old` computes.

    Args:
        old: the source UNet (any `layers_per_block` up to the new one).
        layers_per_block: the new depth, from old's to MAX_LAYERS_PER_BLOCK.
        seed: seed of the new blocks' parameters that do not decide the output at first.
    Returns:
        The deeper UNet in eval mode, same dtype as `old`'s parameters.
    """
    old_layers = int(old.config.layers_per_block)
    if not old_layers <= int(layers_per_block) <= MAX_LAYERS_PER_BLOCK:
        raise InputError(
            f"--layers-per-block {layers_per_block}: expected {old_layers} (the source's) to {MAX_LAYERS_PER_BLOCK}"
        )
    config = {k: v for k, v in dict(old.config).items() if not k.startswith("_")}
    config["layers_per_block"] = int(layers_per_block)
    new = seeded_unet(config, seed)
    dtype = next(old.parameters()).dtype
    if dtype != torch.float32:
        new = new.to(dtype)
    state = new.state_dict()
    for name, tensor in old.state_dict().items():
        match = _BLOCK.match(name)
        if match:
            kind, block, part, index, rest = match.groups()
            index = _new_index(kind, int(index), old_layers, int(layers_per_block))
            name = f"{kind}_blocks.{block}.{part}.{index}.{rest}"
        if name not in state or state[name].shape != tensor.shape:
            raise InputError(f"deepen: no place for the source's parameter {name} {tuple(tensor.shape)}")
        state[name] = tensor
    new.load_state_dict(state)
    added = int(layers_per_block) - old_layers
    with torch.no_grad():
        for block in new.down_blocks:  # the new blocks follow the old ones
            for i in range(old_layers, old_layers + added):
                _identity_block(block, i)
        for block in new.up_blocks:  # the new blocks follow the first (module docstring)
            for i in range(1, 1 + added):
                _identity_block(block, i)
                resnet = block.resnets[i]
                _identity_up_shortcut(resnet, resnet.spatial_res_block.out_channels)
    return new.eval()


def make_deep_init(source: Path, out: Path, layers_per_block: int, seed: int) -> tuple[Path, str]:
    """Write `source`'s model folder with its UNet deepened; returns (the folder, the UNet's digest)."""
    components, info = load_components(source)
    unet = deepen_unet(components["unet"], layers_per_block, seed)
    info = replace(
        info,
        notes=(
            f"{info.notes} | deepened to {layers_per_block} blocks per level, the same function "
            f"(recipes/default_model/deepen.py, seed {seed})"
        ),
    )
    return save_components({**components, "unet": unet}, info, out), state_digest(unet)


def main(argv: list[str] | None = None) -> None:
    starting_point_main(
        __doc__.splitlines()[0],
        lambda parser: parser.add_argument("--layers-per-block", type=int, default=2),
        lambda args: make_deep_init(args.source, args.out, args.layers_per_block, args.seed),
        argv,
    )


if __name__ == "__main__":
    main()
