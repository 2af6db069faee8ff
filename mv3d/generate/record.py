"""The run record of `mv3d generate`: output folders, `run.json`, and resuming.

An image's folder is built in a hidden work folder next to it, ``.NAME.tmp-PID-XXXXXXXX`` (the name
`render.common`'s atomic writes use), and renamed into place when every stage is done. Its `run.json`
is written twice: after the views (``"pending": ["mesh"]``, with the views' settings and timings) and at
the end (``"pending": []``). A run that is killed or interrupted after its views leaves the work folder;
the next run with the same settings adopts it and computes only what is pending (`find_work_folder`),
and removes any other work folder of that name whose process is gone. A finished folder made with other
settings is never replaced unless asked (`settings_difference`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError, check_output, file_sha256, versions
from render.dataset import read_orbit_dataset

__all__ = [
    "MAX_RUN_BYTES",
    "GenerateResult",
    "RUN_FILE",
    "VIEW_KEYS_EXCLUDED",
    "file_sha256",
    "find_work_folder",
    "finished_run",
    "new_work_folder",
    "output_dirs",
    "publish",
    "read_run",
    "settings_difference",
    "versions",
]

RUN_FILE = "run.json"
#: A run.json larger than this is not one `mv3d generate` wrote (they are a few kB): it is not read.
MAX_RUN_BYTES = 1 << 20
#: Job keys that shape only the mesh: views made under other values of these are reused.
VIEW_KEYS_EXCLUDED = ("mesh", "reconstruct_options")


@dataclass
class GenerateResult:
    """One image's generation.

    Attributes:
        image: the input image path.
        out_dir: the finished output folder.
        views: (N, R, R, 4) uint8 RGBA views as written.
        mesh_path: `out_dir / "mesh.glb"`, or None with `mesh=False`.
        timings: seconds per stage ("preprocess", "sample", "write", "reconstruct", "total").
        warnings: preprocessing and reconstruction notes.
        run: the run.json content.
    """

    image: Path
    out_dir: Path
    views: np.ndarray = field(repr=False)  # (N, R, R, 4): a printed result names its folder, not pixels
    mesh_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: where the result is and how long each stage took."""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        return f"{self.image} -> {self.out_dir} ({stages}; total {self.timings.get('total', 0.0):.1f}s)"


def output_dirs(images: Sequence[Path], out_dir: str | Path | None, overwrite: bool = False) -> list[Path]:
    """One folder per image: `out_dir` itself for one image, `out_dir/<stem>` for several.

    Default `out_dir`: `outputs/<stem>` for one image, `outputs/` for several. An existing folder must
    be an earlier generation (`render.common.check_output`) unless `overwrite`.
    """
    if len(images) == 1:
        dirs = [Path(out_dir) if out_dir is not None else Path("outputs") / images[0].stem]
    else:
        base = Path(out_dir) if out_dir is not None else Path("outputs")
        stems = [p.stem for p in images]
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise InputError(
                f"several input images share the name '{dup[0]}': expected distinct file names in a batch"
            )
        dirs = [base / s for s in stems]
    for d in dirs:
        # An input inside its output folder would go with it (`generate photos/cat.jpg -o photos
        # --overwrite` deleted the photo): refused, --overwrite or not, before anything is read.
        inside = [p for p in images if d.resolve() in p.resolve().parents]
        if inside:
            raise InputError(
                f"out_dir {d}: holds the input image {inside[0]}, and generate replaces the folder whole: "
                "expected an output folder that does not contain its input (choose another out_dir)",
                field="out_dir",
                mentions=("out_dir",),
            )
        # A finished folder is replaced whole: only a folder marked as a generation's output (not any
        # folder holding a run.json) may be; see render.common.check_output.
        check_output(d, "generate", overwrite, field="out_dir")
    return dirs


def finished_run(folder: Path, job: dict[str, Any]) -> GenerateResult | None:
    """The result already in `folder` if it was made from the same image with the same settings (`job`:
    the keys of run.json that must match)."""
    run = read_run(folder)
    if run is None or run.get("pending") or _differing(run, job):
        return None
    try:
        views = read_orbit_dataset(folder).load_images()
    except InputError:
        return None
    mesh_path = folder / "mesh.glb"
    return GenerateResult(
        Path(run["image"]),
        folder,
        views,
        mesh_path if mesh_path.is_file() else None,
        {k: float(v) for k, v in run.get("timings_s", {}).items()},
        list(run.get("warnings", [])),
        run,
    )


