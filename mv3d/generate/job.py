"""The image -> views -> mesh job behind `mv3d generate`.

For each image, in a temporary folder renamed into place at the end (a failed run leaves no folder
that looks complete):

1. preprocess: matte, frame like a default render (`mv3d.preprocess`) -> `input.png`;
2. sample: the camera-conditioned video prior turns it into N views (`ViewGenerator`) -> `views/*.png`
   and `transforms.json` (an orbit dataset, so the folder can be reconstructed, evaluated or handed to
   nerfstudio), and `orbit.gif`, a turntable of the views;
3. reconstruct: the views and their cameras -> `mesh.glb` (`mv3d.reconstruct`), unless `mesh=False`;
4. `run.json`: the model and its hash, the settings, per-stage timings, versions (`mv3d.generate.record`).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mv3d.generate.record import RUN_FILE, GenerateResult, file_sha256, finished_run, output_dirs, versions
from mv3d.generate.settings import GenerateSettings
from mv3d.generate.views import ViewGenerator
from mv3d.matting import check_method as check_matte_method
from mv3d.models import resolve_model
from mv3d.preprocess import DEFAULT_MARGIN, PreprocessResult, preprocess_image, to_uint8
from render.cameras import Orbit
from render.common import InputError, atomic_output
from render.dataset import WHITE, composite, write_orbit_dataset

__all__ = ["INPUT_SIDE", "TRAINING_BACKGROUND", "generate", "turntable_gif"]

#: Background the video prior was trained on (the input is framed and composited on it).
TRAINING_BACKGROUND = WHITE
#: Side in pixels of the framed input (`input.png`) when neither the settings nor a loaded generator
#: give the view size (the model is loaded after every input is checked).
INPUT_SIDE = 576


def turntable_gif(
    views: np.ndarray, background: Sequence[float] = TRAINING_BACKGROUND, fps: float = 10.0
) -> bytes:
    """A looping GIF of (N, H, W, 4) uint8 views composited on `background`."""
    from PIL import Image

    frames = [Image.fromarray(to_uint8(composite(v, background)), "RGB") for v in views]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def _reconstruct(
    views_dir: Path, out_path: Path, seed: int, device: str, progress: bool, options: dict[str, Any] | None
) -> tuple[Path | None, list[str], dict[str, Any]]:
    """Reconstruct `views_dir` into `out_path`; (path or None, warnings, info for run.json).

    A generation whose views admit no mesh (the reconstruction's `InputError`, e.g. views without a
    common object) keeps its views: the mesh is skipped with a warning instead of losing the run.
    """
    from mv3d.reconstruct import reconstruct

    kwargs = {"seed": seed, "device": device, "progress": progress, **(options or {})}
    try:
        result = reconstruct(views_dir, out_path, **kwargs)
    except InputError as exc:
        note = f"no mesh: the reconstruction failed ({str(exc).replace(str(views_dir), 'views')})"
        return None, [note], {"error": str(exc), "settings": kwargs}
    info = {
        "path": out_path.name,
        "settings": {k: v for k, v in kwargs.items() if k != "progress"},
        "faces": int(len(result.mesh.faces)),
        "timings_s": {k: round(float(v), 4) for k, v in result.timings.items()},
    }
    return out_path, list(result.warnings), info


def _write_one(
    path: Path,
    final: Path,
    pre: PreprocessResult,
    views: np.ndarray,
    cams: Orbit,
    generator: ViewGenerator,
    job: dict[str, Any],
    timings: dict[str, float],
    mesh: bool,
    progress: bool,
    reconstruct_options: dict[str, Any] | None,
) -> GenerateResult:
    """Stages 1-4's files of one image (input, views, GIF, mesh, run.json) into `final`, atomically."""
    from PIL import Image

    notes = list(pre.warnings)
    background, seed = generator.background, job["seed"]
    with atomic_output(final, command="generate") as tmp:
        t = time.perf_counter()
        buf = io.BytesIO()
        Image.fromarray(pre.rgba, "RGBA").save(buf, "PNG")
        write_orbit_dataset(
            tmp,
            views,
            cams,
            background=background,
            renderer={"name": "mv3d generate", "settings": {**generator.settings(), "seed": seed}},
            object_info={"id": path.stem, "source": str(path)},
            extra_files={"input.png": buf.getvalue(), "orbit.gif": turntable_gif(views, background)},
        )
        timings["write"] = time.perf_counter() - t

        mesh_path, recon_info = None, None
        if mesh:
            t = time.perf_counter()
            written, recon_notes, recon_info = _reconstruct(
                tmp, tmp / "mesh.glb", seed, generator.device, progress, reconstruct_options
            )
            notes += [n.replace(str(tmp), str(final)).replace(tmp.name, final.name) for n in recon_notes]
            mesh_path = final / "mesh.glb" if written is not None else None
            timings["reconstruct"] = time.perf_counter() - t
        timings["total"] = sum(timings.values())
        run = {
            "image": str(path),
            **job,
            "views": len(cams),
            "elevation_deg": float(cams.elevation_deg[0]),
            "preprocess": {
                "matte": job["matte"],
                "matte_method": pre.matte_method,
                "margin": job["margin"],
                "source_size": list(pre.source_size),
                "warnings": pre.warnings,
            },
            "reconstruction": recon_info,
            "warnings": notes,
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "versions": versions(),
        }
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    return GenerateResult(path, final, views, mesh_path, timings, notes, run)


