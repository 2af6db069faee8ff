"""Render SOURCES: what `mv3d render-dataset SOURCES...` accepts, resolved into a list of objects.

A source spec is one of:

- a mesh file: `.obj .ply .stl .off .glb .gltf` (case-insensitive);
- a Sweet Home 3D furniture catalogue (`.sh3f`, `render.sh3f_source`): every object it lists, with
  its name, category, creator and licence in the manifest; Sweet Home 3D's own `sweethome3d.jar`
  (its default catalogue) likewise;
- a folder: every mesh file and `.sh3f` catalogue below it (recursively, hidden files and folders skipped, sorted by relative
  path, so the order is the same on every machine). A Google-Scanned-Objects-style folder, where each
  object is a subfolder holding `meshes/model.obj` and its textures, is such a folder; its objects are
  named after their subfolder;
- `procedural:N:SEED`: the procedural objects 0..N-1 of seed SEED (`render.procedural`);
  `procedural:N:SEED:plain`: their bodies alone (plain objects: no attachments, marker or handle);
- an `objaverse:` selection (grammar in `render.objaverse_source`), e.g. `objaverse:uids=UID,UID`,
  `objaverse:uids-file=PATH`, `objaverse:lvis=chair,mug:limit=20`, `objaverse:all:seed=0:limit=100`.

`select` (the CLI's `--select FILE` or `--select FILE.json:KEY`) keeps only the objects whose ids a
committed split lists (`read_selection`).

Mesh files and folders are read in the up axis their format implies (`render.meshes.load_mesh`: +Y for
glTF, +Z otherwise) unless `up_axis` says otherwise for all of them (`--up-axis y` for a folder of OBJ files
exported +Y up, as Blender's and most exporters' defaults write them).

Every object gets an `object_id` that is unique across all sources and safe as a folder name: a
readable name plus a short hash of the resolved file path for files (two `model.obj` files differ; the
same file read in another up axis than its format's is another object, so caches never mix the two),
`procedural-sSEED-INDEX` (`procedural-plain-sSEED-INDEX`) and `objaverse-UID` otherwise. The same object named twice (a file and a folder
holding it) is kept once. Resolving is cheap: nothing is loaded or downloaded until `ObjectSource.load`,
which the render job calls in its workers.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from render.common import InputError, safe_name
from render.meshes import SUPPORTED_FORMATS, check_up_axis, default_up_axis
from render.sh3f_source import JAR_SUFFIX, SH3F_SUFFIX, catalog_objects

if TYPE_CHECKING:
    from render.meshes import LoadedMesh

# The loader's formats, so that a folder scan picks exactly the files `load_mesh` reads.
MESH_EXTENSIONS = tuple(SUPPORTED_FORMATS)
PROCEDURAL_PREFIX = "procedural:"
#: the most objects one procedural source makes (their ids number them in six digits); a larger N
#: built its list of sources until the memory ran out
MAX_PROCEDURAL = 1_000_000
OBJAVERSE_PREFIX = "objaverse:"
SPEC_FORMS = (
    "a mesh file ("
    + " ".join(MESH_EXTENSIONS)
    + "), a Sweet Home 3D catalogue (.sh3f, or sweethome3d.jar), a folder of those, procedural:N:SEED[:plain], or an objaverse: "
    "selection (objaverse:uids=UID,.. | objaverse:uids-file=PATH | objaverse:lvis=CAT,.. | objaverse:all, "
    "with optional :limit=K :seed=S)"
)

# File stems that say nothing about the object (GSO's meshes/model.obj, exporters' defaults): such
# files are named after the nearest folder whose name is not generic either.
_GENERIC_NAMES = {
    "model",
    "mesh",
    "meshes",
    "models",
    "scene",
    "object",
    "untitled",
    "textured",
    "normalized",
}


@dataclass(frozen=True)
class ObjectSource:
    """One object to render.

    Attributes:
        object_id: unique across all sources of a job and filesystem-safe (used as the folder name).
        spec: human-readable origin: a path, `procedural:SEED:INDEX[:plain]`, `objaverse:UID`.
        meta: JSON-serialisable facts for the manifest and for curation: `licence` (None if unknown;
            absent for the user's own files), annotations such as `face_count`, `animation_count`, ...
        kind: how `load` gets the mesh: "file", "procedural" or "objaverse" (keys of `_LOADERS`).
        location: what that loader needs: the absolute file path, "SEED:INDEX" ("SEED:INDEX:plain"), or
            the objaverse cache folder.
    """

    object_id: str
    spec: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    kind: str = "file"
    location: str = ""

    def load(self) -> LoadedMesh:
        """Load the object, normalised to the unit cube; `InputError` if it is malformed or unreachable."""
        try:
            loader = _LOADERS[self.kind]
        except KeyError:
            raise InputError(
                f"object {self.object_id!r}: unknown source kind {self.kind!r}; expected one of {sorted(_LOADERS)}"
            ) from None
        return loader(self)


def _load_file(src: ObjectSource) -> LoadedMesh:
    from render.meshes import load_mesh

    return load_mesh(src.location, up_axis=src.meta.get("up_axis"))


def _load_procedural(src: ObjectSource) -> LoadedMesh:
    from render.meshes import LoadedMesh, normalize_scene
    from render.procedural import procedural_object

    seed, index, *plain = src.location.split(":")
    scene, source_to_world = normalize_scene(
        procedural_object(int(seed), int(index), plain == ["plain"]), source=src.spec
    )
    return LoadedMesh(scene=scene, source_to_world=source_to_world, source=src.spec)


def _load_sh3f(src: ObjectSource) -> LoadedMesh:
    from render.sh3f_source import load_sh3f_object

    return load_sh3f_object(src.location, src.spec)


def _load_objaverse(src: ObjectSource) -> LoadedMesh:
    from render.meshes import load_mesh
    from render.objaverse_source import ObjaverseCache

    path = ObjaverseCache(src.location).object_file(src.meta["uid"], src.meta.get("object_path"))
    return load_mesh(path)


# The explicit kind -> loader table (no names of functions in strings, no registry to import from).
_LOADERS = {
    "file": _load_file,
    "procedural": _load_procedural,
    "objaverse": _load_objaverse,
    "sh3f": _load_sh3f,
}


#: What an object id (a folder name under a dataset's objects/) may look like.
_OBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def safe_object_id(prefix: str, name: str) -> str:
    """`prefix-name` as a single safe folder name: a name with other characters (an Objaverse uid with
    `../`, spaces, slashes) is sanitised and gets a digest of the original, so distinct names stay
    distinct and none leaves its folder."""
    clean = safe_name(str(name))
    if clean != str(name):
        clean += "-" + hashlib.sha256(str(name).encode()).hexdigest()[:10]
    return f"{prefix}-{clean}"


def check_object_id(object_id: Any) -> str:
    """`object_id` if it is one safe folder name (letters, digits, `._-`, not `.`/`..`); else `InputError`."""
    if not isinstance(object_id, str) or not _OBJECT_ID.fullmatch(object_id) or set(object_id) <= {"."}:
        raise InputError(
            f"object id {object_id!r}: expected one folder name of letters, digits, '.', '_' and '-'"
        )
    return object_id


def _readable_name(path: Path) -> str:
    """The file's stem, or for generic stems (model.obj) the nearest non-generic folder name."""
    if path.stem.lower() not in _GENERIC_NAMES:
        return path.stem
    for parent in path.parents:
        if parent.name and parent.name.lower() not in _GENERIC_NAMES:
            return parent.name
    return path.stem


def file_source(path: str | os.PathLike, up_axis: str | None = None) -> ObjectSource:
    """The `ObjectSource` of one mesh file (the path need not be absolute).

    `up_axis` ("y" or "z"; None: the format's, +Y for glTF and +Z otherwise) is the file's up axis; one
    other than the format's is recorded in `meta["up_axis"]` and changes the object id.
    """
    resolved = Path(path).expanduser().resolve()
    meta: dict[str, Any] = {"format": resolved.suffix.lower().lstrip(".")}
    key = str(resolved)
    up_axis = check_up_axis(up_axis)
    if up_axis is not None and up_axis != default_up_axis(resolved):
        meta["up_axis"] = up_axis
        key += f"|up={up_axis}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return ObjectSource(
        object_id=f"{safe_name(_readable_name(resolved))}-{digest}",
        spec=str(path),
        meta=meta,
        kind="file",
        location=str(resolved),
    )


