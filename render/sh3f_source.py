"""Sweet Home 3D furniture catalogues (`.sh3f`) as a render source.

A `.sh3f` file is a zip archive: one folder per object (an OBJ with its MTL and textures) and a
`PluginFurnitureCatalog.properties` (Java properties, ISO-8859-1 with `\\uXXXX` escapes) that lists
each object as numbered keys: `id#N`, `name#N`, `category#N`, `creator#N`, `model#N` (the OBJ's path
inside the archive), `modelRotation#N` (an optional 3x3 rotation, row-major, that turns the model into
Sweet Home 3D's frame), `doorOrWindow#N`, `width#N` / `depth#N` / `height#N` (cm), and, once for the
catalogue, `license=`. Debian and Ubuntu ship 820 everyday objects this way
(`apt-get download sweethome3d-furniture && dpkg -x sweethome3d-furniture_*.deb DIR`, then
`DIR/usr/share/sweethome3d/furniture/`).

Sweet Home 3D's application archive (`sweethome3d.jar`) holds its default catalogue the same way, under
`DEFAULT_CATALOG_MEMBER`, with every model in one resources folder: 100 more objects (Debian's and
Ubuntu's `sweethome3d` package: `apt-get download sweethome3d && dpkg -x sweethome3d_*.deb DIR`, then
`DIR/usr/share/sweethome3d/sweethome3d.jar`). It is read when named as a file; a folder is scanned for
`.sh3f` catalogues only, since other `.jar` archives are no catalogues.

Sweet Home 3D's frame is +Y up with the object's front facing +Z (towards a viewer on +Z). mv3d's world
is +Z up with the front view at azimuth 0 seen from -Y (docs/architecture.md, "Conventions", Cameras),
so a model is loaded as `Y_UP_TO_Z_UP @ modelRotation`, which puts its front towards -Y: azimuth 0 sees
the front.

Nothing is extracted to disk: the OBJ loader reads the MTL and textures through a resolver that only
serves members of the object's own folder inside the archive (names that leave it are refused), with
sizes bounded before anything is decoded.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError, safe_name

SH3F_SUFFIX = ".sh3f"
JAR_SUFFIX = ".jar"
CATALOG_MEMBER = "PluginFurnitureCatalog.properties"
DEFAULT_CATALOG_MEMBER = "com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties"
# Bounds for hostile archives: the catalogue text, one member and one object's members together
# (textures are held to `render.images.image_budget`, from their headers, before they are decoded).
MAX_CATALOG_BYTES = 16 * 1024 * 1024
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_OBJECT_BYTES = 512 * 1024 * 1024
MAX_OBJECTS = 100_000
# What reading a member raises for a corrupt, encrypted or oddly compressed one (zipfile's own types).
_MEMBER_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error)

# The catalogue's free-text licence -> the curation's licence codes (render.curation). Anything not
# recognised is recorded verbatim and rejected by the default curation, which accepts known codes only.
_LICENCE_PATTERNS = (
    (re.compile(r"public\s+domain|\bcc[- ]?0\b", re.I), "cc0"),
    (re.compile(r"attribution[- ]+share\s*alike|\bcc[- ]?by[- ]?sa\b", re.I), "by-sa"),
    (re.compile(r"non[- ]?commercial|\bnc\b", re.I), "by-nc"),
    (re.compile(r"no\s*deriv|\bnd\b", re.I), "by-nd"),
    (re.compile(r"attribution|\bcc[- ]?by\b", re.I), "by"),
)


def licence_code(text: str | None) -> str | None:
    """The curation licence code ("cc0", "by", ...) for a catalogue's licence text; None if unknown."""
    if not text:
        return None
    for pattern, code in _LICENCE_PATTERNS:
        if pattern.search(text):
            return code
    return None


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(value: str) -> str:
    def repl(m: re.Match) -> str:
        tok = m.group(1)
        if tok[0] == "u" and len(tok) == 5:
            return chr(int(tok[1:], 16))
        return _ESCAPES.get(tok, tok)

    return _ESCAPE.sub(repl, value)


def parse_properties(text: str) -> dict[str, str]:
    """Java `.properties` text -> {key: value} (comments, `=`/`:`/space separators, continuations)."""
    out: dict[str, str] = {}
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.lstrip() if not pending else raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        # A line ending in an odd number of backslashes continues on the next line.
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    for line in logical:
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:\s]?\s*(.*)$", line, re.S)
        if m is None:
            continue
        out[_unescape(m.group(1))] = _unescape(m.group(2))
    return out


