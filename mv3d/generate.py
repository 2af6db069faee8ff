"""The image -> views -> mesh job behind `mv3d generate`.

    generate(["chair.png"], "outputs/chair", model="default", views=21)

For each image, in a temporary folder renamed into place at the end (a failed run leaves no folder
that looks complete):

1. preprocess: matte, frame like a default render, resize (`mv3d.preprocess`) -> `input.png`;
2. sample: the camera-conditioned video prior turns it into N views (`ViewGenerator`) -> `views/*.png`
   and `transforms.json` (an orbit dataset, so the folder can be reconstructed, evaluated or handed to
   nerfstudio), and `orbit.gif`, a turntable of the views;
3. reconstruct: the views and their cameras -> `mesh.glb` (`mv3d.reconstruct`), unless `mesh=False`;
4. `run.json`: the model and its hash, sampler, steps, guidance, seed, per-stage timings, versions.

`ViewGenerator` is the reusable part (also used by `mv3d eval`): a loaded model that maps one framed
RGBA image and an orbit to N RGBA views.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mv3d.matting import check_method as check_matte_method
from mv3d.models import model_hash, resolve_model
from mv3d.preprocess import DEFAULT_MARGIN, PreprocessResult, preprocess_image, to_uint8
from render.cameras import DEFAULT_ELEVATION_DEG, Orbit, dynamic_orbit, static_orbit
from render.common import InputError, atomic_output
from render.dataset import WHITE, composite, read_orbit_dataset, write_orbit_dataset

#: Background the video prior was trained on (views are generated composited on it).
TRAINING_BACKGROUND = WHITE
#: Soft threshold on the distance of a generated pixel from the white background (max over RGB, in
#: [0, 1]): below ALPHA_LOW it is background (alpha 0), above ALPHA_HIGH object (alpha 1), linear in
#: between. JPEG-free 8-bit decodes of a white background stay well under 0.02.
ALPHA_LOW = 0.02
ALPHA_HIGH = 0.10
ORBIT_KINDS = ("static", "dynamic")
RUN_FILE = "run.json"
#: Sampling defaults (SV3D's reference): Euler, per-frame triangle guidance from 1.0 to 2.5.
DEFAULT_SAMPLER = "euler"
DEFAULT_GUIDANCE = "triangle"
DEFAULT_MIN_GUIDANCE = 1.0
DEFAULT_MAX_GUIDANCE = 2.5
#: --dtype names (torch dtypes)
DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; "cpu"/"cuda"/"cuda:N" are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {device}: no CUDA GPU is visible to torch on this machine: use --device cpu"
            )
        return device
    raise InputError(f"--device {device}: expected auto, cpu or cuda")


def alpha_from_background(
    rgb: np.ndarray,
    background: Sequence[float] = TRAINING_BACKGROUND,
    low: float = ALPHA_LOW,
    high: float = ALPHA_HIGH,
) -> np.ndarray:
    """RGBA views from RGB views generated on the (white) training background, with a soft-threshold alpha.

    The model paints the object on its training background; a pixel's alpha is a linear ramp of its
    distance from the background colour (max over channels) between `low` and `high`. Holes enclosed by
    the object are filled (a white highlight or label inside the object is not background; carving it
    away would punch holes in the reconstruction), and colours at soft edges are un-mixed from the
    background, so the RGBA composited back on it reproduces the generated image.

    Args:
        rgb: (N, H, W, 3) float in [0, 1].
        background: RGB in [0, 1].
    Returns:
        (N, H, W, 4) uint8 RGBA, straight alpha.
    """
    from scipy import ndimage

    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    bg = np.asarray(background, dtype=np.float32)
    dist = np.abs(rgb - bg).max(axis=-1)
    alpha = np.clip((dist - low) / (high - low), 0.0, 1.0)
    for i in range(alpha.shape[0]):
        solid = alpha[i] > 0.5
        holes = ndimage.binary_fill_holes(solid) & ~solid
        alpha[i][holes] = 1.0
    return unmix_background(rgb, alpha, bg)


def unmix_background(rgb: np.ndarray, alpha: np.ndarray, background: Sequence[float]) -> np.ndarray:
    """Straight-alpha RGBA from colours composited on `background` and their alpha.

    Args:
        rgb: (N, H, W, 3) float in [0, 1], composited on the background.
        alpha: (N, H, W) float in [0, 1].
    Returns:
        (N, H, W, 4) uint8 RGBA whose composite on the background reproduces `rgb`.
    """
    bg = np.asarray(background, dtype=np.float32)
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    fg = np.where(a > 1e-3, (rgb - (1.0 - a) * bg) / np.maximum(a, 1e-3), 0.0)
    return np.concatenate([to_uint8(fg), to_uint8(a)], axis=-1)


def build_orbit(
    orbit: str | Path | Orbit = "static",
    views: int = 21,
    elevation: float = DEFAULT_ELEVATION_DEG,
    seed: int = 0,
) -> Orbit:
    """The cameras to generate: "static", "dynamic" (seeded), an `Orbit`, or a JSON file (`Orbit.to_dict`).

    A JSON orbit's own view count and elevations win over `views` and `elevation`.
    """
    if isinstance(orbit, Orbit):
        return orbit
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise InputError(f"--views {views}: expected a positive whole number of views")
    if not -90.0 <= float(elevation) <= 90.0:
        raise InputError(f"--elevation {elevation}: expected degrees in [-90, 90]")
    if str(orbit) == "static":
        return static_orbit(views, float(elevation))
    if str(orbit) == "dynamic":
        return dynamic_orbit(views, float(elevation), seed=seed)
    path = Path(orbit)
    if path.suffix.lower() != ".json":
        raise InputError(f"--orbit {orbit}: expected static, dynamic or a .json orbit file")
    if not path.is_file():
        raise InputError(f"--orbit {orbit}: orbit file does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--orbit {orbit}: not valid JSON ({exc})") from exc
    return Orbit.from_dict(data, source=str(path))


class ViewGenerator:
    """A loaded multi-view model: framed RGBA image + orbit -> N RGBA views.

    Attributes:
        pipeline: the `video_prior.pipeline.MultiViewPipeline`.
        model: what was asked for ("default" or a path); model_path: the folder loaded.
        model_hash: short sha256 of the weights and configs (`mv3d.models.model_hash`).
        resolution: side of the generated views in pixels.
        device: where the model runs ("cpu", "cuda").
        steps, sampler, guidance, min_guidance, max_guidance: the sampling settings in effect.
        keep_input_view: frame 0 is the input image itself (with its own alpha), as in SV3D's reference.
        ensemble: samples averaged per generation (`MultiViewPipeline.__call__`; the model's default when
            None was given).
    """

    def __init__(
        self,
        pipeline: Any,
        model: str = "custom",
        model_path: Path | None = None,
        model_hash: str = "",
        resolution: int | None = None,
        device: str = "cpu",
        steps: int | None = None,
        sampler: str = DEFAULT_SAMPLER,
        guidance: str = DEFAULT_GUIDANCE,
        min_guidance: float = DEFAULT_MIN_GUIDANCE,
        max_guidance: float = DEFAULT_MAX_GUIDANCE,
        keep_input_view: bool = True,
        ensemble: int | None = None,
    ):
        self.pipeline = pipeline
        self.model = model
        self.model_path = model_path
        self.model_hash = model_hash
        self.resolution = int(resolution or pipeline.resolution)
        self.device = device
        self.steps = int(steps if steps is not None else pipeline.info.default_steps)
        self.sampler = sampler
        self.guidance = guidance
        self.min_guidance = float(min_guidance)
        self.max_guidance = float(max_guidance)
        self.keep_input_view = keep_input_view
        self.ensemble = int(ensemble if ensemble is not None else pipeline.info.default_ensemble)

    @property
    def background(self) -> tuple[float, float, float]:
        """The model's training background, RGB in [0, 1]."""
        return tuple(float(c) for c in self.pipeline.info.background)

    @property
    def num_frames(self) -> int | None:
        """The fixed number of views the model generates, or None if any count works."""
        return self.pipeline.info.num_frames

    @classmethod
    def load(
        cls,
        model: str | Path = "default",
        device: str = "auto",
        steps: int | None = None,
        sampler: str | None = None,
        guidance: str | None = None,
        min_guidance: float | None = None,
        max_guidance: float | None = None,
        resolution: int | None = None,
        dtype: Any = None,
        keep_input_view: bool = True,
        speed: Any = None,
        ensemble: int | None = None,
    ) -> ViewGenerator:
        """Resolve `model` ("default" or a folder), check the settings, load the pipeline on `device`.

        None for a setting means the default: the model's own step count, Euler, SV3D's triangle
        guidance from 1.0 to 2.5. `dtype` (a torch dtype or "float32"/"bfloat16"/"float16") defaults to
        float16 on CUDA and float32 on the CPU. `resolution` overrides the model's native view size (a
        multiple of its latent grid). `speed` is a `video_prior.speed.SpeedOptions` (or a dict of its
        fields: attention, channels_last, compile, offload, ...), applied after loading.
        """
        import torch

        from video_prior.guidance import GUIDANCE_KINDS
        from video_prior.samplers import get_sampler

        path = resolve_model(model)
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
            raise InputError(f"--steps {steps}: expected a positive whole number")
        if ensemble is not None and (isinstance(ensemble, bool) or int(ensemble) != ensemble or ensemble < 1):
            raise InputError(f"--ensemble {ensemble}: expected a positive whole number of samples")
        sampler = DEFAULT_SAMPLER if sampler is None else sampler
        get_sampler(sampler)
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        if guidance not in GUIDANCE_KINDS:
            raise InputError(f"--guidance {guidance}: expected one of {', '.join(GUIDANCE_KINDS)}")
        min_guidance = DEFAULT_MIN_GUIDANCE if min_guidance is None else float(min_guidance)
        max_guidance = DEFAULT_MAX_GUIDANCE if max_guidance is None else float(max_guidance)
        for name, value in (("--min-guidance", min_guidance), ("--max-guidance", max_guidance)):
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"{name} {value}: expected a non-negative number")
        if resolution is not None and (int(resolution) != resolution or resolution < 16):
            raise InputError(f"--resolution {resolution}: expected a whole number of pixels, at least 16")
        dev = resolve_device(device)
        if dtype is None:
            dtype = torch.float16 if dev.startswith("cuda") else torch.float32
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise InputError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
            dtype = getattr(torch, dtype)
        if isinstance(speed, dict):
            from video_prior.speed import SpeedOptions

            speed = SpeedOptions(**{"offload_device": dev, **speed})
        pipeline = _load_pipeline(path, dev, dtype)
        if speed is not None:
            pipeline.apply_speed_options(speed)
        if resolution is not None:
            grid = pipeline.vae_scale_factor * 2 ** int(pipeline.unet.num_upsamplers)
            if resolution % grid:
                raise InputError(f"--resolution {resolution}: expected a multiple of {grid} for this model")
        return cls(
            pipeline,
            str(model),
            path,
            model_hash(path),
            resolution,
            dev,
            steps,
            sampler,
            guidance,
            min_guidance,
            max_guidance,
            keep_input_view,
            ensemble=ensemble,
        )

    def settings(self) -> dict[str, Any]:
        """The settings in effect, for run.json."""
        return {
            "model": self.model,
            "model_path": str(self.model_path) if self.model_path is not None else None,
            "model_hash": self.model_hash,
            "resolution": self.resolution,
            "device": self.device,
            "dtype": str(self.pipeline.dtype).replace("torch.", ""),
            "steps": self.steps,
            "ensemble": self.ensemble,
            "sampler": self.sampler,
            "guidance": self.guidance,
            "min_guidance": self.min_guidance,
            "max_guidance": self.max_guidance,
            "keep_input_view": self.keep_input_view,
        }

    def check_orbit(self, orbit: Orbit) -> None:
        """`InputError` if the model cannot generate this many views."""
        if self.num_frames is not None and len(orbit) != self.num_frames:
            raise InputError(
                f"--views {len(orbit)}: this model generates exactly {self.num_frames} views "
                f"(model {self.model})"
            )

    def __call__(
        self,
        image_rgba: np.ndarray,
        orbit: Orbit,
        seed: int = 0,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Generate the views of `orbit` from one framed image.

        Args:
            image_rgba: (H, W, 4) uint8 RGBA (or (H, W, 3) RGB), square and already framed like a
                default render (a render, or `preprocess_image` output); only resized here.
            orbit: N cameras; frame 0 is the input view.
            seed: same seed, same views on the same device.
            progress: show a tqdm bar over the sampling steps.
            callback: called as callback(step, total_steps) after each sampling step.
        Returns:
            (N, R, R, 4) uint8 RGBA, straight alpha (the model's own for an alpha model, else from
            `alpha_from_background`); frame 0 is the input
            itself when `keep_input_view`, else the generated frame.
        """
        import torch

        self.check_orbit(orbit)
        image = resize_rgba(np.asarray(image_rgba), self.resolution)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        out = self.pipeline(
            image,
            orbit,
            num_inference_steps=self.steps,
            ensemble=self.ensemble,
            sampler=self.sampler,
            guidance=self.guidance,
            min_guidance=self.min_guidance,
            max_guidance=self.max_guidance,
            generator=generator,
            callback=callback,
            output_type="np",
            height=self.resolution,
            width=self.resolution,
            progress=progress,
        )
        frames = np.asarray(out.frames)
        if frames.shape[-1] == 4:  # an alpha model paints its own matte
            views = unmix_background(frames[..., :3], frames[..., 3], self.background)
        else:
            views = alpha_from_background(frames, self.background)  # (N, R, R, 4)
        if self.keep_input_view:
            views[0] = image
        return views


def resize_rgba(rgba: np.ndarray, size: int) -> np.ndarray:
    """A square (H, W, 4) uint8 RGBA (or RGB) image -> (size, size, 4), Lanczos on premultiplied alpha."""
    from mv3d.preprocess import frame_object

    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4) or rgba.dtype != np.uint8:
        raise InputError(
            f"input image of shape {rgba.shape} and dtype {rgba.dtype}: expected (H, W, 4) uint8 RGBA"
        )
    if rgba.shape[2] == 3:
        rgba = np.concatenate([rgba, np.full(rgba.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    h, w = rgba.shape[:2]
    if h != w:
        raise InputError(f"input image is {w}x{h}: expected a square, framed image (see mv3d.preprocess)")
    if h == size:
        return rgba
    # The whole square as the "object box" with no margin: a pure resize.
    return to_uint8(frame_object(rgba.astype(np.float32) / 255.0, size, 0.0, (0, 0, w, h)))


def _load_pipeline(path: Path, device: str, dtype: Any) -> Any:
    """`MultiViewPipeline.from_pretrained`, with a broken model folder turned into one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from video_prior.pipeline import MultiViewPipeline

    # The libraries' own "Loading weights" bars would interleave with mv3d's per-stage bars and error
    # line; silence them for the load only.
    was = (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        return MultiViewPipeline.from_pretrained(path, device=device, dtype=dtype)
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise InputError(f"--model {path}: {exc}") from exc
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--model {path}: cannot load the model ({first})") from exc
    finally:
        if was[0]:
            transformers_logging.enable_progress_bar()
        if was[1]:
            diffusers_logging.enable_progress_bar()


# ------------------------------------------------------------------------------------------------
# The whole job
# ------------------------------------------------------------------------------------------------


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
        # A finished folder is replaced whole: never do that to a folder that is not a generation.
        if d.exists() and (not d.is_dir() or (any(d.iterdir()) and not (d / RUN_FILE).is_file())):
            raise InputError(
                f"--out {d}: exists and is not an mv3d generate output: expected a new or empty folder "
                "(or a previous generation to replace)"
            )
    return dirs


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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _finished_run(folder: Path, job: dict[str, Any]) -> GenerateResult | None:
    """The result already in `folder` if it was made from the same image with the same settings."""
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


def generate(
    images: Sequence[str | Path],
    out_dir: str | Path | None = None,
    model: str | Path = "default",
    views: int = 21,
    elevation: float = DEFAULT_ELEVATION_DEG,
    orbit: str | Path | Orbit = "static",
    steps: int | None = None,
    sampler: str | None = None,
    guidance: str | None = None,
    min_guidance: float | None = None,
    max_guidance: float | None = None,
    seed: int = 0,
    resolution: int | None = None,
    device: str = "auto",
    mesh: bool = True,
    progress: bool = True,
    generator: ViewGenerator | None = None,
    margin: float = DEFAULT_MARGIN,
    log: Callable[[str], None] | None = None,
    reconstruct_options: dict[str, Any] | None = None,
    dtype: Any = None,
    speed: Any = None,
    ensemble: int | None = None,
    matte: str = "auto",
) -> list[GenerateResult]:
    """Generate views (and a mesh) for each image; see the module docstring for the folder layout.

    Every input is checked and preprocessed before the model loads, so bad input fails in a second
    with one line. `generator` reuses an already loaded `ViewGenerator` (then the model arguments are
    ignored). `log` receives a one-line summary per image. `reconstruct_options` are passed to
    `mv3d.reconstruct.reconstruct` (method, resolution, texture, ...). `dtype`, `speed` and `ensemble` go
    to `ViewGenerator.load` (model dtype; `video_prior.speed.SpeedOptions` or a dict of its fields;
    samples averaged per image, None for the model's default). `matte` is how opaque inputs are matted
    (`mv3d.matting.matte`: auto, learned, color or none).

    Returns:
        one `GenerateResult` per image, in order.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if not images:
        raise InputError("no input image given: expected one or more image files")
    paths = [Path(p) for p in images]
    check_matte_method(matte)  # even when every input is RGBA (its alpha wins), a bad value is an error
    dirs = output_dirs(paths, out_dir)
    cams = build_orbit(orbit, views, elevation, seed)
    if generator is None:
        resolve_model(model)  # a missing model fails before any work

    # Stage 1 for every image first: bad input fails before the (slow) model load.
    prepped: list[tuple[PreprocessResult, float]] = []
    res_for_pre = resolution
    if generator is not None:
        res_for_pre = generator.resolution
    for p in paths:
        t = time.perf_counter()
        pre = preprocess_image(
            p, res_for_pre or 576, margin=margin, background=TRAINING_BACKGROUND, matte_method=matte
        )
        prepped.append((pre, time.perf_counter() - t))

    t = time.perf_counter()
    if generator is None:
        generator = ViewGenerator.load(
            model,
            device,
            steps,
            sampler,
            guidance,
            min_guidance,
            max_guidance,
            resolution=resolution,
            dtype=dtype,
            speed=speed,
            ensemble=ensemble,
        )
    load_s = time.perf_counter() - t
    generator.check_orbit(cams)
    settings = generator.settings()
    background = generator.background

    results: list[GenerateResult] = []
    bar = tqdm(total=len(paths), desc="images", unit="image", disable=not progress or len(paths) == 1)
    for path, final, (pre, pre_s) in zip(paths, dirs, prepped, strict=True):
        job = {
            "image_sha256": _file_sha256(path),
            **settings,
            "seed": int(seed),
            "orbit": cams.to_dict(),
            "margin": margin,
            "matte": matte,
            "mesh": bool(mesh),
            "reconstruct_options": reconstruct_options or {},
        }
        done = _finished_run(final, job)
        if done is not None:  # resume: a batch killed half way does not redo finished images
            results.append(done)
            if log is not None:
                log(f"{path} -> {final} (already generated with the same settings: kept)")
            bar.update(1)
            continue
        timings: dict[str, float] = {"preprocess": pre_s}
        if len(results) == 0:
            timings["load_model"] = load_s
        notes = list(pre.warnings)

        t = time.perf_counter()
        rgba = pre.rgba
        views_rgba = generator(rgba, cams, seed=seed, progress=progress)
        timings["sample"] = time.perf_counter() - t

        with atomic_output(final) as tmp:
            t = time.perf_counter()
            buf = io.BytesIO()
            Image.fromarray(pre.rgba, "RGBA").save(buf, "PNG")
            write_orbit_dataset(
                tmp,
                views_rgba,
                cams,
                background=background,
                renderer={"name": "mv3d generate", "settings": {**settings, "seed": seed}},
                object_info={"id": path.stem, "source": str(path)},
                extra_files={"input.png": buf.getvalue(), "orbit.gif": turntable_gif(views_rgba, background)},
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
                    "matte": matte,
                    "matte_method": pre.matte_method,
                    "margin": margin,
                    "source_size": list(pre.source_size),
                    "warnings": pre.warnings,
                },
                "reconstruction": recon_info,
                "warnings": notes,
                "timings_s": {k: round(v, 4) for k, v in timings.items()},
                "versions": versions(),
            }
            (tmp / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
        result = GenerateResult(path, final, views_rgba, mesh_path, timings, notes, run)
        results.append(result)
        if log is not None:
            log(result.summary())
            for n in notes:
                log(f"  warning: {n}")
        bar.update(1)
    bar.close()
    return results
