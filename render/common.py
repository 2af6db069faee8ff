"""Small helpers every mv3d package uses: the user-facing error, optional imports, atomic writes,
the torch device, and the versions a result records.

They live in `render/` because it is the one package all others may import (docs/architecture.md:
`mv3d` -> `video_prior`, `render`, `eval`; `eval` -> `render`; `video_prior` -> `render`). The other
shared pieces sit next to this module: `render.images` (reading and compositing views),
`render.raster` (the numpy rasteriser), `render.meshes` (the mesh reader), `render.cameras` (cameras
and orbits) and `render.sources` (object specs).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input from a user: a file, a value, or a setting that cannot be used.

    The message is one line naming the file or value and what was expected. The CLI prints it as
    `mv3d: error: <message>` and exits with code 2, without a traceback.

    Args:
        message: the line; when it is about one setting it starts with the setting's name.
        field: the name of that setting (a config field or argument, e.g. "views"), or None. The
            library names fields, not command-line flags: the CLI turns the leading field name into
            its flag (`mv3d.cli.flag_message`), so the same error reads right from Python and the shell.
    """

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def optional_import(module: str, extra: str, purpose: str = "") -> Any:
    """Import an optional dependency, or raise `InputError` naming the extra that installs it.

    Args:
        module: dotted module name, e.g. ``"bpy"``.
        extra: the mv3d extra that provides it, e.g. ``"blender"``.
        purpose: what the module is needed for, for the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise InputError(
            f"the optional package '{module}' is needed{what} but cannot be imported ({exc}); "
            f"install it with: pip install 'mv3d[{extra}]'"
        ) from exc


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders alike (the caller decides what to create at the yielded path). A
    folder that already exists at `path` is replaced whole. Used for anything a job writes, so a run
    killed at any moment leaves either nothing or a complete result, never a half one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if path.is_dir() and tmp.exists():
            old = _tmp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        elif tmp.exists():
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def temp_dir(prefix: str = "mv3d-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


#: Packages whose versions can change a result (generated views, metrics, trained weights).
VERSIONED_PACKAGES = (
    "mv3d",
    "torch",
    "numpy",
    "diffusers",
    "transformers",
    "pillow",
    "torchmetrics",
    "trimesh",
    "scipy",
    "pyrender",
)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks (weights, inputs, archives)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """{"python": ..., package: version} for the installed ones among `packages` (run records)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_device(device: str = "auto", field: str = "device") -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; "cpu", "cuda" and "cuda:N" are checked.

    Args:
        device: the requested device.
        field: the setting's name for the error message (a CLI passes its flag).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"{field} {device}: no CUDA GPU is visible to torch on this machine: use cpu")
        return device
    raise InputError(f"{field} {device}: expected auto, cpu, cuda or cuda:N")
