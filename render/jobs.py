"""The render-dataset job: many objects -> one orbit dataset folder each, resumable, local or on Ray.

    summary = render_dataset(["meshes/", "procedural:100:0"], "data/train", views=21, resolution=256, workers=2)

Layout of the output folder::

    OUT/
      job.json                 the settings of the job (a rerun must use the same ones)
      objects/<object_id>/     one orbit dataset per rendered object (views/, transforms.json)
      records/<object_id>.json the outcome of every rejected or failed object
      manifest.jsonl           one line per object: id, source, status, reason, curation results, and the
                               source's facts (`meta`: name, category, creator, licence, ...)
      failures.jsonl           one line per failed object: {"source", "error", "object_id"}
      summary.json             counts, what each curation filter removed, throughput

Guarantees:

* Atomic objects: each object folder is assembled under a hidden temporary name and renamed into place
  when whole (`render.common.atomic_output`), so SIGKILL at any moment leaves no half object.
* Resume: a rerun skips objects whose folder exists and objects recorded as rejected, retries failed
  ones, and rewrites manifest.jsonl / failures.jsonl / summary.json from the per-object outcomes.
* Determinism: each object's orbit, elevation and light setup come from a seed derived from the job
  seed and the object id (not from the order of work), so a killed-and-resumed job produces the same
  files as an uninterrupted one, whatever the number of workers.
* A failing object (malformed file, renderer error) is recorded and the job goes on.

Execution: `workers` local processes (multiprocessing, spawn: each gets its own GL context or Blender
worker), or with `ray_address` the same per-object function as Ray remote tasks on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from render import curation as filters
from render.cameras import SV3D_FOV_DEG, Orbit, dynamic_orbit, static_orbit
from render.common import (
    MAX_IMAGE_SIDE,
    MAX_VIEWS,
    InputError,
    atomic_write_json,
    atomic_write_text,
    check_output,
    check_range,
    lock_folder,
    output_marker,
    write_output_marker,
)
from render.dataset import TRANSFORMS

OBJECTS_DIR = "objects"
RECORDS_DIR = "records"
ORBIT_KINDS = ("static", "dynamic", "mixed")
#: the largest shape_augment: |ln stretch| up to 0.7 is a factor of 2 either way along an axis
MAX_SHAPE_AUGMENT = 0.7
#: the most worker processes of one job (100000 was accepted, each worker a process with a renderer)
MAX_WORKERS = 256
#: the random stream of the shape stretch, apart from each object's orbit and light draws
SHAPE_STREAM = 1
#: How often (seconds) the manifest is rewritten while a job runs.
MANIFEST_EVERY_S = 30.0


@dataclass
class RenderJobConfig:
    """Everything that determines the files of a render-dataset job (saved as OUT/job.json).

    Attributes:
        views: views per object.
        resolution: square image size in pixels.
        renderer: "fast" or "blender".
        renderer_settings: keyword settings of the renderer.
        orbit_kind: "static", "dynamic" (SV3D-style) or "mixed" (each object draws one of the two).
        elevation_range: (lo, hi) degrees; each object draws its input elevation uniformly in it.
        fov_deg: field of view.
        seed: job seed; each object's seed is derived from it and the object id.
        light_augment: random light setup per object (else the default lights).
        shape_augment: stretch each object along the world axes by its own random factors
            exp(U(-a, a)), a = shape_augment, then normalise it to the unit cube again (0: no stretch;
            `object_shape_scales`). New proportions of the same objects: training data with more
            shapes than the source has.
        depth, normals: also store depth.npy / normals.npy per object.
        curation: the curation settings (a `render.curation.CurationConfig` as a dict), or None.
    """

    views: int = 21
    resolution: int = 256
    renderer: str = "fast"
    renderer_settings: dict[str, Any] = field(default_factory=dict)
    orbit_kind: str = "static"
    elevation_range: tuple[float, float] = (-5.0, 30.0)
    fov_deg: float = SV3D_FOV_DEG
    seed: int = 0
    light_augment: bool = False
    depth: bool = False
    normals: bool = False
    curation: dict[str, Any] | None = None
    shape_augment: float = 0.0

    def validate(self) -> None:
        check_range("views", self.views, 1, MAX_VIEWS, "a number of views")
        check_range(
            "shape_augment", self.shape_augment, 0.0, MAX_SHAPE_AUGMENT, "the largest |ln stretch| per axis"
        )
        check_range("resolution", self.resolution, 8, MAX_IMAGE_SIDE, "pixels")
        if self.orbit_kind not in ORBIT_KINDS:
            raise InputError(
                f"orbit_kind {self.orbit_kind!r}: expected one of {', '.join(ORBIT_KINDS)}",
                field="orbit_kind",
            )
        lo, hi = self.elevation_range
        if not (-90.0 <= lo <= hi <= 90.0):
            raise InputError(
                f"elevation_range {lo} {hi}: expected -90 <= LO <= HI <= 90", field="elevation_range"
            )
        if not 0.0 < self.fov_deg < 180.0:  # checked per object otherwise: every object would fail
            raise InputError(f"fov_deg {self.fov_deg}: expected degrees in (0, 180)", field="fov_deg")
        from render.renderers import RENDERER_NAMES, get_renderer

        if self.renderer not in RENDERER_NAMES:
            raise InputError(
                f"renderer {self.renderer!r}: expected one of {', '.join(RENDERER_NAMES)}", field="renderer"
            )
        # the renderer's settings (Blender's --samples, --world) are checked by its constructor, which
        # starts nothing: a bad one is one line now, not one failure per object
        get_renderer(self.renderer, **self.renderer_settings)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["elevation_range"] = [float(v) for v in self.elevation_range]
        if not d["shape_augment"]:
            # left out when off, so that the job.json of a dataset rendered before the option existed
            # still matches a rerun with the same settings
            del d["shape_augment"]
        else:
            d["shape_augment"] = float(d["shape_augment"])
        return d


def object_seed(job_seed: int, object_id: str) -> int:
    """A 63-bit seed that depends only on the job seed and the object id (not on scheduling)."""
    digest = hashlib.sha256(f"{int(job_seed)}:{object_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def object_orbit(cfg: RenderJobConfig, object_id: str) -> tuple[Orbit, int | None]:
    """The orbit and light seed of one object, a pure function of the config and the object id."""
    rng = np.random.default_rng(object_seed(cfg.seed, object_id))
    lo, hi = cfg.elevation_range
    elevation = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    kind = cfg.orbit_kind
    if kind == "mixed":
        kind = "dynamic" if rng.random() < 0.5 else "static"
    if kind == "dynamic":
        orbit = dynamic_orbit(cfg.views, elevation, seed=rng, fov_deg=cfg.fov_deg)
    else:
        orbit = static_orbit(cfg.views, elevation, fov_deg=cfg.fov_deg)
    light_seed = int(rng.integers(0, 2**31 - 1)) if cfg.light_augment else None
    return orbit, light_seed


def object_shape_scales(cfg: RenderJobConfig, object_id: str) -> np.ndarray | None:
    """(3,) stretch factors of one object along the world x, y, z axes, or None without shape_augment.

    A pure function of the job seed and the object id, drawn from a stream of its own, so that turning
    the option on leaves every object's orbit and lights as they were."""
    a = float(cfg.shape_augment)
    if a <= 0:
        return None
    rng = np.random.default_rng([object_seed(cfg.seed, object_id), SHAPE_STREAM])
    return np.exp(rng.uniform(-a, a, size=3))


