"""Objaverse objects as render sources, through the `objaverse` package and its local cache folder.

Grammar of an `objaverse:` source (parts separated by `:`; options may follow the selection in any
order)::

    objaverse:uids=UID[,UID...]          these objects, in this order
    objaverse:uids-file=PATH             UIDs from a text file, one per line (blank lines and # comments
                                         ignored); a UID may be written with its .glb suffix
    objaverse:lvis=CATEGORY[,CATEGORY...]  the objects of these LVIS categories (category order, then
                                         the order of the LVIS annotation file)
    objaverse:all                        every object in object-paths.json.gz, sorted by UID

    options:  limit=K    keep the first K of the selection (after shuffling, if seed is given)
              seed=S     shuffle the selection with seed S first (a deterministic random subset)

Examples: `objaverse:lvis=chair,mug:limit=50`, `objaverse:all:seed=0:limit=1000`.

The cache folder is the package's *versioned path* (`~/.objaverse/hf-objaverse-v1` by default): it
holds `object-paths.json.gz` (UID -> `glbs/DDD-DDD/UID.glb`), `lvis-annotations.json.gz` (category ->
UIDs), `metadata/DDD-DDD.json.gz` (UID -> annotation: `license`, `name`, `faceCount`,
`animationCount`, ...) and the GLBs. Pass either that folder or its parent (the package's BASE_PATH,
which contains `hf-objaverse-v1/`). The package reads whatever folder `objaverse._VERSIONED_PATH`
names, so every call goes through `_pointed_at`, which sets it (and a socket timeout, since the package
downloads with `urllib` without one) for the duration of the call and restores both afterwards.

A file missing from the cache is downloaded by the package, unless downloads are off
(`HF_HUB_OFFLINE=1` or `offline=True`): then, as when the hub cannot be reached within the timeout, the
call raises `InputError` naming the file and the cache folder instead of hanging.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import socket
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from render.common import InputError, optional_import

PREFIX = "objaverse:"
VERSIONED_NAME = "hf-objaverse-v1"
DEFAULT_TIMEOUT_S = 30.0
SELECTIONS = ("uids", "uids-file", "lvis", "all")
OPTIONS = ("limit", "seed")
USAGE = (
    "objaverse:uids=UID[,UID...] | objaverse:uids-file=PATH | objaverse:lvis=CAT[,CAT...] | objaverse:all, "
    "optionally followed by :limit=K and/or :seed=S"
)

# objaverse keeps its cache folder in a module global; the lock keeps two threads of one process from
# pointing it at different folders at once.
_PACKAGE_LOCK = threading.RLock()


def _offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ObjaverseSelection:
    """A parsed `objaverse:` spec."""

    kind: str  # one of SELECTIONS
    values: tuple[str, ...] = ()
    limit: int | None = None
    seed: int | None = None


def parse_objaverse_spec(spec: str) -> ObjaverseSelection:
    """Parse an `objaverse:` source (grammar in the module docstring); `InputError` if malformed."""

    def bad(why: str) -> InputError:
        return InputError(f"bad source {spec!r}: {why}; expected {USAGE}")

    if not spec.startswith(PREFIX):
        raise bad("it does not start with 'objaverse:'")
    parts = spec[len(PREFIX) :].split(":")
    selection = parts[0]
    options: dict[str, int] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and key in OPTIONS:
            if key in options:
                raise bad(f"option {key!r} given twice")
            try:
                options[key] = int(value)
            except ValueError:
                raise bad(f"{key}={value!r} is not an integer") from None
        else:
            # A ':' that does not start an option belongs to the selection (e.g. a path with ':').
            selection += ":" + part
    kind, eq, value = selection.partition("=")
    if kind not in SELECTIONS:
        raise bad(f"unknown selection {kind!r}")
    if kind == "all":
        if eq:
            raise bad("'all' takes no value")
        values: tuple[str, ...] = ()
    else:
        if not eq or not value.strip():
            raise bad(f"'{kind}' needs a value ({kind}=...)")
        if kind == "uids-file":
            values = (value,)
        else:
            values = tuple(v.strip() for v in value.split(",") if v.strip())
            if kind == "uids":
                values = tuple(v[:-4] if v.endswith(".glb") else v for v in values)
    limit = options.get("limit")
    if limit is not None and limit < 1:
        raise bad(f"limit must be >= 1, got {limit}")
    seed = options.get("seed")
    if seed is not None and seed < 0:
        raise bad(f"seed must be >= 0, got {seed}")
    return ObjaverseSelection(kind=kind, values=values, limit=limit, seed=seed)


def cache_dir(objaverse_dir: str | os.PathLike | None = None) -> Path:
    """The versioned cache folder: `objaverse_dir` (or its `hf-objaverse-v1/`), else the package's."""
    if objaverse_dir is None:
        objaverse = optional_import("objaverse", "objaverse", "objaverse: sources")
        return Path(objaverse._VERSIONED_PATH)
    root = Path(objaverse_dir).expanduser()
    if root.is_file():
        raise InputError(f"objaverse folder {str(root)!r} is a file; expected the objaverse cache folder")
    nested = root / VERSIONED_NAME
    return nested if nested.is_dir() else root


