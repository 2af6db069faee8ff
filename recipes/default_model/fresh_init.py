"""Make a starting point with a fresh UNet of another width beside a model's frozen parts.

    python -m recipes.default_model.fresh_init --channels 64,128,128 --seed 0 --out runs/v3/init \
        [--from mv3d/default_model]

Why: the default model v2's UNet (`block_out_channels` 32/64/128, 7.6 M parameters) fits the objects it
was trained on much better than it generalises, and its GPU stage ran far above its compute floor
(MODEL_CARD.md), so a wider network costs little time where the recipe trains on a GPU. A wider network
cannot start from v2's weights; this writes one that starts where v2's first stage started, at the copy
baseline.

The result is `--from`'s model folder (its frozen image encoder, its first stage and its info) with a new
`MultiViewUNet`: `--from`'s UNet config with `block_out_channels` replaced, its parameters drawn by
diffusers' default initialisation from `torch.manual_seed(--seed)` on the CPU (the same seed gives the
same weights whatever the global random state; another machine's torch is checked by the printed digest), and its output convolution zeroed: with the info's residual x0
prediction the untrained model returns the input view in every frame. The matte calibration and the mesh
method are reset (both belong to the weights they were chosen on). `recipes/default_model/drop_camera.py`
derives the no-camera twin from the result, as from v2's starting point.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from render.common import InputError
from video_prior.components import load_components, save_components
from video_prior.unet import MultiViewUNet

#: GroupNorm in the UNet's blocks normalises groups of channels: every width must divide into them.
NORM_GROUPS = 32
#: Bound on a level's width: 512 channels at the 16x16 level is already several times the 60 MB weight
#: budget (MODEL_CARD.md).
MAX_WIDTH = 512


def parse_channels(text: str, levels: int) -> list[int]:
    """'64,128,128' -> [64, 128, 128]: one width per UNet level, each a multiple of NORM_GROUPS."""
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--channels {text!r}: expected {levels} comma-separated integers") from None
    if len(widths) != levels or any(w < NORM_GROUPS or w > MAX_WIDTH or w % NORM_GROUPS for w in widths):
        raise InputError(
            f"--channels {text!r}: expected {levels} widths, each a multiple of {NORM_GROUPS} "
            f"from {NORM_GROUPS} to {MAX_WIDTH}"
        )
    return widths


def seeded_unet(config: dict, seed: int) -> MultiViewUNet:
    """A MultiViewUNet of `config` with diffusers' default initialisation drawn from `seed`."""
    # Draw on the CPU generator: CUDA's would give other numbers, and the recipe builds this on either;
    # forked, so the global random state neither changes the weights nor is changed by them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiViewUNet(**config)


def fresh_unet(config: dict, channels: list[int], seed: int) -> MultiViewUNet:
    """A MultiViewUNet of `config` with `channels` per level, seeded, its output convolution zeroed."""
    unet = seeded_unet(dict(config, block_out_channels=list(channels)), seed)
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.zero_()
    return unet.eval()


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters in name order (the first 12 hex digits): equal inits print equal."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def make_fresh_init(source: Path, out: Path, channels: str, seed: int) -> tuple[Path, str]:
    """Write the starting point (module docstring); returns (its folder, the UNet's state digest)."""
    components, info = load_components(source)
    old = components["unet"]
    config = {k: v for k, v in dict(old.config).items() if not k.startswith("_")}
    unet = fresh_unet(config, parse_channels(channels, len(config["block_out_channels"])), seed)
    info = replace(
        info.uncalibrated(),
        default_mesh_method=None,
        notes=(
            f"starting point: a fresh UNet of widths {channels} (seed {seed}) beside the frozen parts of "
            f"{source.name} (recipes/default_model/fresh_init.py)"
        ),
    )
    return save_components({**components, "unet": unet}, info, out), state_digest(unet)


def starting_point_main(
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    make: Callable[[argparse.Namespace], tuple[Path, str]],
    argv: list[str] | None = None,
) -> None:
    """The command line of a seeded starting point: `add_arguments`' options and --seed, --out, --from;
    an existing --out is kept; `make(args)` returns (the folder, the UNet's digest); bad input exits 2."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--from", dest="source", type=Path, default=Path("mv3d/default_model"))
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out}: exists, kept")
        return
    try:
        path, digest = make(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{path} (UNet parameters sha256 {digest})")


def main(argv: list[str] | None = None) -> None:
    starting_point_main(
        __doc__.splitlines()[0],
        lambda parser: parser.add_argument(
            "--channels", required=True, help="the UNet's widths per level, e.g. 64,128,128"
        ),
        lambda args: make_fresh_init(args.source, args.out, args.channels, args.seed),
        argv,
    )


if __name__ == "__main__":
    main()