def _error_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, InputError) else text


def render_one(source, out_dir: str, cfg_json: dict[str, Any]) -> dict[str, Any]:
    """Render one `ObjectSource` into OUT/objects/<id> and return its outcome record.

    Runs in a worker process or a Ray task; every error is caught and returned as a "failed" record,
    so one bad object never stops the job. Records: {"object_id", "source", "status" ("done",
    "rejected", "failed"), "stage", "reason"/"error", "curation", "seconds"}.
    """
    from render.render_object import write_render
    from render.renderers import get_renderer

    t0 = time.perf_counter()
    cfg = RenderJobConfig(**{**cfg_json, "elevation_range": tuple(cfg_json["elevation_range"])})
    record: dict[str, Any] = {"object_id": source.object_id, "source": source.spec, "curation": {}}
    stage = "source"
    try:
        ccfg = filters.CurationConfig.from_dict(cfg.curation) if cfg.curation is not None else None
        checks = (
            {
                "source": filters.check_source,
                "mesh": filters.check_mesh,
                "renders": filters.check_renders,
            }
            if ccfg is not None
            else {}
        )

        def check(name: str, arg) -> str | None:
            if name not in checks:
                return None
            reason = checks[name](arg, ccfg)
            record["curation"][name] = reason or "ok"
            return reason

        if (reason := check("source", source)) is not None:
            return {**record, "status": "rejected", "stage": "source", "reason": reason}
        stage = "load"
        mesh = source.load()
        stage = "mesh"
        if (reason := check("mesh", mesh)) is not None:
            return {**record, "status": "rejected", "stage": "mesh", "reason": reason}
        stage = "render"
        orbit, light_seed = object_orbit(cfg, source.object_id)
        scales = object_shape_scales(cfg, source.object_id)
        if scales is not None:
            from render.meshes import stretched

            mesh = stretched(mesh, scales)
        with get_renderer(cfg.renderer, **cfg.renderer_settings) as renderer:
            result = renderer.render(
                mesh, orbit, cfg.resolution, depth=cfg.depth, normals=cfg.normals, light_seed=light_seed
            )
        stage = "renders"
        if (reason := check("renders", result.rgba)) is not None:
            return {**record, "status": "rejected", "stage": "renders", "reason": reason}
        stage = "write"
        info = {
            "id": source.object_id,
            "source": source.spec,
            "meta": _jsonable(source.meta),
            "curation": record["curation"],
        }
        if scales is not None:
            info["shape_scales"] = [float(v) for v in scales]  # before the renormalisation
        if mesh.unread_files:
            record["unread_files"] = info["unread_files"] = list(mesh.unread_files)
        write_render(
            Path(out_dir) / OBJECTS_DIR / source.object_id, mesh, result, orbit, renderer, info, light_seed
        )
        return {**record, "status": "done", "stage": "write", "seconds": round(time.perf_counter() - t0, 3)}
    except Exception as exc:  # one failed object must not stop the job
        return {
            **record,
            "status": "failed",
            "stage": stage,
            "error": _error_line(exc),
            "traceback": None if isinstance(exc, InputError) else traceback.format_exc(limit=5),
        }


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: asdict(o) if is_dataclass(o) else str(o)))


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------


