"""The image -> views -> mesh job behind `mv3d generate`.

For each image, in a hidden work folder renamed into place at the end (a failed run leaves no folder
that looks complete):

1. preprocess: matte, frame like a default render (`mv3d.preprocess`) -> `input.png`;
2. sample: the camera-conditioned video prior turns it into N views (`ViewGenerator`) -> `views/*.png`
   and `transforms.json` (an orbit dataset, so the folder can be reconstructed, evaluated or handed to
   nerfstudio), and `orbit.gif`, a turntable of the views; then `run.json` with the mesh pending;
3. reconstruct: the views and their cameras -> `mesh.glb` (`mv3d.reconstruct`), unless `mesh=False`;
4. `run.json`: the model and its hash, the settings, per-stage timings, versions (`mv3d.generate.record`).

Before anything slow, every setting is checked against the model's facts (`check_settings`, from its
mv3d_model.json: no weights are read) and every output folder against its run.json: an identical rerun
answers without loading the model, a rerun with other settings into a finished folder is refused unless
`overwrite`, and the views of a killed or interrupted run with the same settings are reused, so only
the mesh is computed (`mv3d.generate.record`). Ctrl-C raises `GenerateInterrupted`, which says what was
kept.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mv3d.generate.record import (
    RUN_FILE,
    GenerateResult,
    file_sha256,
    find_work_folder,
    finished_run,
    new_work_folder,
    output_dirs,
    publish,
    read_run,
    settings_difference,
    versions,
)
from mv3d.generate.settings import GenerateSettings, SettingError
from mv3d.generate.views import ViewGenerator, check_settings, model_limits
from mv3d.matting import check_method as check_matte_method
from mv3d.preprocess import DEFAULT_MARGIN, PreprocessResult, preprocess_image, to_uint8
from render.cameras import Orbit
from render.common import InputError, atomic_write_json, check_output, write_output_marker
from render.dataset import WHITE, composite, read_orbit_dataset, write_orbit_dataset

__all__ = ["GenerateInterrupted", "INPUT_SIDE", "TRAINING_BACKGROUND", "generate", "turntable_gif"]

#: Background the video prior was trained on (the input is framed and composited on it).
TRAINING_BACKGROUND = WHITE
#: Side in pixels of the framed input (`input.png`) when neither the settings nor a loaded generator
#: give the view size (the model is loaded after every input is checked).
INPUT_SIDE = 576


class GenerateInterrupted(KeyboardInterrupt):
    """Ctrl-C during `generate`; its message says what was kept (one line, for the command line)."""


def turntable_gif(
    views: np.ndarray, background: Sequence[float] = TRAINING_BACKGROUND, fps: float = 10.0
) -> bytes:
    """A looping GIF of (N, H, W, 4) uint8 views composited on `background`."""
    from PIL import Image

    frames = [Image.fromarray(to_uint8(composite(v, background)), "RGB") for v in views]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def mesh_options(
    options: dict[str, Any] | None, model_method: str | None, model: str = "default"
) -> dict[str, Any]:
    """The reconstruction options of a generation: the caller's, with the model's `default_mesh_method`
    as the method when the caller names none (`SettingError` for a name mv3d.reconstruct lacks)."""
    from mv3d.reconstruct import check_method

    options = dict(options or {})
    if model_method is not None and "method" not in options:
        name = "the default model" if model == "default" else f"model {model}"
        try:
            options["method"] = check_method(model_method, label=f"{name} names the mesh method")
        except InputError as exc:  # the model's info is at fault, not a setting of the call
            raise SettingError("model", model, str(exc)) from None
    return options


def check_reconstruct_options(options: Any) -> None:
    """`InputError` naming `reconstruct_options` unless it is None or a dict of
    `mv3d.reconstruct.reconstruct`'s keyword arguments (its `method` one of `METHODS`), before any work:
    a misspelt key was a TypeError, and an unknown method a "no mesh" note, after the views were sampled."""
    import inspect

    from mv3d.reconstruct import check_method, reconstruct

    if options is None:
        return
    if not isinstance(options, dict):
        raise InputError(
            f"reconstruct_options {options!r}: expected a dict of mv3d.reconstruct.reconstruct's arguments",
            field="reconstruct_options",
        )
    known = [n for n in inspect.signature(reconstruct).parameters if n not in ("views", "out")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(
            f"reconstruct_options {unknown}: expected keys among {', '.join(known)} "
            "(mv3d.reconstruct.reconstruct's arguments)",
            field="reconstruct_options",
        )
    if "method" in options:
        check_method(options["method"], "reconstruct_options", "reconstruct_options method")


def _python_warning(line: str) -> None:
    """A settings warning as Python's `warnings.warn`, attributed to `generate`'s caller."""
    warnings.warn(line.removeprefix("warning: "), UserWarning, stacklevel=3)


def _reconstruct(
    views_dir: Path, out_path: Path, seed: int, device: str, progress: bool, options: dict[str, Any] | None
) -> tuple[Path | None, list[str], dict[str, Any]]:
    """Reconstruct `views_dir` into `out_path`; (path or None, warnings, info for run.json).

    A generation whose views admit no mesh (the reconstruction's `InputError`, e.g. views without a
    common object) keeps its views: the mesh is skipped with a warning instead of losing the run.
    """
    from mv3d.reconstruct import DEFAULT_METHOD, reconstruct

    # the method named even when neither caller nor model names one: the library would otherwise read
    # the work folder's run.json for it
    kwargs = {
        "method": DEFAULT_METHOD,
        "seed": seed,
        "device": device,
        "progress": progress,
        **(options or {}),
    }
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


def _write_views(
    work: Path,
    path: Path,
    pre: PreprocessResult,
    views: np.ndarray,
    cams: Orbit,
    generator: ViewGenerator,
    seed: int,
) -> None:
    """Stage 2's files of one image into `work`: input.png, views/, transforms.json, orbit.gif."""
    from PIL import Image

    background = generator.background
    buf = io.BytesIO()
    Image.fromarray(pre.rgba, "RGBA").save(buf, "PNG")
    write_orbit_dataset(
        work,
        views,
        cams,
        background=background,
        renderer={"name": "mv3d generate", "settings": {**generator.settings(), "seed": seed}},
        object_info={"id": path.stem, "source": str(path)},
        extra_files={"input.png": buf.getvalue(), "orbit.gif": turntable_gif(views, background)},
    )