class ObjaverseCache:
    """The `objaverse` package pointed at one cache folder, with bounded, optional downloads.

    Args:
        root: the versioned cache folder (see `cache_dir`).
        timeout_s: socket timeout for any download the package makes.
        offline: forbid downloads; default: from `HF_HUB_OFFLINE`.
    """

    def __init__(
        self, root: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S, offline: bool | None = None
    ):
        self.root = Path(root)
        self.timeout_s = float(timeout_s)
        self.offline = _offline_from_env() if offline is None else bool(offline)
        self._object_paths: dict[str, str] | None = None

    # -- plumbing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _pointed_at(self, needed: list[str], what: str) -> Iterator[Any]:
        """Yield the `objaverse` module reading this cache; translate network failures to InputError.

        `needed` lists the cache-relative files the call will read: when one is missing and downloads
        are off, fail before the package tries the network.
        """
        objaverse = optional_import("objaverse", "objaverse", "objaverse: sources")
        missing = [n for n in needed if not (self.root / n).exists()]
        if missing and self.offline:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise InputError(
                f"objaverse: {what} needs {shown}, which is not in the local cache {str(self.root)!r}, and "
                "downloads are off (HF_HUB_OFFLINE=1); put the file there or allow downloads"
            )
        with _PACKAGE_LOCK:
            saved_path, saved_timeout = objaverse._VERSIONED_PATH, socket.getdefaulttimeout()
            objaverse._VERSIONED_PATH = str(self.root)
            if missing:
                socket.setdefaulttimeout(self.timeout_s)
            try:
                yield objaverse
            except (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror) as exc:
                reason = getattr(exc, "reason", None) or exc or type(exc).__name__
                raise InputError(
                    f"objaverse: {what} needs {', '.join(missing[:3]) or 'a download'}, which is not in the "
                    f"local cache {str(self.root)!r}, and downloading it failed within {self.timeout_s:g} s "
                    f"({reason}); check the network or put the file in the cache folder"
                ) from exc
            finally:
                objaverse._VERSIONED_PATH = saved_path
                socket.setdefaulttimeout(saved_timeout)

    # -- what the package provides -----------------------------------------------------------------

    def object_paths(self) -> dict[str, str]:
        """UID -> cache-relative GLB path (`glbs/DDD-DDD/UID.glb`)."""
        if self._object_paths is None:
            with self._pointed_at(["object-paths.json.gz"], "the list of objects") as objaverse:
                try:
                    self._object_paths = objaverse._load_object_paths()
                except (EOFError, json.JSONDecodeError, gzip.BadGzipFile) as exc:
                    raise InputError(
                        f"objaverse: {str(self.root / 'object-paths.json.gz')!r} is not a gzipped JSON file ({exc})"
                    ) from exc
        return self._object_paths

    def uids(self) -> list[str]:
        """All UIDs, sorted (the package's `load_uids`, made independent of the file's order)."""
        return sorted(self.object_paths())

    def lvis(self) -> dict[str, list[str]]:
        """LVIS category -> UIDs (the package's `load_lvis_annotations`)."""
        with self._pointed_at(["lvis-annotations.json.gz"], "the LVIS categories") as objaverse:
            try:
                return objaverse.load_lvis_annotations()
            except (EOFError, json.JSONDecodeError, gzip.BadGzipFile) as exc:
                raise InputError(
                    f"objaverse: {str(self.root / 'lvis-annotations.json.gz')!r} is not a gzipped JSON file ({exc})"
                ) from exc

    def annotations(self, uids: list[str]) -> dict[str, dict]:
        """UID -> annotation (licence, name, face count, ...) for `uids` (the package's `load_annotations`)."""
        if not uids:
            return {}
        paths = self.object_paths()
        shards = sorted({f"metadata/{paths[u].split('/')[1]}.json.gz" for u in uids})
        with self._pointed_at(shards, f"the annotations of {len(uids)} object(s)") as objaverse:
            try:
                return objaverse.load_annotations(list(uids))
            except (EOFError, json.JSONDecodeError, gzip.BadGzipFile) as exc:
                raise InputError(
                    f"objaverse: an annotation file in {str(self.root / 'metadata')!r} is not valid ({exc})"
                ) from exc

    def object_file(self, uid: str, object_path: str | None = None) -> Path:
        """Local path of the GLB of `uid`, downloaded by the package if it is not in the cache yet."""
        if object_path is None:
            paths = self.object_paths()
            if uid not in paths:
                raise InputError(
                    f"objaverse: uid {uid!r} is not in {str(self.root / 'object-paths.json.gz')!r}"
                )
            object_path = paths[uid]
        local = self.root / object_path
        rel = Path(str(object_path))
        if rel.is_absolute() or ".." in rel.parts or not local.resolve().is_relative_to(self.root.resolve()):
            raise InputError(
                f"objaverse: uid {uid!r} has the object path {object_path!r}: expected a path inside {str(self.root)!r}"
            )
        if local.exists():
            return local
        with self._pointed_at([object_path], f"object {uid}") as objaverse:
            found = objaverse.load_objects([uid])
        if uid not in found or not Path(found[uid]).exists():
            raise InputError(f"objaverse: object {uid} could not be fetched into {str(self.root)!r}")
        return Path(found[uid])


