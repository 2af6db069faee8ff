"""The run record of `mv3d generate`: output folders, `run.json`, and resuming finished images."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError, check_output
from render.dataset import read_orbit_dataset

__all__ = ["GenerateResult", "RUN_FILE", "file_sha256", "finished_run", "output_dirs", "versions"]

RUN_FILE = "run.json"


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
    views: np.ndarray
    mesh_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: where the result is and how long each stage took."""
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        return f"{self.image} -> {self.out_dir} ({stages}; total {self.timings.get('total', 0.0):.1f}s)"


def versions() -> dict[str, str]:
    """Versions of the packages that shape a generation, for run.json."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("mv3d", "torch", "diffusers", "transformers", "numpy", "pillow", "trimesh"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def output_dirs(images: Sequence[Path], out_dir: str | Path | None) -> list[Path]:
    """One folder per image: `out_dir` itself for one image, `out_dir/<stem>` for several.

    Default `out_dir`: `outputs/<stem>` for one image, `outputs/` for several.
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
        # A finished folder is replaced whole: only a folder marked as a generation's output (not any
        # folder holding a run.json) may be; see render.common.check_output.
        check_output(d, "generate")
    return dirs


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def finished_run(folder: Path, job: dict[str, Any]) -> GenerateResult | None:
    """The result already in `folder` if it was made from the same image with the same settings (`job`:
    the keys of run.json that must match)."""
    try:
        run = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict) or any(run.get(k) != json.loads(json.dumps(v)) for k, v in job.items()):
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
