"""`mv3d demo`: a web page for image -> views -> mesh (Gradio), and the same functions as an API.

    mv3d demo                       # http://127.0.0.1:7860, the embedded default model
    mv3d demo --model PATH --host 0.0.0.0 --port 8080

One page: an image (upload, paste, or the bundled example) -> the matted and framed model input, shown as
soon as the image arrives -> Generate -> a turntable GIF and a gallery of the views -> an interactive 3D
viewer of the textured mesh -> downloads (`mesh.glb`, OBJ+MTL+PNG as a zip, the orbit dataset as a zip).

What the page promises, and where it is kept:

* Bad input is one readable line in the page, never a traceback: uploads are checked by file size and by
  the pixel count in the image header before anything is decoded (`check_upload`), and every
  `InputError` of the job becomes a `gr.Error` (a message box), other failures a one-line message.
* Several people at once: Gradio's queue runs one generation at a time (the model and the CPU are
  shared) and shows each waiting user their place in it; it refuses requests beyond `queue_size`.
  Each browser session writes into its own folder (`SessionFolders`), removed when the tab closes (a
  generation still running for it stops at its next stage), when the session starts a new generation,
  or after `session_ttl_s`; Gradio's own copies of the files it serves are removed after the same time
  (`delete_cache`).
* The page's functions are API endpoints (`/preprocess`, `/generate`) for `gradio_client`.

The generation job is `mv3d.generate.generate`; `_generate` is the one place that calls it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mv3d.reconstruct import detail_for_views
from render.cameras import DEFAULT_ELEVATION_DEG
from render.common import InputError, optional_import

log = logging.getLogger("mv3d.demo")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Largest upload, bytes: a 24 MP camera JPEG is 5-15 MB; a 16-bit PNG of a large render can reach 50 MB.
MAX_UPLOAD_BYTES = 50 * 2**20
#: Largest upload in pixels, read from the header before decoding. Lower than the command line's bound
#: (`mv3d.preprocess.MAX_IMAGE_PIXELS`, 400 MP): a shared server decodes for everyone, and 100 MP
#: (a 12 x 8k scan) already takes ~0.4 GB as 8-bit RGBA.
MAX_UPLOAD_PIXELS = 100_000_000
#: Requests allowed to wait in the queue (beyond it, Gradio answers "queue is full").
QUEUE_SIZE = 8
#: A session's files live at most this long (seconds), closed tab or not.
SESSION_TTL_S = 3600.0
#: Side of the preprocessed-input preview in pixels (the model itself may work at a smaller size).
PREVIEW_SIDE = 256
#: Voxel grid sizes offered for the mesh: 64 is what `mv3d generate` uses for 64 px views, 128 for
#: views of 128 px and more (`mv3d.reconstruct.detail_for_views`).
MESH_GRIDS = (64, 96, 128)
#: The mesh `mv3d generate` makes from the default model's 64 px views.
DEFAULT_MESH_GRID, DEFAULT_MESH_FACES, _ = detail_for_views(64)
ORBITS = ("static", "dynamic")
GLB_NAME = "mesh.glb"
OBJ_ZIP_NAME = "mesh_obj.zip"
DATASET_ZIP_NAME = "orbit_dataset.zip"
#: What the orbit-dataset zip holds from a generation folder (the mesh has its own downloads).
_DATASET_ENTRIES = ("views", "transforms.json", "input.png", "orbit.gif", "run.json")


def example_images() -> list[Path]:
    """The bundled example inputs (the repository's `examples/` folder), those present."""
    folder = Path(__file__).resolve().parents[2] / "examples"
    return [p for p in (folder / "example.png",) if p.is_file()]


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------


def _upload_names(path: str | Path) -> dict[str, str]:
    """The server's paths of an upload (Gradio's cache folder; resolved first, the longer) -> its name."""
    return {str(Path(path).resolve()): Path(path).name, str(Path(path)): Path(path).name}


def _as_upload(exc: InputError, path: str | Path, *folders: Path) -> InputError:
    """`exc` as the page shows it: the server's path of the upload (Gradio's cache folder) replaced by the
    file's name, and the server's own `folders` by "views", so that the line reveals no server path."""
    message = str(exc)
    for where, name in _upload_names(path).items():
        message = message.replace(where, name)
    for folder in folders:
        message = message.replace(str(folder), "views")
    return InputError(message, exc.field)


def check_upload(
    path: str | Path, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> tuple[int, int]:
    """Refuse an upload before decoding it: empty, too many bytes, not an image, too many pixels.

    Reads only the file size and the image header (Pillow's lazy open).

    Returns:
        (width, height) from the header.
    Raises:
        InputError: one line saying what is wrong with the file and what is expected.
    """
    from mv3d.preprocess import _check_size, _open_checked

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputError(f"{name}: no such file was received: expected an uploaded image")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{name}: the file is empty: expected an image (PNG, JPEG, WebP, ...)")
    if size > max_bytes:
        raise InputError(
            f"{name}: the file is {size / 2**20:.1f} MB: expected at most {max_bytes / 2**20:.0f} MB"
        )
    try:
        im = _open_checked(path)
    except InputError as exc:
        raise _as_upload(exc, path) from exc
    with im:
        w, h = im.size
    if w * h > max_pixels:
        raise InputError(
            f"{name}: the image is {w}x{h} = {w * h / 1e6:.0f} megapixels: expected at most "
            f"{max_pixels / 1e6:.0f} megapixels in this demo"
        )
    _check_size(w, h, name)
    return w, h


# ------------------------------------------------------------------------------------------------
# Per-session output folders
# ------------------------------------------------------------------------------------------------


class SessionFolders:
    """One folder per browser session under a private root; old ones removed.

    Layout: `root/<session key>/run-<id>/`. The key is a hash of Gradio's session id, so a folder name
    reveals nothing that could be replayed. Only folders under `root`, which this object created, are
    ever removed.
    """

    def __init__(self, ttl_s: float = SESSION_TTL_S, root: Path | None = None):
        self.ttl_s = float(ttl_s)
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="mv3d-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ended: dict[str, float] = {}  # session key -> when its tab was closed

    @staticmethod
    def key(session: str | None) -> str:
        """A folder name for a session id (a fresh random one when there is none)."""
        raw = session or uuid.uuid4().hex
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def new_run(self, session: str | None) -> Path:
        """An empty folder for the session's next generation; its previous runs are removed first."""
        self.sweep()
        folder = self.root / self.key(session)
        with self._lock:
            self._ended.pop(folder.name, None)
            if folder.is_dir():
                for old in folder.glob("run-*"):
                    shutil.rmtree(old, ignore_errors=True)
            run = folder / f"run-{uuid.uuid4().hex[:12]}"
            run.mkdir(parents=True)
        return run

    def end(self, session: str | None) -> None:
        """Remove a session's folder (the tab was closed); `ended` says so until its next `new_run`."""
        if session:
            key = self.key(session)
            with self._lock:
                self._ended[key] = time.time()
                shutil.rmtree(self.root / key, ignore_errors=True)

    def ended(self, session: str | None) -> bool:
        """Whether the session's tab was closed since its last `new_run` (a generation still running for
        it then stops at its next stage, and what it wrote is removed with `end` again)."""
        return bool(session) and self.key(session) in self._ended

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove session folders untouched for longer than `ttl_s`; returns what was removed."""
        now = time.time() if now is None else now
        removed = []
        with self._lock:
            for key in [k for k, t in self._ended.items() if now - t > self.ttl_s]:
                del self._ended[key]
            for folder in self.root.iterdir():
                if not (folder.is_dir() and re.fullmatch(r"[0-9a-f]{24}", folder.name)):
                    continue
                newest = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
                if now - newest > self.ttl_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        return removed

    def close(self) -> None:
        """Remove the whole root (server shutdown)."""
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The job behind the Generate button
# ------------------------------------------------------------------------------------------------


class SessionEnded(Exception):
    """Raised by a generation's progress report when its browser tab has been closed."""


@dataclass
class GenerationSettings:
    """What a user may change per generation (everything else is the loaded model's).

    Attributes:
        seed: same seed, same views on the same device.
        elevation: elevation of the input view, degrees.
        orbit: "static" (evenly spaced azimuths) or "dynamic" (SV3D-style, seeded).
        steps: sampling steps (None: the model's default).
        max_guidance: the guidance schedule's peak (None: the default; ignored by models without CFG).
        mesh: reconstruct a textured mesh.
        mesh_faces: decimate the mesh to at most this many faces.
        mesh_grid: voxel grid of the reconstruction (one of `MESH_GRIDS`).
    """

    seed: int = 0
    elevation: float = DEFAULT_ELEVATION_DEG
    orbit: str = "static"
    steps: int | None = None
    max_guidance: float | None = None
    mesh: bool = True
    mesh_faces: int = DEFAULT_MESH_FACES
    mesh_grid: int = DEFAULT_MESH_GRID

    def check(self) -> None:
        """`InputError` for a value the page's controls would not produce."""
        if self.orbit not in ORBITS:
            raise InputError(f"orbit '{self.orbit}': expected one of {', '.join(ORBITS)}")
        if not -90.0 <= float(self.elevation) <= 90.0:
            raise InputError(f"elevation {self.elevation}: expected degrees in [-90, 90]")
        if self.steps is not None and not 1 <= int(self.steps) <= 200:
            raise InputError(f"steps {self.steps}: expected a whole number from 1 to 200")
        if self.max_guidance is not None and not 1.0 <= float(self.max_guidance) <= 20.0:
            raise InputError(f"guidance {self.max_guidance}: expected a scale from 1 to 20")
        if self.mesh_grid not in MESH_GRIDS:
            raise InputError(f"mesh grid {self.mesh_grid}: expected one of {MESH_GRIDS}")
        if not 500 <= int(self.mesh_faces) <= 200000:
            raise InputError(f"mesh faces {self.mesh_faces}: expected 500 to 200000")
        if not 0 <= int(self.seed) < 2**63:
            raise InputError(f"seed {self.seed}: expected a whole number from 0")


@dataclass
class DemoResult:
    """One finished generation, as the page shows it.

    Attributes:
        folder: the generation folder (an orbit dataset, `mv3d generate`'s layout).
        views: the view PNGs, frame 0 first.
        turntable: the orbit as an animated GIF.
        glb, obj_zip: the mesh downloads, None without a mesh.
        dataset_zip: the orbit dataset (views, transforms.json, input, run.json) as a zip.
        timings: seconds per stage ("matting", "sampling", "mesh", ...).
        warnings: notes from preprocessing and reconstruction.
        faces: the mesh's face count (0 without a mesh).
    """

    folder: Path
    views: list[Path]
    turntable: Path
    glb: Path | None
    obj_zip: Path | None
    dataset_zip: Path
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    faces: int = 0

    def summary(self) -> str:
        """Markdown: the stages' times, the mesh size, the warnings."""
        stages = " · ".join(f"{k} {v:.1f} s" for k, v in self.timings.items() if k != "total")
        lines = [f"**Done in {self.timings.get('total', 0.0):.1f} s**: {stages}."]
        lines.append(
            f"{len(self.views)} views; mesh: {self.faces} faces."
            if self.glb
            else f"{len(self.views)} views; no mesh."
        )
        lines += [f"- note: {w}" for w in self.warnings]
        return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if len(lines) > 2 else "")


def _generate(view_generator: Any, image: Path, out_dir: Path, settings: GenerationSettings) -> Any:
    """The one call into `mv3d.generate`: image -> `out_dir` (input.png, views, transforms.json, orbit.gif,
    run.json), without the mesh (`reconstruct_mesh` makes it, so the page can show that stage apart).

    The loaded model is shared by every request; the per-request sampling settings go on a shallow copy
    of the `ViewGenerator` (the pipeline itself is not copied).

    Returns:
        the `mv3d.generate.GenerateResult` (`out_dir`, `views`, `timings`, `warnings`).
    """
    from mv3d.generate import generate

    gen = copy.copy(view_generator)
    gen.config = gen.config.updated(
        steps=None if settings.steps is None else int(settings.steps),
        max_guidance=None if settings.max_guidance is None else float(settings.max_guidance),
    )
    return generate(
        [image],
        out_dir,
        generator=gen,
        views=gen.num_frames or 21,
        elevation=float(settings.elevation),
        orbit=settings.orbit,
        seed=int(settings.seed),
        mesh=False,
        progress=True,  # tqdm bars: the page's progress follows them
    )[0]


def reconstruct_mesh(
    folder: Path, settings: GenerationSettings, device: str, model_method: str | None = None
) -> tuple[Path | None, int, list[str]]:
    """`folder` (a generation) -> `folder/mesh.glb`, as `mv3d generate` would make it with these settings
    (with the model's `default_mesh_method`, `model_method`, when it names one).

    Returns:
        (the GLB or None, its face count, notes). Views that admit no mesh keep the generation: the
        mesh is skipped with a note, as `mv3d generate` does.
    """
    from mv3d.generate.job import mesh_options
    from mv3d.reconstruct import DEFAULT_METHOD, reconstruct

    try:
        result = reconstruct(
            folder,
            folder / GLB_NAME,
            resolution=int(settings.mesh_grid),
            target_faces=int(settings.mesh_faces),
            seed=int(settings.seed),
            device=device,
            progress=True,
            **{"method": DEFAULT_METHOD, **mesh_options(None, model_method)},
        )
    except InputError as exc:
        return None, 0, [f"no mesh: the reconstruction failed ({str(exc).replace(str(folder), 'views')})"]
    return Path(result.path), int(len(result.mesh.faces)), list(result.warnings)


def turntable_gif(views: list[Path], side: int = PREVIEW_SIDE) -> bytes:
    """The views as a looping GIF at least `side` px wide (the model's own views may be far smaller)."""
    from PIL import Image

    from mv3d.generate import turntable_gif as gif

    frames = []
    for p in views:
        with Image.open(p) as im:
            im = im.convert("RGBA")
            if im.width < side:
                im = im.resize((side, side * im.height // im.width), Image.Resampling.LANCZOS)
            frames.append(np.asarray(im))
    return gif(np.stack(frames))


def _without_server_paths(data: Any, names: dict[str, str]) -> Any:
    """`data` (parsed JSON) with every string that is a key of `names` (a path on the server) replaced by
    its value (a name that says the same to whoever downloads it)."""
    if isinstance(data, dict):
        return {k: _without_server_paths(v, names) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_server_paths(v, names) for v in data]
    return names.get(data, data) if isinstance(data, str) else data


def _zip_tree(zip_path: Path, entries: list[tuple[Path, str]], names: dict[str, str] | None = None) -> Path:
    """Write `(file or folder, name in the zip)` entries into `zip_path` (folders recursively, sorted);
    top-level JSON files go in with the server paths of `names` replaced (`_without_server_paths`)."""
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for src, arc in entries:
            if src.is_dir():
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        zf.write(p, f"{arc}/{p.relative_to(src).as_posix()}")
            elif src.is_file() and names and src.suffix == ".json":
                public = _without_server_paths(json.loads(src.read_text()), names)
                zf.writestr(arc, json.dumps(public, indent=2) + "\n")
            elif src.is_file():
                zf.write(src, arc)
    os.replace(tmp, zip_path)
    return zip_path


def package_downloads(
    folder: Path, glb: Path | None, run_dir: Path, names: dict[str, str] | None = None
) -> tuple[Path | None, Path]:
    """The zips the page offers: (OBJ+MTL+PNG zip or None, orbit-dataset zip), written into `run_dir`.

    `names` maps server paths that run.json and transforms.json record (the upload in Gradio's cache,
    the model folder) to what the zip says instead: the zip goes to whoever uses the page.
    """
    from mv3d.export import export_mesh
    from render.meshes import read_trimesh

    obj_zip = None
    if glb is not None:
        obj_dir = run_dir / "obj"
        obj_dir.mkdir(exist_ok=True)
        export_mesh(read_trimesh(glb), obj_dir / "mesh.obj")  # +Z up, as `mv3d reconstruct` writes OBJ
        obj_zip = _zip_tree(run_dir / OBJ_ZIP_NAME, [(p, p.name) for p in sorted(obj_dir.iterdir())])
    entries = [(folder / name, f"orbit/{name}") for name in _DATASET_ENTRIES if (folder / name).exists()]
    return obj_zip, _zip_tree(run_dir / DATASET_ZIP_NAME, entries, names)


def run_generation(
    view_generator: Any,
    image: str | Path,
    run_dir: Path,
    settings: GenerationSettings,
    report: Callable[[float, str], None] | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_UPLOAD_PIXELS,
) -> DemoResult:
    """Check the upload, generate into `run_dir/generation`, package the downloads.

    `report(fraction, stage)` is told where the job is (the sampling and mesh stages report their own
    steps through their tqdm bars).
    """
    report = report or (lambda fraction, stage: None)
    check_upload(image, max_bytes, max_pixels)
    settings.check()
    report(0.0, "matting the input, then sampling the views")
    try:
        result = _generate(view_generator, Path(image), run_dir / "generation", settings)
    except InputError as exc:  # the preprocessing's verdict names the upload by its server path
        raise _as_upload(exc, image, run_dir) from exc
    folder = Path(result.out_dir)
    names = {"preprocess": "matting", "load_model": "model", "sample": "sampling", "write": "writing"}
    timings = {names.get(k, k): float(v) for k, v in result.timings.items() if k != "total"}
    timings.pop("model", None)  # loaded once at start-up: zero here
    notes = list(result.warnings)
    glb, faces = None, 0
    if settings.mesh:
        model_method = view_generator.pipeline.info.default_mesh_method
        stage = {None: "carving the visual hull, then fitting the field", "hull": "carving the visual hull"}
        report(0.5, f"mesh: {stage.get(model_method, f'{model_method} reconstruction')}")
        t = time.perf_counter()
        glb, faces, mesh_notes = reconstruct_mesh(folder, settings, str(view_generator.device), model_method)
        timings["mesh"] = time.perf_counter() - t
        notes += mesh_notes
    report(0.95, "packaging the downloads")
    t = time.perf_counter()
    views = sorted((folder / "views").glob("*.png"))
    turntable = run_dir / "turntable.gif"
    turntable.write_bytes(turntable_gif(views))
    names = _upload_names(image)
    for where in (getattr(view_generator, "model_path", None), getattr(view_generator, "model", None)):
        if where and str(where) != "default":  # a folder on the server: its name says which model
            names[str(where)] = Path(where).name
    obj_zip, dataset_zip = package_downloads(folder, glb, run_dir, names)
    timings["downloads"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    return DemoResult(folder, views, turntable, glb, obj_zip, dataset_zip, timings, notes, faces)


def preview_input(image: str | Path, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS):
    """The matted, framed input at `PREVIEW_SIDE` px: ((R, R, 4) uint8 RGBA, Markdown notes)."""
    from mv3d.generate import TRAINING_BACKGROUND
    from mv3d.preprocess import preprocess_image

    w, h = check_upload(image, max_bytes, max_pixels)
    t = time.perf_counter()
    try:
        pre = preprocess_image(image, PREVIEW_SIDE, background=TRAINING_BACKGROUND)
    except InputError as exc:  # names the upload by its server path
        raise _as_upload(exc, image) from exc
    took = time.perf_counter() - t
    lines = [
        f"Input {w}x{h}: matte `{pre.matte_method}`, framed and centred ({took:.2f} s). Press **Generate**."
    ]
    lines += [f"- note: {n}" for n in pre.warnings]
    return pre.rgba, "\n\n".join(lines[:1]) + ("\n\n" + "\n".join(lines[1:]) if len(lines) > 1 else "")


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------


@dataclass
class DemoConfig:
    """How the server runs.

    Attributes:
        model: "default" (the embedded model) or a model folder.
        device: "auto", "cpu" or "cuda".
        max_upload_bytes, max_upload_pixels: uploads above either are refused before decoding.
        queue_size: requests allowed to wait; more are refused with a message.
        session_ttl_s: a session's files are removed after this long at the latest.
    """

    model: str = "default"
    device: str = "auto"
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_pixels: int = MAX_UPLOAD_PIXELS
    queue_size: int = QUEUE_SIZE
    session_ttl_s: float = SESSION_TTL_S


def model_facts(view_generator: Any) -> dict[str, Any]:
    """What the loaded model fixes (shown as facts, not as controls): views, size, ensemble, guidance."""
    config = view_generator.config
    return {
        "views": view_generator.num_frames,
        "resolution": int(view_generator.resolution),
        "default_steps": int(view_generator.steps),
        "ensemble": int(view_generator.ensemble),
        "mirror_average": bool(view_generator.mirror_average),
        "sampler": config.sampler,
        "cfg": bool(view_generator.pipeline.denoiser.guided),
        "guidance": config.guidance,
        "min_guidance": float(config.min_guidance),
        "max_guidance": float(config.max_guidance),
        "model": view_generator.model,
        "model_hash": view_generator.model_hash,
    }


def _sweeper(folders: SessionFolders, stop: threading.Event) -> None:
    """Remove expired session folders every quarter of the time limit until `stop` is set."""
    while not stop.wait(max(10.0, folders.ttl_s / 4)):
        folders.sweep()


def _check_port(host: str, port: int) -> None:
    """`InputError` if nothing could listen on host:port right now (taken, or not this machine's address)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"host {host}: not an address of this machine ({exc})", field="host") from exc
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise InputError(
                f"port {port} on host {host}: cannot listen there ({exc.strerror or exc})", field="port"
            ) from exc


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def launch(
    config: DemoConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, share: bool = False,
    log_fn: Callable[[str], None] = print,
) -> None:  # fmt: skip
    """Load the model, build the page, serve it until interrupted (then remove the session files)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    optional_import("gradio", "demo", "the web demo")  # before the (slow) model load
    from mv3d.generate import ViewGenerator

    if not 0 < int(port) < 65536:
        raise InputError(f"port {port}: expected a TCP port from 1 to 65535", field="port")
    _check_port(host, int(port))  # before the model load: a taken port fails in a second
    log_fn(f"mv3d demo: loading model {config.model} ...")
    view_generator = ViewGenerator.load(config.model, config.device)
    folders = SessionFolders(config.session_ttl_s)
    from mv3d.demo.app import build_app

    app = build_app(config, view_generator, folders)
    stop = threading.Event()
    threading.Thread(target=_sweeper, args=(folders, stop), daemon=True).start()
    log_fn(f"mv3d demo: session files in {folders.root} (each removed when its tab closes, or after "
           f"{config.session_ttl_s / 60:.0f} min)")  # fmt: skip
    if share:
        log_fn("mv3d demo: --share: Gradio will open a PUBLIC link that anyone who has it can use")
    if threading.current_thread() is threading.main_thread():
        # `kill` / a service manager's stop ends the server like Ctrl-C, so the session files go too.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        app.launch(
            server_name=host,
            server_port=int(port),
            share=bool(share),
            max_file_size=int(config.max_upload_bytes),
            show_error=False,
            allowed_paths=[str(p) for p in example_images()],  # those files, not their folder
            quiet=False,
        )
    except OSError as exc:
        raise InputError(f"port {port} on host {host}: cannot serve there ({exc})", field="port") from exc
    finally:
        stop.set()
        folders.close()