def sh3f_sources(path: str | os.PathLike) -> list[ObjectSource]:
    """The `ObjectSource`s of a Sweet Home 3D catalogue: one per object it lists (`render.sh3f_source`)."""
    return [
        ObjectSource(object_id=o.object_id, spec=o.spec, meta=o.meta, kind="sh3f", location=o.location)
        for o in catalog_objects(path)
    ]


def _is_mesh(path: Path) -> bool:
    return path.suffix.lower() in MESH_EXTENSIONS


def scan_folder(folder: str | os.PathLike, suffixes: tuple[str, ...] = MESH_EXTENSIONS) -> list[Path]:
    """Files below `folder` ending in `suffixes` (default: mesh files), recursively, hidden entries
    skipped, sorted by relative path."""
    root = Path(folder)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and p.suffix.lower() in suffixes:
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def procedural_sources(n: int, seed: int, plain: bool = False) -> list[ObjectSource]:
    """`ObjectSource`s for procedural objects 0..n-1 of `seed` (their bodies alone if `plain`)."""
    tag, suffix = ("plain-", ":plain") if plain else ("", "")
    return [
        ObjectSource(
            object_id=f"procedural-{tag}s{seed}-{i:06d}",
            spec=f"procedural:{seed}:{i}{suffix}",
            # Made by mv3d itself: no third-party rights.
            meta={"licence": "cc0", "seed": seed, "index": i, "plain": plain},
            kind="procedural",
            location=f"{seed}:{i}{suffix}",
        )
        for i in range(n)
    ]