@dataclass(frozen=True)
class CatalogEntry:
    """One object of a catalogue: its index N, its keys without `#N`, and the catalogue's licence."""

    index: int
    keys: dict[str, str]
    licence_text: str | None

    @property
    def model(self) -> str:
        """The OBJ's member path inside the archive (no leading slash)."""
        return self.keys.get("model", "").lstrip("/")

    def rotation(self, where: str) -> np.ndarray | None:
        """`modelRotation` as a (3, 3) float64 matrix, or None when absent; `InputError` if malformed."""
        text = self.keys.get("modelRotation")
        if not text:
            return None
        try:
            values = [float(v) for v in text.split()]
            if len(values) != 9 or not np.all(np.isfinite(values)):
                raise ValueError
            if not np.linalg.cond(np.reshape(values, (3, 3))) < 1e6:
                raise ValueError
        except ValueError:
            raise InputError(
                f"{where}: modelRotation#{self.index} = {text!r}: expected 9 finite numbers, an invertible rotation"
            ) from None
        return np.asarray(values, dtype=np.float64).reshape(3, 3)


def read_catalog(path: str | Path) -> list[CatalogEntry]:
    """The objects a `.sh3f` catalogue lists, in index order; `InputError` for a malformed archive."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            member = next((m for m in (CATALOG_MEMBER, DEFAULT_CATALOG_MEMBER) if m in names), None)
            if member is None:
                raise InputError(
                    f"{path}: no {CATALOG_MEMBER} (or Sweet Home 3D's {DEFAULT_CATALOG_MEMBER}) in the "
                    "archive: expected a Sweet Home 3D furniture catalogue"
                )
            info = zf.getinfo(member)
            if info.file_size > MAX_CATALOG_BYTES:
                raise InputError(
                    f"{path}: {member} is {info.file_size} bytes: expected at most {MAX_CATALOG_BYTES}"
                )
            text = zf.read(info).decode("latin-1")
    except _MEMBER_ERRORS as exc:
        raise InputError(f"{path}: cannot read the catalogue as a zip archive ({exc})") from None
    props = parse_properties(text)
    by_index: dict[int, dict[str, str]] = {}
    for key, value in props.items():
        name, sep, idx = key.partition("#")
        if sep and idx.isdigit():
            by_index.setdefault(int(idx), {})[name] = value
    if len(by_index) > MAX_OBJECTS:
        raise InputError(
            f"{path}: the catalogue lists {len(by_index)} objects: expected at most {MAX_OBJECTS}"
        )
    entries = [
        CatalogEntry(index=i, keys=keys, licence_text=props.get("license"))
        for i, keys in sorted(by_index.items())
        if keys.get("model")
    ]
    return entries


@dataclass(frozen=True)
class CatalogObject:
    """What a render source needs of one catalogue object (`render.sources` makes it an `ObjectSource`).

    `location` is "PATH#INDEX" for `load_sh3f_object`; `meta` holds `name`, `category`, `creator`, `catalog` (the file's stem), `catalog_id` (the
    catalogue's own id), `licence` (a curation code, or None), `licence_text`, `door_or_window` and
    `size_cm` ([width, depth, height]).
    """

    object_id: str
    spec: str
    meta: dict[str, Any]
    location: str


def catalog_objects(path: str | Path) -> list[CatalogObject]:
    """One `CatalogObject` per object a catalogue lists, in index order."""
    path = Path(path).expanduser().resolve()
    entries = read_catalog(path)
    if not entries:
        raise InputError(f"{path}: the catalogue lists no objects with a model")
    out = []
    for e in entries:
        k = e.keys
        ident = k.get("id") or f"{path.stem}#{e.index}"
        # From the catalogue's file name, not its folder: the same catalogue gives the same ids on every
        # machine, so a committed split (a list of ids) selects the same objects everywhere.
        digest = hashlib.sha1(f"{path.name}|{ident}|{e.model}".encode()).hexdigest()[:8]
        stem = posixpath.splitext(posixpath.basename(e.model))[0]
        size: list[float] | None
        try:
            size = [float(k[x]) for x in ("width", "depth", "height")]
        except (KeyError, ValueError):
            size = None
        meta: dict[str, Any] = {
            "name": k.get("name", stem),
            "category": k.get("category", ""),
            "creator": k.get("creator", ""),
            "catalog": path.stem,
            "catalog_id": ident,
            "licence": licence_code(e.licence_text),
            "licence_text": e.licence_text,
            "door_or_window": k.get("doorOrWindow", "false").lower() == "true",
            "size_cm": size,
        }
        out.append(
            CatalogObject(
                # 48 characters a part: the committed split lists these ids
                object_id=f"sh3d-{safe_name(path.stem, 48)}-{safe_name(stem, 48)}-{digest}",
                spec=f"{path}#{e.model}",
                meta=meta,
                location=f"{path}#{e.index}",
            )
        )
    return out


class _ArchiveFolder:
    """Serves the members of one folder inside an open zip archive to trimesh's OBJ loader.

    Names are resolved relative to the folder; a name that leaves it (`../x`, an absolute path) or is
    too large is refused.
    """

    def __init__(self, zf: zipfile.ZipFile, folder: str, where: str):
        self.zf, self.folder, self.where = zf, folder.strip("/"), where
        self.read_bytes = 0
        # trimesh logs and skips a material file or texture its resolver fails to give; what was
        # refused is kept here so that the load fails with the reason instead of going on without it.
        self.refused: list[str] = []

    def member(self, name: str) -> str:
        name = str(name).replace("\\", "/")
        if name.startswith("/") or re.match(r"^[A-Za-z]:/", name):
            # An absolute path from the author's machine (a slip some catalogue materials carry, e.g.
            # /home/NAME/.../map.jpg): only its file name is looked up, inside the object's folder.
            name = posixpath.basename(name)
        member = posixpath.normpath(posixpath.join(self.folder, name))
        if (
            not member
            or member.startswith("..")
            or (self.folder and not member.startswith(self.folder + "/"))
        ):
            raise InputError(f"{self.where}: the model names {name!r}, outside its folder {self.folder!r}")
        return member

    def get(self, name: str) -> bytes:
        try:
            return self._get(name)
        except InputError as exc:
            self.refused.append(str(exc))
            raise

    def _get(self, name: str) -> bytes:
        member = self.member(name)
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            # Case differs on the Windows machines these catalogues were made on.
            matches = [i for i in self.zf.infolist() if i.filename.lower() == member.lower()]
            if not matches:
                raise
            info = matches[0]
        self.read_bytes += info.file_size
        if info.file_size > MAX_MEMBER_BYTES or self.read_bytes > MAX_OBJECT_BYTES:
            raise InputError(f"{self.where}: {member} makes the object larger than {MAX_OBJECT_BYTES} bytes")
        try:
            return self.zf.read(info)
        except _MEMBER_ERRORS as exc:
            raise InputError(f"{self.where}: cannot read {member} from the archive ({exc})") from None


def _resolver(folder: _ArchiveFolder):
    import trimesh

    class ArchiveResolver(trimesh.resolvers.Resolver):
        def __init__(self) -> None:
            pass

        def get(self, key):
            return folder.get(key)

        def write(self, name, data):
            raise InputError(f"{folder.where}: the loader tried to write {name!r}")

        def namespaced(self, namespace):
            return self

        def keys(self):
            prefix = folder.folder + "/"
            return [i.filename[len(prefix) :] for i in folder.zf.infolist() if i.filename.startswith(prefix)]

    return ArchiveResolver()


def load_sh3f_object(location: str, spec: str):
    """Load catalogue object `location` ("PATH#INDEX") normalised to the unit cube (a `LoadedMesh`)."""
    import io

    import trimesh

    from render.images import image_budget
    from render.meshes import Y_UP_TO_Z_UP, LoadedMesh, decode_textures, normalize_scene, recording_resolver

    path_str, _, index_str = location.rpartition("#")
    path = Path(path_str)
    entries = {e.index: e for e in read_catalog(path)}
    try:
        entry = entries[int(index_str)]
    except (KeyError, ValueError):
        raise InputError(f"{spec}: the catalogue {path} has no object #{index_str}") from None
    where = f"{path}#{entry.model}"
    rotation = entry.rotation(str(path))
    with zipfile.ZipFile(path) as zf, image_budget(where):  # textures: checked before decoding
        folder = _ArchiveFolder(zf, posixpath.dirname(entry.model), where)
        try:
            obj = folder.get(posixpath.basename(entry.model))
        except KeyError:
            raise InputError(f"{where}: the model file is missing from the archive") from None
        resolver, unread = recording_resolver(_resolver(folder))
        try:
            scene = trimesh.load_scene(io.BytesIO(obj), file_type="obj", resolver=resolver, process=False)
        except InputError:
            raise
        except Exception as exc:  # trimesh raises many types for malformed files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{where}: cannot read the OBJ model: {reason}") from exc
        if folder.refused:
            raise InputError(folder.refused[0])
        decode_textures(scene)
    pre = Y_UP_TO_Z_UP.copy()
    if rotation is not None:
        rot4 = np.eye(4)
        rot4[:3, :3] = rotation
        pre = pre @ rot4
    scene, s2w = normalize_scene(scene, pre, source=where)
    return LoadedMesh(scene=scene, source_to_world=s2w, source=where, unread_files=tuple(unread))