def generate(
    images: Sequence[str | Path],
    out_dir: str | Path | None = None,
    settings: GenerateSettings | None = None,
    *,
    model: str | Path = "default",
    device: str = "auto",
    mesh: bool = True,
    progress: bool = True,
    generator: ViewGenerator | None = None,
    margin: float = DEFAULT_MARGIN,
    log: Callable[[str], None] | None = None,
    reconstruct_options: dict[str, Any] | None = None,
    dtype: Any = None,
    speed: Any = None,
    matte: str = "auto",
    **options: Any,
) -> list[GenerateResult]:
    """Generate views (and a mesh) for each image; see the module docstring for the folder layout.

    Every input is checked and preprocessed before the model loads, so bad input fails in a second
    with one line.

    Args:
        images: input image files.
        out_dir: the output folder (`mv3d.generate.record.output_dirs`).
        settings: what to generate and how to sample (`GenerateSettings`); `options` (its field names,
            e.g. ``views=21, seed=3``) replace single fields.
        model, device, dtype, speed: the model to load (`ViewGenerator.load`); ignored, with the
            sampling settings, when `generator` (an already loaded `ViewGenerator`) is given.
        mesh: reconstruct a mesh; `reconstruct_options` go to `mv3d.reconstruct.reconstruct`.
        progress: progress bars; `log` receives a one-line summary per image.
        margin: framing margin (`mv3d.preprocess.preprocess_image`).
        matte: how opaque inputs are matted (`mv3d.matting.matte`: auto, learned, color or none).

    Returns:
        one `GenerateResult` per image, in order.
    """
    from tqdm.auto import tqdm

    if not images:
        raise InputError("no input image given: expected one or more image files")
    settings = (settings if settings is not None else GenerateSettings()).updated(**options)
    paths = [Path(p) for p in images]
    check_matte_method(matte)  # even when every input is RGBA (its alpha wins), a bad value is an error
    dirs = output_dirs(paths, out_dir)
    cams = settings.build_orbit()
    if generator is None:
        resolve_model(model)  # a missing model fails before any work

    # Stage 1 for every image first: bad input fails before the (slow) model load.
    side = generator.resolution if generator is not None else settings.resolution or INPUT_SIDE
    prepped: list[tuple[PreprocessResult, float]] = []
    for p in paths:
        t = time.perf_counter()
        pre = preprocess_image(p, side, margin=margin, background=TRAINING_BACKGROUND, matte_method=matte)
        prepped.append((pre, time.perf_counter() - t))

    t = time.perf_counter()
    if generator is None:
        generator = ViewGenerator.load(model, device, settings, dtype=dtype, speed=speed)
    load_s = time.perf_counter() - t
    generator.check_orbit(cams)
    record = generator.settings()

    results: list[GenerateResult] = []
    bar = tqdm(total=len(paths), desc="images", unit="image", disable=not progress or len(paths) == 1)
    for path, final, (pre, pre_s) in zip(paths, dirs, prepped, strict=True):
        job = {
            "image_sha256": file_sha256(path),
            **record,
            "seed": int(settings.seed),
            "orbit": cams.to_dict(),
            "margin": margin,
            "matte": matte,
            "mesh": bool(mesh),
            "reconstruct_options": reconstruct_options or {},
        }
        done = finished_run(final, job)
        if done is not None:  # resume: a batch killed half way does not redo finished images
            results.append(done)
            if log is not None:
                log(f"{path} -> {final} (already generated with the same settings: kept)")
            bar.update(1)
            continue
        timings: dict[str, float] = {"preprocess": pre_s}
        if len(results) == 0:
            timings["load_model"] = load_s
        t = time.perf_counter()
        views = generator(pre.rgba, cams, seed=settings.seed, progress=progress)
        timings["sample"] = time.perf_counter() - t
        result = _write_one(
            path, final, pre, views, cams, generator, job, timings, mesh, progress, reconstruct_options
        )
        results.append(result)
        if log is not None:
            log(result.summary())
            for n in result.warnings:
                log(f"  warning: {n}")
        bar.update(1)
    bar.close()
    return results