def _check_job_file(out: Path, cfg: RenderJobConfig) -> None:
    job_file = out / "job.json"
    want = cfg.to_json()
    if job_file.is_file():
        try:
            have = json.loads(job_file.read_text())
        except json.JSONDecodeError:
            have = None
        if have != want:
            diff = sorted(k for k in set(want) | set(have or {}) if (have or {}).get(k) != want.get(k))
            raise InputError(
                f"{out}: holds a render job with other settings ({', '.join(diff)} differ): "
                "rerun with the same settings to resume, or choose another output folder"
            )
    else:
        atomic_write_json(job_file, want)


def _remove_stale_temporaries(objects_dir: Path) -> None:
    """Delete hidden half-written object folders that a killed run left (`atomic_output` names them
    `.<id>.tmp-<pid>-<hex>`); they were never renamed into place, so nothing refers to them."""
    import shutil

    for p in objects_dir.glob(".*.tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _read_records(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    rec_dir = out / RECORDS_DIR
    if rec_dir.is_dir():
        for p in rec_dir.glob("*.json"):
            try:
                rec = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a record is written atomically; anything unreadable is retried
            records[rec.get("object_id", p.stem)] = rec
    return records


def _done_record(out: Path, src) -> dict[str, Any] | None:
    tf = out / OBJECTS_DIR / src.object_id / TRANSFORMS
    if not tf.is_file():
        return None
    try:
        meta = json.loads(tf.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    info = meta.get("object") or {}
    record = {
        "object_id": src.object_id,
        "source": src.spec,
        "status": "done",
        "stage": "write",
        "curation": info.get("curation", {}),
    }
    if isinstance(info.get("unread_files"), list) and info["unread_files"]:
        record["unread_files"] = info["unread_files"]
    return record


def _read_jsonl(path: Path) -> dict[str, str]:
    """object_id -> line of an earlier manifest.jsonl / failures.jsonl (unreadable lines dropped)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            oid = json.loads(line).get("object_id")
        except (ValueError, AttributeError):
            continue
        if isinstance(oid, str):
            out[oid] = line
    return out


def _write_reports(out: Path, sources: Sequence, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """manifest.jsonl and failures.jsonl: this run's objects (in source order), then the entries of
    earlier runs for other objects, kept as they were (a 3-object rerun does not cut a 20-line
    manifest to 3). The summary counts this run's objects."""
    lines, failures = [], []
    for src in sources:
        rec = records.get(src.object_id)
        if rec is None:
            continue
        entry = {
            k: rec.get(k)
            for k in ("object_id", "source", "status", "stage", "reason", "error", "curation", "unread_files")
        }
        entry = {k: v for k, v in entry.items() if v is not None}
        if src.meta:
            # what the source knows of the object: name, category, creator, licence, annotations
            entry["meta"] = src.meta
        if rec["status"] == "done":
            entry["path"] = f"{OBJECTS_DIR}/{src.object_id}"
        lines.append(json.dumps(entry, sort_keys=True))
        if rec["status"] == "failed":
            failures.append(
                json.dumps({"source": src.spec, "error": rec.get("error", ""), "object_id": src.object_id})
            )
    current = {src.object_id for src in sources}
    for name, new in (("manifest.jsonl", lines), ("failures.jsonl", failures)):
        kept = [line for oid, line in _read_jsonl(out / name).items() if oid not in current]
        atomic_write_text(out / name, "".join(line + "\n" for line in new + kept))
    status = Counter(r["status"] for r in records.values())
    rejected_at = Counter(r["stage"] for r in records.values() if r["status"] == "rejected")
    reasons = Counter(r.get("reason", "") for r in records.values() if r["status"] == "rejected")
    # The filter is the reason's text before its first ':' (render.curation's convention).
    by_filter = Counter(r.split(":", 1)[0].strip() for r in reasons.elements())
    return {
        "objects": len(sources),
        "done": status.get("done", 0),
        "rejected": status.get("rejected", 0),
        "failed": status.get("failed", 0),
        "pending": len(sources) - len(records),
        # drawn without a material library or texture they name (listed per object in the manifest)
        "drawn_without_files": sum(1 for r in records.values() if r.get("unread_files")),
        "rejected_at_stage": dict(sorted(rejected_at.items())),
        "rejected_by_filter": dict(sorted(by_filter.items(), key=lambda kv: (-kv[1], kv[0]))),
        "rejection_reasons": dict(reasons.most_common()),
    }


def _failed(src, stage: str, error: str) -> dict[str, Any]:
    return {
        "object_id": src.object_id,
        "source": src.spec,
        "status": "failed",
        "stage": stage,
        "error": error,
        "curation": {},
    }


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the job's process dies (a SIGKILLed job must not leave
    workers rendering into its folder for good). Linux: the kernel sends SIGKILL on the parent's death
    (prctl PR_SET_PDEATHSIG); elsewhere, and for a parent that died before the call, a watchdog thread
    polls the parent pid."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="mv3d-parent-watchdog", daemon=True).start()


def _run_local(tasks: list, out: str, cfg_json: dict, workers: int) -> Iterator[dict[str, Any]]:
    """Run `render_one` over `tasks` in this process (workers <= 1) or in a spawn process pool.

    A worker that dies (a native crash in a GL driver, the OOM killer) breaks the pool, and which of
    the objects in flight caused it is unknown: they become suspects and are run again one at a time
    in a fresh pool, so only the object that kills a worker on its own is recorded as failed.
    """
    if workers <= 1:
        for src in tasks:
            yield render_one(src, out, cfg_json)
        return
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    it = iter(tasks)
    suspects: deque = deque()
    exhausted = False

    def next_task():
        nonlocal exhausted
        if suspects:
            return suspects.popleft()
        if exhausted:
            return None
        nxt = next(it, None)
        exhausted = nxt is None
        return nxt

    while True:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(),)
        )
        in_flight: dict[Any, Any] = {}
        broken = False
        try:
            while True:
                # Suspects run alone; otherwise keep 2 tasks per worker queued (bounded submission:
                # a million-object job does not queue a million futures).
                limit = 1 if suspects or any(iso for _, iso in in_flight.values()) else 2 * workers
                while len(in_flight) < limit:
                    isolating = bool(suspects)
                    src = next_task()
                    if src is None:
                        break
                    in_flight[pool.submit(render_one, src, out, cfg_json)] = (src, isolating)
                    if isolating:
                        break
                if not in_flight:
                    break
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in done:
                    src, isolated = in_flight.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if isolated and not in_flight:
                            yield _failed(
                                src, "worker", "the worker process died while rendering this object"
                            )
                        else:
                            suspects.append(src)
                        suspects.extend(other for other, _ in in_flight.values())
                        in_flight.clear()
                        break
                    except Exception as exc:  # pickling errors and the like: this object only
                        yield _failed(src, "worker", _error_line(exc))
                if broken:
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        if not broken:
            return


