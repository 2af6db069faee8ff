"""Move model folders to and from a lent GPU machine within its transfer limits (64 MiB in, 16 MiB a file out).

    python -m recipes.default_model.device_transfer shrink MODEL OUT [--only unet]
    python -m recipes.default_model.device_transfer expand HALF OUT [--fill-from OTHER]
    python -m recipes.default_model.device_transfer split MODEL OUT_DIR NAME [--max-mb 15]
    python -m recipes.default_model.device_transfer join OUT_DIR NAME --base MODEL --out NEW_MODEL

`shrink` copies a model folder (`mv3d_model.json`, each component's config and weights) with its weights
in float16, half the bytes; `--only` keeps the named components (the others come from `--fill-from` at
`expand`). `expand` writes the float32 folder back: a starting point that differs from the original by
float16 rounding (relative 2^-11), far below what a training stage changes. The trained UNet comes
back unrounded: `split` writes its float32 weights as ``NAME_<i>.safetensors`` shards of at most
`--max-mb` MB and ``NAME_unet_config.json``; `join` reads them and writes a complete model folder whose
other components (VAE, image encoder) are copied from `--base`, the shipped float32 ones, and whose info
is `--base`'s own uncalibrated (the matte calibration is chosen again on validation).
Only tensors are read (safetensors), never pickles; each model folder is written through
`render.common.atomic_output` (complete, or not there).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from render.common import InputError, atomic_output, atomic_write_json
from video_prior.limits import INFO_FILE as INFO

WEIGHTS = "diffusion_pytorch_model.safetensors"
COMPONENTS = ("unet", "vae", "image_encoder")


def _components(model: Path) -> list[str]:
    if not (model / INFO).is_file():
        raise InputError(f"{model}: no {INFO}; expected an mv3d model folder")
    return [c for c in COMPONENTS if (model / c).is_dir()]


def _cast_folder(src: Path, dst: Path, dtype: torch.dtype, only: list[str] | None) -> None:
    """Copy `src`'s info and components (all or `only`) to `dst`, every safetensors file's floats in `dtype`
    (diffusers' and transformers' weight files alike; configs copied as they are)."""
    components = _components(src)
    with atomic_output(dst) as tmp:  # a complete folder at dst, or none
        tmp.mkdir()
        shutil.copy2(src / INFO, tmp / INFO)
        for c in components:
            if only and c not in only:
                continue
            (tmp / c).mkdir()
            for f in sorted((src / c).iterdir()):
                if f.suffix == ".safetensors":
                    state = {
                        k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(f).items()
                    }
                    save_file(state, tmp / c / f.name)
                elif f.is_file():
                    shutil.copy2(f, tmp / c / f.name)


def shrink(model: Path, out: Path, only: list[str] | None = None) -> None:
    """`model`'s folder with float16 weights at `out` (new)."""
    if out.exists():
        raise InputError(f"{out}: exists; expected a new folder")
    _cast_folder(model, out, torch.float16, only)


def expand(half: Path, out: Path, fill_from: Path | None = None) -> None:
    """The float32 model folder at `out` (new) from `shrink`'s; missing components copied from `fill_from`."""
    if out.exists():
        raise InputError(f"{out}: exists; expected a new folder")
    _cast_folder(half, out, torch.float32, None)
    for c in COMPONENTS:
        if not (out / c).exists() and fill_from is not None and (fill_from / c).is_dir():
            shutil.copytree(fill_from / c, out / c)


def split(model: Path, out_dir: Path, name: str, max_mb: float = 15.0) -> list[Path]:
    """The UNet's float32 weights of `model` as shards of at most `max_mb` MB in `out_dir`."""
    state = load_file(model / "unet" / WEIGHTS)
    limit = int(max_mb * 1e6)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        nbytes = state[k].numel() * state[k].element_size()
        if nbytes > limit:
            raise InputError(f"{model}: tensor {k} has {nbytes} bytes; expected at most --max-mb {max_mb} MB")
        if size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = state[k].float().contiguous()
        size += nbytes
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, shard in enumerate(shards):
        paths.append(out_dir / f"{name}_{i}.safetensors")
        save_file(shard, paths[-1])
    shutil.copy2(model / "unet" / "config.json", out_dir / f"{name}_unet_config.json")
    return paths


def join(out_dir: Path, name: str, base: Path, new_model: Path, info_file: Path | None = None) -> None:
    """A complete model folder at `new_model` (new): the UNet from `split`'s shards, the rest from `base`,
    the info (uncalibrated) from `info_file` when given (the trained run's own mv3d_model.json, which
    meta.tar.gz brings back: its notes and training resolution), else from `base`."""
    from video_prior.components import read_info_file, read_model_info

    if new_model.exists():
        raise InputError(f"{new_model}: exists; expected a new folder")
    shard_paths = sorted(
        out_dir.glob(f"{name}_[0-9]*.safetensors"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    if not shard_paths:
        raise InputError(f"{out_dir}: no {name}_<i>.safetensors shards; expected `split`'s output")
    state: dict[str, torch.Tensor] = {}
    for p in shard_paths:
        state.update(load_file(p))
    info = (read_info_file(info_file) if info_file else read_model_info(base)).uncalibrated()
    with atomic_output(new_model) as tmp:
        tmp.mkdir()
        for c in COMPONENTS[1:]:
            if (base / c).is_dir():
                shutil.copytree(base / c, tmp / c)
        (tmp / "unet").mkdir()
        shutil.copy2(out_dir / f"{name}_unet_config.json", tmp / "unet" / "config.json")
        save_file(state, tmp / "unet" / WEIGHTS)
        atomic_write_json(tmp / INFO, info.to_dict())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("shrink")
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--only", nargs="+", choices=COMPONENTS)
    p = sub.add_parser("expand")
    p.add_argument("half", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--fill-from", type=Path)
    p = sub.add_parser("split")
    p.add_argument("model", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--max-mb", type=float, default=15.0)
    p = sub.add_parser("join")
    p.add_argument("out_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--info", type=Path, help="the mv3d_model.json the new model takes (default: --base's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "shrink":
            shrink(args.model, args.out, args.only)
        elif args.command == "expand":
            expand(args.half, args.out, args.fill_from)
        elif args.command == "split":
            for path in split(args.model, args.out_dir, args.name, args.max_mb):
                print(path)
        else:
            join(args.out_dir, args.name, args.base, args.out, args.info)
    except InputError as e:
        print(f"device_transfer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
