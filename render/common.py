"""Small helpers every mv3d package uses: the user-facing error, optional imports, atomic writes, output
ownership and one job per output folder, upper bounds on sizes and counts, the torch device, and the
versions a result records.

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
import numbers
import os
import platform
import re
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
        mentions: settings the message names later, in its remedy, as the Python call spells them
            (`resume=True`, `out_dir`); the CLI turns each into its flag (`--resume`, `--out`).
    """

    def __init__(self, message: str = "", field: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.mentions = tuple(mentions)


#: Documented upper bounds of numeric options and config values (README "Limits"). Beyond them a run
#: would only end in MemoryError or an allocation of hundreds of gigabytes, so they are refused first.
#: Image side in pixels (renders, views, a model's or training's resolution): 4096 (SV3D works at 576).
MAX_IMAGE_SIDE = 4096
#: Views in one orbit.
MAX_VIEWS = 1024
#: Samples averaged into one generation (each costs a full sampling run and its latents).
MAX_ENSEMBLE = 64
#: Sampling steps of one generation (SV3D samples with 50; 10**5 ran for days after its warning).
MAX_STEPS = 1000
#: Largest seed: every seed from 0 to this one is valid for torch's generators and numpy's (numpy's
#: take no negative seed, torch's none of 2**64 or more).
MAX_SEED = 2**63 - 1


def check_seed(value: Any, field: str = "seed") -> int:
    """`value` if it is a whole number from 0 to `MAX_SEED`, else `InputError` naming `field`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise InputError(f"{field} {value}: expected a whole number from 0 to 2**63 - 1", field=field)
    return int(value)


def check_range(name: str, value: Any, lo: float, hi: float, what: str) -> Any:
    """`value` if lo <= value <= hi, else `InputError` "name value: expected what from lo to hi".

    `name` is a setting's field (the CLI shows its flag) or, with a space, a config value's
    description ("data resolution")."""
    try:
        ok = lo <= value <= hi
    except TypeError:
        ok = False
    if isinstance(value, bool) or not ok:
        field = name if name.isidentifier() else None
        raise InputError(f"{name} {value}: expected {what} from {lo} to {hi}", field=field)
    return value


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
    if path.is_dir():
        raise InputError(
            f"{path}: is a folder: expected a file path (mv3d never replaces a folder by a file)"
        )
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{path}: {path.parent} is a file: expected a path in a folder")
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


#: The file that marks a folder as mv3d's own output: {"command": ..., "mv3d": version}. Only a folder
#: carrying it (written by the same command) is ever replaced without `--overwrite`.
OUTPUT_MARKER = ".mv3d-output.json"


def _mv3d_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mv3d")
    except metadata.PackageNotFoundError:
        return "unknown"


def output_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of an mv3d output folder ({"command", "mv3d"}), or None when it carries none."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def write_output_marker(folder: str | os.PathLike, command: str) -> None:
    """Mark `folder` as the output of `mv3d <command>` (deterministic content: no time stamps)."""
    atomic_write_json(Path(folder) / OUTPUT_MARKER, {"command": command, "mv3d": _mv3d_version()})


#: The lock file a long job holds in its output folder (`lock_folder`).
LOCK_FILE = ".mv3d-lock"


def lock_folder(folder: str | os.PathLike, command: str, field: str = "out") -> Any:
    """An exclusive lock on FOLDER/.mv3d-lock (flock: released by the kernel when the process dies), held
    until the returned file is closed; `InputError` naming the job that holds it. Two jobs on one
    output folder would rewrite each other's results and reports. No lock where flock is missing."""
    path = Path(folder) / LOCK_FILE
    fh = open(path, "a+")  # noqa: SIM115 - held open for the whole job
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock
        return fh
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise InputError(
            f"{field} {folder}: another job ({holder}) is writing there: wait for it to finish or "
            "choose another folder",
            field=field,
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"mv3d {command}, pid {os.getpid()}\n")
    fh.flush()
    return fh


def _protected(resolved: Path) -> str | None:
    """Why a folder may never be an output that mv3d replaces, or None."""
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return "is the working folder or one above it"
    home = Path.home().resolve()
    if resolved == home or resolved in home.parents:
        return "is the home folder or one above it"
    return None


def check_output(
    path: str | os.PathLike,
    command: str,
    overwrite: bool = False,
    field: str = "out",
    kind: str = "folder",
    overwrite_option: bool = True,
    overwrite_keeps_files: bool = False,
) -> Path:
    """Refuse, before any work, an output path that mv3d must not replace; return it as a Path.

    mv3d deletes only what it wrote. A folder output (`kind="folder"`) may be new, empty, or an
    earlier output of the same command (its `OUTPUT_MARKER` says so); any other existing folder is
    refused unless `overwrite`, and an existing file always (a folder never replaces a file). A file
    output (`kind="file"`, e.g. a GIF or a mesh) may replace a file (the user named it) but never a
    folder. Whatever `overwrite` says, the working folder, the
    home folder and the folders above them are refused, and so is a path below a file.

    Args:
        path: the output path.
        command: the subcommand that writes it ("render", "generate", ...), recorded in the marker.
        overwrite: replace an existing folder that is not this command's output.
        field: the setting's name for the message (the caller's argument, e.g. "out_dir"; the CLI turns
            it into the flag).
        kind: "folder" or "file".
        overwrite_option: whether the command offers `overwrite` (`--overwrite`); the refusal names it
            only then.
        overwrite_keeps_files: the command's `--overwrite` writes into the folder, keeping its files
            (render-dataset), rather than replacing it; the refusal says which.

    Raises:
        InputError: one line naming the path and what was expected.
    """
    path = Path(path).expanduser()
    resolved = path.resolve()
    why = _protected(resolved)
    if why is not None:
        raise InputError(f"{field} {path}: {why}: expected a new folder for the output", field=field)
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    f"{field} {path}: {parent} is a file: expected a path in a folder", field=field
                )
            break
    if not path.exists() and not path.is_symlink():
        return path
    if kind == "file":
        if path.is_dir():
            raise InputError(
                f"{field} {path}: is a folder: expected a file path (mv3d never replaces a folder by a file)",
                field=field,
            )
        return path
    if path.is_dir() and not path.is_symlink():
        # empty, or holding only the lock of a job that stopped before it wrote its marker
        if all(p.name == LOCK_FILE for p in path.iterdir()):
            return path
        marker = output_marker(path)
        if marker is not None and marker["command"] == command:
            return path
        if overwrite:
            return path
        what = (
            f"an 'mv3d {marker['command']}' output" if marker else f"not an mv3d output (no {OUTPUT_MARKER})"
        )
        verb = "write into it" if overwrite_keeps_files else "replace it"
        # The remedy names the Python argument (`overwrite=True`, the field); the CLI shows their flags.
        remedy = f"pass overwrite=True to {verb}" if overwrite_option else f"choose another {field}"
        raise InputError(
            f"{field} {path}: exists and is {what}: expected a new or empty folder or an earlier "
            f"'mv3d {command}' output ({remedy})",
            field=field,
            mentions=("overwrite",) if overwrite_option else (field,),
        )
    if overwrite and path.is_dir():
        return path
    raise InputError(
        f"{field} {path}: exists and is not a folder: expected a folder path (mv3d never replaces a file by a folder)",
        field=field,
    )


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, command: str | None = None, overwrite: bool = False, field: str = "out"
) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders alike (the caller decides what to create at the yielded path). A
    folder that already exists at `path` is replaced whole; with `command` it must pass
    `check_output` (checked before the block and again before the rename) and the new folder gets
    the `OUTPUT_MARKER` of that command (`field`: the argument its refusal names). A folder is never
    replaced by a file. Used for anything a job writes, so a run killed at any moment leaves either
    nothing or a complete result, never a half one.
    """
    path = Path(path)
    if command is not None:
        check_output(path, command, overwrite, field=field)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        if command is not None and tmp.is_dir():
            write_output_marker(tmp, command)
            check_output(path, command, overwrite, field=field)
        if path.is_dir() and tmp.exists() and not tmp.is_dir():
            raise InputError(
                f"{path}: is a folder: expected a file path (mv3d never replaces a folder by a file)"
            )
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


def safe_name(name: str, limit: int = 64) -> str:
    """`name` as one safe file name: runs of characters other than letters, digits and `._-` become `_`,
    leading and trailing `._-` go, at most `limit` characters, "object" when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return name[:limit] or "object"


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
            raise InputError(
                f"{field} {device}: no CUDA GPU is visible to torch on this machine: use cpu", field=field
            )
        return device
    raise InputError(f"{field} {device}: expected auto, cpu, cuda or cuda:N", field=field)
