"""Which model a `model` setting (the CLI's `--model`) names, and a short fingerprint of its weights.

`--model default` is the embedded model shipped inside the package (`mv3d/default_model/`, trained by
`mv3d train` on mv3d's own procedural renders: issue 7). `--model PATH` is any diffusers-layout folder
that `video_prior.pipeline.MultiViewPipeline.from_pretrained` reads, for example SV3D weights converted
with `mv3d convert-weights`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from render.common import InputError

#: Files whose bytes define a model's behaviour: weights, and the JSON configs that shape them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
CONFIG_SUFFIXES = (".json",)


def default_model_dir() -> Path:
    """Where the embedded default model lives inside the installed package."""
    return Path(__file__).resolve().parent / "default_model"


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix in WEIGHT_SUFFIXES for p in folder.rglob("*") if p.is_file())


def resolve_model(model: str | Path = "default") -> Path:
    """The model folder that `model` names ("default" or a path); `InputError` if there is none.

    Never pretends: without a trained embedded model, "default" is an error that says what to pass.
    """
    if str(model) == "default":
        folder = default_model_dir()
        if not _has_weights(folder):
            raise InputError(
                f"model default: no trained default model is present in this installation ({folder}); "
                "give the path of a diffusers-layout model folder instead (e.g. SV3D weights converted with "
                "`mv3d convert-weights`, or a model trained with `mv3d train`)",
                field="model",
            )
        return folder
    folder = Path(model).expanduser()
    if not folder.exists():
        raise InputError(
            f"model {model}: folder does not exist: expected 'default' or a model folder", field="model"
        )
    if not folder.is_dir():
        raise InputError(f"model {model}: is a file: expected a diffusers-layout model folder", field="model")
    if not _has_weights(folder):
        raise InputError(
            f"model {model}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in this folder: "
            "expected a diffusers-layout model folder",
            field="model",
        )
    return folder.resolve()


def model_files(folder: str | Path) -> list[Path]:
    """The weight and config files of a model folder, sorted by relative path."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES + CONFIG_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def model_hash(folder: str | Path, length: int = 12) -> str:
    """Short sha256 over a model's weight and config files (their relative paths and bytes).

    Two folders with the same files hash the same wherever they live; any changed weight or config
    changes the hash. Reads every byte (a full SV3D folder, ~9 GB, takes tens of seconds on a fast disk).
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for p in model_files(folder):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:length]