def licence_of(annotation: dict | None) -> str | None:
    """The licence code of an Objaverse annotation ('by', 'by-sa', 'by-nc', 'cc0', ...), lower case."""
    if not annotation:
        return None
    value = annotation.get("license")
    if isinstance(value, dict):  # some dumps store {"slug": ..., "label": ...}
        value = value.get("slug") or value.get("label")
    return str(value).strip().lower() if value else None


def _read_uids_file(path: str) -> list[str]:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"objaverse: cannot read UID file {path!r} ({exc}); expected a text file, one UID a line"
        ) from exc
    uids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            uids.append(line[:-4] if line.endswith(".glb") else line)
    if not uids:
        raise InputError(f"objaverse: UID file {path!r} lists no UIDs; expected one UID a line")
    return uids


def select(selection: ObjaverseSelection, cache: ObjaverseCache) -> list[tuple[str, dict]]:
    """The (uid, extra meta) pairs a selection names, deduplicated, in order, limited."""
    paths = cache.object_paths()
    chosen: list[tuple[str, dict]] = []
    if selection.kind in ("uids", "uids-file"):
        uids = list(selection.values) if selection.kind == "uids" else _read_uids_file(selection.values[0])
        unknown = [u for u in uids if u not in paths]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise InputError(
                f"objaverse: uid(s) {shown} not found in {str(cache.root / 'object-paths.json.gz')!r}; "
                "expected 32-character Objaverse UIDs"
            )
        chosen = [(u, {}) for u in uids]
    elif selection.kind == "lvis":
        lvis = cache.lvis()
        unknown = [c for c in selection.values if c not in lvis]
        if unknown:
            near = sorted(lvis)[:8]
            raise InputError(
                f"objaverse: LVIS categor(y/ies) {', '.join(unknown)} not in "
                f"{str(cache.root / 'lvis-annotations.json.gz')!r}; known categories include {', '.join(near)}"
            )
        for cat in selection.values:
            chosen += [(u, {"lvis_category": cat}) for u in lvis[cat] if u in paths]
    else:
        chosen = [(u, {}) for u in cache.uids()]
    seen: set[str] = set()
    unique = []
    for uid, extra in chosen:
        if uid not in seen:
            seen.add(uid)
            unique.append((uid, extra))
    if selection.seed is not None:
        random.Random(selection.seed).shuffle(unique)
    if selection.limit is not None:
        unique = unique[: selection.limit]
    return unique


def objaverse_objects(
    spec: str, objaverse_dir: str | os.PathLike | None = None, offline: bool | None = None
) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """The objects an `objaverse:` spec selects: (the cache folder, [(uid, meta)]), meta with annotations.

    Reads object-paths, LVIS and the annotation shards of the selected objects (downloading them
    unless offline); GLBs are fetched later, by `render.sources.ObjectSource.load` in the worker that
    renders them. `render.sources` turns the pairs into sources (this module does not import it).
    """
    selection = parse_objaverse_spec(spec)
    cache = ObjaverseCache(cache_dir(objaverse_dir), offline=offline)
    picked = select(selection, cache)
    annotations = cache.annotations([u for u, _ in picked])
    paths = cache.object_paths()
    objects = []
    for uid, extra in picked:
        ann = annotations.get(uid)
        meta = {
            "uid": uid,
            "object_path": paths[uid],
            "licence": licence_of(ann),
            "annotated": ann is not None,
            **extra,
        }
        if ann:
            meta.update(
                name=ann.get("name"),
                face_count=ann.get("faceCount"),
                vertex_count=ann.get("vertexCount"),
                animation_count=ann.get("animationCount"),
            )
        objects.append((uid, meta))
    return cache.root, objects