def _run_record(
    path: Path,
    job: dict[str, Any],
    cams: Orbit,
    pre: dict[str, Any],
    recon_info: dict[str, Any] | None,
    notes: list[str],
    timings: dict[str, float],
    pending: list[str],
) -> dict[str, Any]:
    """The run.json of one image (`pending`: stages still to do, empty once the folder is finished)."""
    return {
        "image": str(path),
        **job,
        "views": len(cams),
        "elevation_deg": float(cams.elevation_deg[0]),
        "preprocess": pre,
        "reconstruction": recon_info,
        "warnings": notes,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "pending": pending,
        "versions": versions(),
    }


def _finished_or_refuse(final: Path, job: dict[str, Any], overwrite: bool) -> bool:
    """Whether `final` holds a finished generation of this job. `SettingError` (nothing is changed) if
    it holds one made with other settings and `overwrite` is False."""
    run = read_run(final)
    if run is None or run.get("pending"):
        return False
    diff = settings_difference(run, job)
    if not diff:
        return True
    if not overwrite:
        raise SettingError(
            "out_dir",
            final,
            f"holds a finished generation made with other settings ({diff}); nothing was changed: "
            "pass overwrite=True to replace it, or choose another output folder",
            mentions=("overwrite",),
        )
    return False


def generate(
    images: str | os.PathLike | Sequence[str | os.PathLike],
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
    warn: Callable[[str], None] | None = None,
    reconstruct_options: dict[str, Any] | None = None,
    dtype: Any = None,
    speed: Any = None,
    matte: str = "auto",
    overwrite: bool = False,
    **options: Any,
) -> list[GenerateResult]:
    """Generate views (and a mesh) for each image; see the module docstring for the folder layout.

    Every input and setting is checked, every input preprocessed and every output folder looked at
    before the model loads, so bad input fails in a second with one line, and a rerun with nothing to
    do never loads the model.

    Args:
        images: an input image file, or a list of them (a batch: one folder each under `out_dir`).
        out_dir: the output folder (`mv3d.generate.record.output_dirs`).
        settings: what to generate and how to sample (`GenerateSettings`); `options` (its field names,
            e.g. ``views=21, seed=3``) replace single fields.
        model, device, dtype, speed: the model to load (`ViewGenerator.load`); ignored, with the
            sampling settings, when `generator` (an already loaded `ViewGenerator`) is given.
        mesh: reconstruct a mesh; `reconstruct_options` (a dict of its keyword arguments, checked
            before any work) go to `mv3d.reconstruct.reconstruct`, the model's `default_mesh_method`
            being the method unless they name one.
        progress: progress bars; `log` receives a one-line summary per image, `warn` (default `log`;
            with neither, Python's `warnings.warn`, a `UserWarning`) one line per setting outside what
            the model was trained on (``warning: field value: ...``).
        margin: framing margin (`mv3d.preprocess.preprocess_image`).
        matte: how opaque inputs are matted (`mv3d.matting.matte`: auto, learned, color or none).
        overwrite: replace a finished folder made with other settings (otherwise `SettingError` on
            "out_dir", before anything is changed).

    Returns:
        one `GenerateResult` per image, in order.

    Raises:
        GenerateInterrupted: on Ctrl-C; finished images and finished views are kept (a rerun resumes).
    """
    from tqdm.auto import tqdm

    if isinstance(images, (str, os.PathLike)):  # one image (a str was a batch of its characters)
        images = [images]
    if not images:
        raise InputError("no input image given: expected one or more image files")
    settings = (settings if settings is not None else GenerateSettings()).updated(**options)
    paths = [Path(p) for p in images]
    check_matte_method(matte)  # even when every input is RGBA (its alpha wins), a bad value is an error
    check_reconstruct_options(reconstruct_options)
    if isinstance(speed, dict):  # a bad name is one line now, not after every input is matted
        from video_prior.speed import SpeedOptions

        SpeedOptions(**speed)
    dirs = output_dirs(paths, out_dir, overwrite)
    cams = settings.build_orbit()
    warn = warn if warn is not None else log if log is not None else _python_warning
    if generator is None:
        # The model's facts (mv3d_model.json, no weights): impossible settings fail here, in a second.
        _, limits = model_limits(model)
        for w in check_settings(limits, settings, cams, str(model)):
            warn(f"warning: {w}")
        record = ViewGenerator.planned_settings(model, device, settings, dtype)
        model_mesh_method = limits.default_mesh_method
    else:
        generator.check_orbit(cams)
        record = generator.settings()
        model_mesh_method = generator.pipeline.info.default_mesh_method
    if mesh:
        reconstruct_options = mesh_options(reconstruct_options, model_mesh_method, str(model))
        mesh_opts = reconstruct_options
    else:
        # Recorded in run.json so that `mv3d reconstruct` meshes a --no-mesh generation later as its
        # model would (its job keys stay as they were; a method mv3d lacks is not looked at here).
        from mv3d.reconstruct import METHODS

        method = (reconstruct_options or {}).get("method", model_mesh_method)
        mesh_opts = {"method": method} if method in METHODS else None

    jobs = []
    side = generator.resolution if generator is not None else int(record["resolution"])
    for path, final in zip(paths, dirs, strict=True):
        if not path.is_file():  # preprocessing says what is wrong with it, in one line
            preprocess_image(path, side, margin=margin, background=TRAINING_BACKGROUND, matte_method=matte)
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
        jobs.append((job, _finished_or_refuse(final, job, overwrite)))  # refusals before any change

    # Stage 1 for every image not finished yet: bad input fails before the (slow) model load. A
    # photograph's learned matte takes seconds: a batch's bar counts them, cleared when done (as the
    # images bar, none for one image: its bad input stays the one line the CLI prints).
    prepped: list[tuple[PreprocessResult | None, float]] = []
    todo = sum(not done for _, done in jobs)
    pre_bar = tqdm(
        total=todo, desc="preprocessing", unit="image", leave=False, disable=not progress or todo < 2
    )
    try:
        for p, (_, done) in zip(paths, jobs, strict=True):
            t = time.perf_counter()
            pre = None
            if not done:
                pre = preprocess_image(
                    p, side, margin=margin, background=TRAINING_BACKGROUND, matte_method=matte
                )
                pre_bar.update(1)
            prepped.append((pre, time.perf_counter() - t))
    finally:
        pre_bar.close()

    results: list[GenerateResult] = []
    load_s: float | None = None
    bar = tqdm(total=len(paths), desc="images", unit="image", disable=not progress or len(paths) == 1)
    for path, final, (pre, pre_s), (job, done) in zip(paths, dirs, prepped, jobs, strict=True):
        finished = finished_run(final, job) if done else None
        if finished is None and pre is None:  # a finished folder that no longer reads: made anew
            t = time.perf_counter()
            pre = preprocess_image(
                path, side, margin=margin, background=TRAINING_BACKGROUND, matte_method=matte
            )
            pre_s = time.perf_counter() - t
        if finished is not None:  # resume: an identical rerun, or a batch killed half way
            results.append(finished)
            if log is not None:
                log(f"{path} -> {final} (already generated with the same settings: kept)")
            bar.update(1)
            continue
        work, notes = find_work_folder(final, job)
        kept = read_run(work) if work is not None else None
        if work is None:
            if generator is None:
                t = time.perf_counter()
                generator = ViewGenerator.load(model, device, settings, dtype=dtype, speed=speed)
                load_s = time.perf_counter() - t
                if generator.settings() != record:  # the plan decided what to resume: it must be exact
                    raise RuntimeError(
                        f"planned settings {record} differ from the loaded {generator.settings()}"
                    )
            work = new_work_folder(final)
        try:
            result = _generate_one(
                path,
                final,
                work,
                kept,
                pre,
                pre_s,
                cams,
                generator,
                job,
                settings.seed,
                mesh,
                progress,
                mesh_opts,
                record["device"] if generator is None else generator.device,
                load_s,
                notes,
                overwrite,
            )
        except KeyboardInterrupt:
            views_kept = read_run(work) is not None if work.exists() else False
            if not views_kept:
                shutil.rmtree(work, ignore_errors=True)
            bar.close()
            done_here = f"{len(results)} finished image(s) kept; " if len(paths) > 1 else ""
            if views_kept:
                what = f"the views of {path} kept in {work}: rerun the same command to compute only the mesh"
            else:
                what = f"{path} was stopped before its views were written: nothing of it kept"
            raise GenerateInterrupted(f"{done_here}{what}") from None
        except BaseException:
            if work.exists() and read_run(work) is None:  # nothing finished: a failed run leaves nothing
                shutil.rmtree(work, ignore_errors=True)
            raise
        load_s = None  # the load is counted in the first image that needed it
        results.append(result)
        if log is not None:
            log(result.summary())
            for n in result.warnings:
                log(f"  warning: {n}")
        bar.update(1)
    bar.close()
    return results