def read_run(folder: Path, problems: list[str] | None = None) -> dict[str, Any] | None:
    """The run.json of `folder` as a dict, or None if it has none or one that `mv3d generate` cannot
    have written (larger than `MAX_RUN_BYTES`, not JSON, not a JSON object). For such a file, one line
    saying which (file, what is wrong) is appended to `problems` when given; a missing file adds none."""
    path = folder / RUN_FILE
    try:
        if not path.is_file():
            return None
        # Bounded before reading: a folder may hold anything, and run.json is read on every resume.
        if path.stat().st_size > MAX_RUN_BYTES:
            why = f"larger than {MAX_RUN_BYTES} bytes (generate writes a few kB), not read"
        else:
            run = json.loads(path.read_text())
            if isinstance(run, dict):
                return run
            why = "not a JSON object"
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        why = "not readable JSON"
    if problems is not None:
        problems.append(f"{path}: {why}")
    return None


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, ...), for comparing with run.json."""
    return json.loads(json.dumps(value))


def _differing(run: dict[str, Any], job: dict[str, Any], keys: Sequence[str] | None = None) -> list[str]:
    return [k for k in (job if keys is None else keys) if run.get(k) != _plain(job[k])]


def settings_difference(run: dict[str, Any], job: dict[str, Any]) -> str:
    """What differs between a finished folder's run.json and this run's `job` keys, as one phrase
    (empty when nothing does): ``seed 0 there, 1 now; mesh True there, False now``."""
    out = []
    for k in _differing(run, job):
        if k == "image_sha256":
            out.append("another input image (its sha256 differs)")
        elif k in ("orbit", "reconstruct_options"):
            out.append(f"other {k.replace('_', ' ')}")
        else:
            out.append(f"{k} {json.dumps(run.get(k))} there, {json.dumps(_plain(job[k]))} now")
    return "; ".join(out)


#: ``.NAME.tmp-PID-XXXXXXXX``: the only hidden names mv3d gives its work folders (render.common).
_WORK_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")


def _alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (ours counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return False
    return True


def new_work_folder(final: Path) -> Path:
    """A new, empty hidden work folder next to `final` (``.NAME.tmp-PID-XXXXXXXX``)."""
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    work.mkdir(parents=True)
    return work


def find_work_folder(final: Path, job: dict[str, Any]) -> tuple[Path | None, list[str]]:
    """Adopt or remove what killed runs left next to `final`; (adopted work folder or None, notes).

    Considered are folders named ``.NAME.tmp-PID-XXXXXXXX`` (NAME = `final`'s name) whose process PID is
    gone; any other entry, and work folders of running processes, are left alone. One whose run.json has
    the views of this image with these settings (every `job` key but `VIEW_KEYS_EXCLUDED`) is adopted
    (renamed to a work folder of this process), the first such; every other one is removed.
    """
    if not final.parent.is_dir():
        return None, []
    adopted, notes = None, []
    view_keys = [k for k in job if k not in VIEW_KEYS_EXCLUDED]
    for entry in sorted(final.parent.iterdir()):
        m = _WORK_NAME.match(entry.name)
        if m is None or m["name"] != final.name or not entry.is_dir() or entry.is_symlink():
            continue
        if _alive(int(m["pid"])):
            continue
        run = read_run(entry)
        views_ok = run is not None and not _differing(run, job, view_keys) and (entry / "views").is_dir()
        if adopted is None and views_ok:
            adopted = entry.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(entry, adopted)
            notes.append(f"reused the finished views left by an interrupted run ({entry.name})")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            notes.append(f"removed {entry.name}, left by an interrupted run with other settings")
    return adopted, notes


def publish(work: Path, final: Path) -> None:
    """Rename the finished `work` folder onto `final`, replacing a previous generation there whole."""
    if final.is_dir():
        old = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)