def _connect_ray(address: str):
    """The `ray` module, connected to the cluster at `address` (`InputError` if it cannot be)."""
    from render.common import optional_import

    ray = optional_import("ray", "cluster", "a Ray cluster")
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(
                f"ray {address}: cannot connect to a Ray cluster ({_error_line(exc)})", field="ray"
            ) from exc
    return ray


def _run_ray(ray, tasks: list, out: str, cfg_json: dict, max_in_flight: int) -> Iterator[dict[str, Any]]:
    """Run `render_one` over `tasks` as tasks of the connected `ray` module (`_connect_ray`)."""
    remote = ray.remote(num_cpus=1, max_retries=1)(render_one)
    it = iter(tasks)
    in_flight: dict[Any, Any] = {}

    def submit(src) -> None:
        in_flight[remote.remote(src, out, cfg_json)] = src

    for src, _ in zip(it, range(max_in_flight), strict=False):
        submit(src)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            src = in_flight.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # a task that died (worker crash, lost node): record, go on
                yield _failed(src, "ray", _error_line(exc))
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)


def render_dataset(
    sources: list[str],
    out_dir: str | Path,
    views: int = 21,
    resolution: int = 256,
    workers: int = 1,
    renderer: str = "fast",
    elevation: float | tuple[float, float] = (-5.0, 30.0),
    orbit_kind: str = "static",
    seed: int = 0,
    ray_address: str | None = None,
    curation: Any = None,
    *,
    objaverse_dir: str | None = None,
    up_axis: str | None = None,
    select: str | None = None,
    renderer_settings: dict[str, Any] | None = None,
    fov_deg: float = SV3D_FOV_DEG,
    light_augment: bool = False,
    shape_augment: float = 0.0,
    depth: bool = False,
    normals: bool = False,
    retry_failed: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render every object of `sources` into `out_dir`; resumable; return the summary.

    Args:
        sources: source specs (mesh files, folders, `procedural:N:SEED`, `objaverse:...`), resolved
            by `render.sources.resolve_sources`.
        out_dir: the dataset root (layout in the module docstring).
        views, resolution: views per object, square image size.
        workers: local worker processes (1: in this process).
        renderer: "fast" or "blender"; `renderer_settings` are its keyword settings.
        elevation: one elevation in degrees, or a (lo, hi) range each object draws from.
        orbit_kind: "static", "dynamic" or "mixed".
        seed: job seed (per-object seeds derive from it and the object id).
        ray_address: run on Ray ("auto", "ray://host:port", ...) instead of local processes. If Ray
            is already initialised in this process, that instance is used.
        curation: a `render.curation.CurationConfig` (or a dict of its fields), or None for no checks
            at all, not even the empty-view one. Not the CLI's default: `mv3d render-dataset` passes
            `CurationConfig()` (its default filters), and with `--curation off`
            `CurationConfig.disabled()`, which still rejects an object with an empty view.
        objaverse_dir: the local objaverse cache folder for `objaverse:` sources.
        up_axis: "y" or "z", the up axis of every mesh file and folder among the sources (None: each
            format's own; `render.sources.file_source`).
        select: keep only the objects a selection lists (`render.sources.read_selection`).
        light_augment: draw a random light setup per object.
        shape_augment: stretch each object by random factors exp(U(-a, a)) per axis (`RenderJobConfig`).
        depth, normals: also store depth and normal maps.
        retry_failed: on a rerun, try failed objects again.
        progress: show a tqdm progress bar.
        overwrite: write into an existing `out_dir` that is not a render-dataset output (mv3d otherwise
            refuses it: `render.common.check_output`).

    Returns:
        The summary (also written to OUT/summary.json): counts of done / rejected / failed objects,
        what each curation filter removed, elapsed time and objects per second, and how many ids the
        selection names that the sources do not hold (`selection_not_found`, the first five listed).
    """
    from tqdm.auto import tqdm

    from render.sources import check_object_id, read_selection, resolve_sources

    if isinstance(elevation, (int, float)):
        elevation = (float(elevation), float(elevation))
    if curation is not None and not isinstance(curation, dict):
        curation = curation.to_dict() if hasattr(curation, "to_dict") else asdict(curation)
    cfg = RenderJobConfig(
        views=int(views),
        resolution=int(resolution),
        renderer=renderer,
        renderer_settings=dict(renderer_settings or {}),
        orbit_kind=orbit_kind,
        elevation_range=(float(elevation[0]), float(elevation[1])),
        fov_deg=float(fov_deg),
        seed=int(seed),
        light_augment=bool(light_augment),
        shape_augment=float(shape_augment),
        depth=bool(depth),
        normals=bool(normals),
        curation=_jsonable(curation) if curation is not None else None,
    )
    cfg.validate()
    # each worker is a process with its own renderer (and, with Blender, its own bpy): more than a
    # machine has cores only queue
    check_range("workers", workers, 1, MAX_WORKERS, "a number of processes")
    if cfg.curation is not None:
        filters.CurationConfig.from_dict(cfg.curation)  # InputError for unknown settings

    resolved = resolve_sources(list(sources), objaverse_dir=objaverse_dir, up_axis=up_axis, select=select)
    for src in resolved:
        check_object_id(src.object_id)  # each becomes a folder under objects/
    # Ids a selection names that these sources do not hold: expected when a split spans several sources
    # and one is rendered, a typo otherwise; the summary counts them, never silently.
    not_selected = sorted(read_selection(select) - {s.object_id for s in resolved}) if select else []

    out = check_output(out_dir, "render-dataset", overwrite, field="out_dir", overwrite_keeps_files=True)
    out.mkdir(parents=True, exist_ok=True)
    # a second job on this --out stops here, before touching anything
    lock = lock_folder(out, "render-dataset")
    try:
        return _render_locked(
            out, resolved, cfg, workers, ray_address, retry_failed, progress, tqdm, not_selected
        )
    finally:
        lock.close()


def _render_locked(
    out: Path,
    resolved: list,
    cfg: RenderJobConfig,
    workers: int,
    ray_address,
    retry_failed: bool,
    progress: bool,
    tqdm,
    not_selected: list[str],
) -> dict[str, Any]:
    """`render_dataset`'s work once it holds the job lock on `out`."""
    ids = {s.object_id for s in resolved}
    if output_marker(out) is None:
        write_output_marker(out, "render-dataset")
    (out / OBJECTS_DIR).mkdir(exist_ok=True)
    (out / RECORDS_DIR).mkdir(exist_ok=True)
    _check_job_file(out, cfg)
    _remove_stale_temporaries(out / OBJECTS_DIR)

    # 1. What is already there: finished objects (their folder exists), and recorded outcomes.
    records = {k: v for k, v in _read_records(out).items() if k in ids}
    todo = []
    skipped = 0
    for src in resolved:
        done = _done_record(out, src)
        if done is not None:
            records[src.object_id] = done
            skipped += 1
        elif src.object_id in records and (
            records[src.object_id]["status"] == "rejected" or not retry_failed
        ):
            skipped += 1
        else:
            records.pop(src.object_id, None)
            todo.append(src)

    # 2. Render what is left, locally or on Ray, recording each outcome as it arrives.
    cfg_json = cfg.to_json()
    t0 = time.perf_counter()
    last_report = t0
    if ray_address:
        ray = _connect_ray(ray_address)  # before the progress bar: a cluster that is not there is one line
        results = _run_ray(ray, todo, str(out), cfg_json, max_in_flight=max(2, 2 * workers))
    else:
        results = _run_local(todo, str(out), cfg_json, workers)
    bar = tqdm(total=len(todo), unit="obj", desc="render-dataset", disable=not progress, dynamic_ncols=True)
    try:
        for rec in results:
            records[rec["object_id"]] = rec
            if rec["status"] != "done":
                atomic_write_json(out / RECORDS_DIR / f"{rec['object_id']}.json", rec)
            else:
                (out / RECORDS_DIR / f"{rec['object_id']}.json").unlink(missing_ok=True)
            bar.update(1)
            counts = Counter(r["status"] for r in records.values())
            bar.set_postfix(
                done=counts.get("done", 0), rejected=counts.get("rejected", 0), failed=counts.get("failed", 0)
            )
            if time.perf_counter() - last_report > MANIFEST_EVERY_S:
                _write_reports(out, resolved, records)
                last_report = time.perf_counter()
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    # 3. Reports, rewritten whole from the per-object outcomes (identical after a resume).
    summary = _write_reports(out, resolved, records)
    rendered = sum(1 for s in todo if records.get(s.object_id, {}).get("status") == "done")
    summary.update(
        {
            "skipped_existing": skipped,
            "processed_this_run": len(todo),
            "rendered_this_run": rendered,
            "elapsed_s": round(elapsed, 3),
            "objects_per_s": round(len(todo) / elapsed, 4) if elapsed > 0 and todo else None,
            "selection_not_found": len(not_selected),
            "selection_not_found_first": not_selected[:5],
            "out": str(out),
        }
    )
    atomic_write_json(out / "summary.json", summary)
    return summary