def _parse_procedural(spec: str) -> tuple[int, int, bool]:
    parts = spec[len(PROCEDURAL_PREFIX) :].split(":")
    try:
        if len(parts) not in (2, 3) or parts[2:] not in ([], ["plain"]):
            raise ValueError
        n, seed = int(parts[0]), int(parts[1])
        if not 1 <= n <= MAX_PROCEDURAL or seed < 0:
            raise ValueError
    except ValueError:
        raise InputError(
            f"bad source {spec!r}: expected procedural:N:SEED with integers 1 <= N <= {MAX_PROCEDURAL} "
            "(how many objects) and SEED >= 0, optionally followed by :plain"
        ) from None
    return n, seed, parts[2:] == ["plain"]


def resolve_source(
    spec: str, objaverse_dir: str | os.PathLike | None = None, up_axis: str | None = None
) -> list[ObjectSource]:
    """The objects one spec names (see the module docstring); `InputError` for a bad spec.

    `up_axis` applies to mesh files and folders (see `file_source`), not to procedural or objaverse objects.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty source {spec!r}; expected {SPEC_FORMS}")
    if spec.startswith(PROCEDURAL_PREFIX):
        return procedural_sources(*_parse_procedural(spec))
    if spec.startswith(OBJAVERSE_PREFIX):
        from render.objaverse_source import objaverse_objects

        root, objects = objaverse_objects(spec, objaverse_dir)
        return [
            ObjectSource(
                safe_object_id("objaverse", uid),
                f"objaverse:{uid}",
                meta,
                kind="objaverse",
                location=str(root),
            )
            for uid, meta in objects
        ]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = scan_folder(path, MESH_EXTENSIONS + (SH3F_SUFFIX,))
        if not files:
            raise InputError(
                f"source folder {spec!r} holds no mesh files; expected files ending in "
                f"{' '.join(MESH_EXTENSIONS)} or {SH3F_SUFFIX} catalogues"
            )
        out: list[ObjectSource] = []
        for p in files:
            out.extend(sh3f_sources(p) if p.suffix.lower() == SH3F_SUFFIX else [file_source(p, up_axis)])
        return out
    if path.is_file() and path.suffix.lower() in (SH3F_SUFFIX, JAR_SUFFIX):
        return sh3f_sources(path)
    if path.is_file():
        if not _is_mesh(path):
            raise InputError(
                f"source {spec!r} is not a mesh file; expected one ending in {' '.join(MESH_EXTENSIONS)}"
            )
        return [file_source(path, up_axis)]
    raise InputError(f"source {spec!r} does not exist; expected {SPEC_FORMS}")


MAX_SELECTION_BYTES = 64 * 1024 * 1024


def read_selection(selection: str) -> set[str]:
    """The object ids a selection names: "FILE" (a text file, one id per line, `#` comments) or
    "FILE:KEY" (a JSON file whose top-level KEY is a list of ids, e.g. a committed split's "test").
    """
    path_str, key = selection, None
    if not Path(selection).is_file() and ":" in selection:
        path_str, _, key = selection.rpartition(":")
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise InputError(f"selection {selection!r}: {path} is not a file; expected FILE or FILE.json:KEY")
    if path.stat().st_size > MAX_SELECTION_BYTES:
        raise InputError(f"selection {path}: larger than {MAX_SELECTION_BYTES} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
    if key is None:
        return {ln.split("#", 1)[0].strip() for ln in text.splitlines()} - {""}
    import json

    try:
        ids = json.loads(text)[key]
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"selection {selection!r}: expected a JSON object whose key {key!r} is a list of ids"
        ) from None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError(f"selection {selection!r}: {key!r} is not a list of object ids")
    return set(ids)


def resolve_sources(
    specs: list[str] | list[Any],
    objaverse_dir: str | os.PathLike | None = None,
    up_axis: str | None = None,
    select: str | None = None,
) -> list[ObjectSource]:
    """All objects the specs name, in order, each object once (first occurrence wins).

    The one place sources are resolved: `render.jobs.render_dataset` and `eval.runner.run_benchmark`
    both come here.

    Args:
        specs: source specs (see the module docstring); `ObjectSource`-like objects (`object_id`,
            `spec`, `meta`, `load()`) may stand among them and are taken as they are.
        objaverse_dir: the objaverse cache folder for `objaverse:` specs (default: the package's).
        up_axis: "y" or "z": the up axis of every mesh file and folder among the specs (None: each
            format's own, +Y for glTF and +Z otherwise).
        select: keep only the objects whose ids `read_selection(select)` lists (a committed split).

    Raises:
        InputError: no specs, a spec that is malformed, missing or selects nothing, two given
            objects with one object id, or a selection that keeps no object.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise InputError(f"no sources given; expected one or more of: {SPEC_FORMS}")
    up_axis = check_up_axis(up_axis)
    out: list[ObjectSource] = []
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, (str, os.PathLike)):
            if spec.object_id in seen:
                raise InputError(
                    f"object id {spec.object_id!r} appears twice among the sources: expected distinct objects"
                )
            seen.add(spec.object_id)
            out.append(spec)
            continue
        spec = os.fspath(spec)
        objects = resolve_source(spec, objaverse_dir, up_axis)
        if not objects:
            raise InputError(f"source {spec!r} selects no objects")
        for obj in objects:
            if obj.object_id not in seen:
                seen.add(obj.object_id)
                out.append(obj)
    if select is not None:
        keep = read_selection(select)
        out = [o for o in out if o.object_id in keep]
        if not out:
            raise InputError(f"selection {select!r} keeps none of the {len(seen)} objects the sources name")
    return out