def _generate_one(
    path: Path,
    final: Path,
    work: Path,
    kept: dict[str, Any] | None,
    pre: PreprocessResult,
    pre_s: float,
    cams: Orbit,
    generator: ViewGenerator | None,
    job: dict[str, Any],
    seed: int,
    mesh: bool,
    progress: bool,
    reconstruct_options: dict[str, Any] | None,
    device: str,
    load_s: float | None,
    resume_notes: list[str],
    overwrite: bool = False,
) -> GenerateResult:
    """Stages 2-4 of one image in `work` (whose run.json `kept`, if any, says its views are written),
    then `work` renamed onto `final`."""
    preprocess = {
        "matte": job["matte"],
        "matte_method": pre.matte_method,
        "margin": job["margin"],
        "source_size": list(pre.source_size),
        "warnings": pre.warnings,
    }
    notes = list(pre.warnings)
    if kept is None:  # stages 2 and 3 (sample, write)
        assert generator is not None
        timings: dict[str, float] = {"preprocess": pre_s}
        if load_s is not None:
            timings["load_model"] = load_s
        t = time.perf_counter()
        views = generator(pre.rgba, cams, seed=seed, progress=progress)
        timings["sample"] = time.perf_counter() - t
        t = time.perf_counter()
        _write_views(work, path, pre, views, cams, generator, seed)
        timings["write"] = time.perf_counter() - t
        pending = ["mesh"] if mesh else []
        # The views are finished: from here on, a kill or Ctrl-C keeps them for the next run.
        atomic_write_json(
            work / RUN_FILE, _run_record(path, job, cams, preprocess, None, notes, timings, pending)
        )
    else:  # the views of an interrupted run with the same settings
        (work / "mesh.glb").unlink(missing_ok=True)  # a mesh stage that was cut short
        views = read_orbit_dataset(work).load_images()
        timings = {
            k: float(v) for k, v in kept.get("timings_s", {}).items() if k not in ("reconstruct", "total")
        }
        notes = list(kept.get("warnings", notes))

    mesh_path, recon_info = None, None
    if mesh:
        t = time.perf_counter()
        written, recon_notes, recon_info = _reconstruct(
            work, work / "mesh.glb", seed, device, progress, reconstruct_options
        )
        notes += [n.replace(str(work), str(final)).replace(work.name, final.name) for n in recon_notes]
        mesh_path = final / "mesh.glb" if written is not None else None
        timings["reconstruct"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    run = _run_record(path, job, cams, preprocess, recon_info, notes, timings, [])
    if not mesh and reconstruct_options and "method" in reconstruct_options:
        run["mesh_method"] = reconstruct_options["method"]  # what `mv3d reconstruct` meshes it with
    if resume_notes:
        run["resumed"] = resume_notes
    atomic_write_json(work / RUN_FILE, run)
    write_output_marker(work, "generate")
    check_output(final, "generate", overwrite, field="out_dir")  # again just before the rename
    publish(work, final)
    return GenerateResult(path, final, views, mesh_path, timings, notes, run)
