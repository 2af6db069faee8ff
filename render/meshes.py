"""Mesh loading and normalisation: any supported file -> a trimesh scene in the unit cube.

Formats: OBJ (+MTL and textures), PLY (vertex colours), STL, OFF, glTF 2 (``.glb`` / ``.gltf``, with
textures, materials, vertex colours and node transforms). Everything is loaded as a `trimesh.Scene`.

Normalisation (docs/architecture.md, "Conventions"): the scene is moved so that its bounding-box centre is the origin and scaled
so that its largest extent is 1. The transform that does it is RECORDED as `source_to_world` (a 4x4
that maps source-file coordinates to mv3d's world frame) and written into every orbit dataset;
nothing else is ever rescaled silently.

Up axis: mv3d's world is +Z up. glTF is +Y up with the front of an asset facing +Z (glTF 2 spec,
section 3.4), so glTF files are rotated (x, y, z) -> (x, -z, y), as Blender's importer does; the front
then faces -Y, the azimuth-0 camera. OBJ/PLY/STL/OFF have no defined up axis and are taken as +Z up
unless the caller says ``up_axis="y"``. The rotation is part of `source_to_world`.

Malformed input is rejected with `InputError` naming the file and the reason. Files whose headers
claim element counts (PLY, OFF, binary STL, glTF accessors) are checked against the file size
BEFORE trimesh allocates anything, so a header that claims billions of elements costs nothing.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError
from render.images import image_budget

#: Extensions `load_mesh` reads, mapped to the trimesh file type.
SUPPORTED_FORMATS: dict[str, str] = {
    ".obj": "obj",
    ".ply": "ply",
    ".stl": "stl",
    ".off": "off",
    ".glb": "glb",
    ".gltf": "gltf",
}

#: Hard ceiling on any element count a header may claim (well above any real asset, far below a
#: count that would exhaust memory).
MAX_ELEMENTS = 200_000_000

#: (x, y, z) -> (x, -z, y): a +Y-up frame (glTF) to mv3d's +Z-up world.
Y_UP_TO_Z_UP = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


@dataclass
class LoadedMesh:
    """A mesh scene normalised to the unit cube.

    Attributes:
        scene: `trimesh.Scene` in world coordinates (largest extent 1, bounding-box centre at the
            origin, +Z up); its graph carries the normalisation, geometry keeps its source vertices.
            Vertex and face colours are sRGB, as in PLY and OBJ files and images (glTF's linear
            COLOR_0 is converted when read); renderers convert them to linear for shading.
        source_to_world: (4, 4) float64 mapping source-file coordinates to world coordinates.
        source: where the mesh came from (a path, or a description for in-memory meshes).
        unread_files: files the mesh names (a material library, textures) that could not be read:
            missing, or outside the mesh's folder. The mesh is drawn without them, so a render job
            records them in its manifest.
    """

    scene: object  # trimesh.Scene (typed loosely so importing this module stays cheap)
    source_to_world: np.ndarray
    source: str
    unread_files: tuple[str, ...] = ()

    @property
    def num_faces(self) -> int:
        return int(sum(len(g.faces) for g in self.scene.geometry.values() if hasattr(g, "faces")))

    def has_color(self) -> bool:
        """Whether any geometry carries a material, texture or vertex/face colours."""
        return any(_has_visual(g) for g in self.scene.geometry.values())

    def world_bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned bounds in world coordinates."""
        return np.asarray(self.scene.bounds, dtype=np.float64)


def _has_visual(geom) -> bool:
    visual = getattr(geom, "visual", None)
    return visual is not None and getattr(visual, "kind", None) is not None


# ------------------------------------------------------------------------------------------------
# Header checks (before trimesh allocates)
# ------------------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": 1, "int8": 1, "uchar": 1, "uint8": 1,
    "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
    "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4,
    "double": 8, "float64": 8,
}  # fmt: skip


def _check_count(path: Path, what: str, count: int) -> None:
    if count < 0:
        raise InputError(f"{path}: header claims {count} {what}: expected a non-negative count")
    if count > MAX_ELEMENTS:
        raise InputError(f"{path}: header claims {count:,} {what}, more than the {MAX_ELEMENTS:,} supported")


def _check_ply_header(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if not head.startswith(b"ply"):
        raise InputError(f"{path}: not a PLY file (it does not start with 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise InputError(f"{path}: PLY header has no 'end_header' in its first 64 KiB")
    body_start = head.find(b"\n", end)
    body_start = (body_start + 1) if body_start >= 0 else len(head)
    lines = head[:end].decode("ascii", errors="replace").splitlines()
    fmt = "ascii"
    elements: list[tuple[str, int, int]] = []  # name, count, minimal bytes per element
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format" and len(parts) >= 2:
            fmt = parts[1]
        elif parts[0] == "element":
            try:
                name, count = parts[1], int(parts[2])
            except (IndexError, ValueError) as exc:
                raise InputError(f"{path}: malformed PLY element line '{line.strip()}'") from exc
            _check_count(path, f"'{name}' elements", count)
            elements.append((name, count, 0))
        elif parts[0] == "property" and elements:
            name, count, per = elements[-1]
            if fmt == "ascii":
                per += 2  # at least one digit and a separator per value
            elif len(parts) >= 2 and parts[1] == "list":
                per += _PLY_TYPES.get(parts[2] if len(parts) > 2 else "", 1)  # the list length itself
            else:
                per += _PLY_TYPES.get(parts[1] if len(parts) > 1 else "", 1)
            elements[-1] = (name, count, per)
    needed = sum(count * per for _, count, per in elements)
    available = size - body_start
    if needed > available:
        desc = ", ".join(f"{count:,} {name}" for name, count, _ in elements)
        raise InputError(
            f"{path}: PLY header claims {desc}, which needs at least {needed:,} bytes, "
            f"but the file has only {available:,} after its header (truncated or corrupt)"
        )
    if not any(name == "face" and count > 0 for name, count, _ in elements):
        raise InputError(f"{path}: PLY file has no faces (a point cloud): expected a triangle mesh")


def _check_off_header(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("ascii", errors="replace")
    tokens: list[str] = []
    for line in head.splitlines():
        line = line.split("#", 1)[0]
        tokens.extend(line.split())
        if len(tokens) >= 4:
            break
    if not tokens or not tokens[0].upper().endswith("OFF"):
        raise InputError(f"{path}: not an OFF file (it does not start with 'OFF')")
    counts = tokens[1:4]
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (IndexError, ValueError) as exc:
        raise InputError(f"{path}: OFF header has no vertex and face counts") from exc
    _check_count(path, "vertices", nv)
    _check_count(path, "faces", nf)
    needed = nv * 6 + nf * 8  # "0 0 0\n" per vertex, "3 0 1 2\n" per face at the least
    if needed > size:
        raise InputError(
            f"{path}: OFF header claims {nv:,} vertices and {nf:,} faces, which needs at least "
            f"{needed:,} bytes, but the file has {size:,} (truncated or corrupt)"
        )
    if nf == 0:
        raise InputError(f"{path}: OFF file has no faces (a point cloud): expected a triangle mesh")


def _check_stl(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        head = fh.read(84)
    if len(head) >= 84:
        (n,) = struct.unpack("<I", head[80:84])
        if size == 84 + 50 * n:
            if n == 0:
                raise InputError(f"{path}: binary STL with 0 triangles: expected a triangle mesh")
            return
    if head.lstrip().lower().startswith(b"solid"):
        return  # ASCII STL: no counts to trust, its size bounds what trimesh can allocate
    n = struct.unpack("<I", head[80:84])[0] if len(head) >= 84 else 0
    raise InputError(
        f"{path}: binary STL header claims {n:,} triangles ({84 + 50 * n:,} bytes) but the file has "
        f"{size:,} bytes (truncated or corrupt)"
    )


_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}


def _gltf_list(path: Path, doc: dict, key: str) -> list[dict]:
    """doc[key] as a list of objects (glTF's arrays of buffers, nodes, ...), or `InputError`."""
    items = doc.get(key, []) or []
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise InputError(f"{path}: glTF '{key}' must be a list of objects")
    return items


def _gltf_int(path: Path, value: object, what: str) -> int:
    """A non-negative integer field of a glTF file (byteLength, count, an index), or `InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{path}: glTF {what} is {value!r}: expected a non-negative integer")
    return value


def _check_gltf_nodes(path: Path, doc: dict) -> None:
    """Nodes form a forest: child indices in range, no node with two parents, no cycle (trimesh follows
    children without a guard: a cycle ended in a KeyError)."""
    nodes = _gltf_list(path, doc, "nodes")
    parent: dict[int, int] = {}
    for i, node in enumerate(nodes):
        children = node.get("children", []) or []
        if not isinstance(children, list):
            raise InputError(f"{path}: glTF node {i} children must be a list of node indices")
        for c in children:
            c = _gltf_int(path, c, f"node {i} child")
            if c >= len(nodes):
                raise InputError(f"{path}: glTF node {i} has child {c}, beyond the {len(nodes)} nodes")
            if c == i or c in parent:
                raise InputError(
                    f"{path}: glTF node {c} has two parents or is its own child: expected a tree of nodes"
                )
            parent[c] = i
    for start in parent:  # with one parent each, a cycle is a walk up that comes back
        seen, n = {start}, start
        while n in parent:
            n = parent[n]
            if n in seen:
                raise InputError(f"{path}: glTF nodes {sorted(seen)} form a cycle: expected a tree of nodes")
            seen.add(n)
    for s, scene in enumerate(_gltf_list(path, doc, "scenes")):
        roots = scene.get("nodes", []) or []
        if not isinstance(roots, list):
            raise InputError(f"{path}: glTF scene {s} nodes must be a list of node indices")
        for r in roots:
            if _gltf_int(path, r, f"scene {s} node") >= len(nodes):
                raise InputError(f"{path}: glTF scene {s} names node {r}, beyond the {len(nodes)} nodes")


def _check_gltf_json(path: Path, doc: object, bin_size: int | None) -> None:
    if not isinstance(doc, dict):
        raise InputError(f"{path}: glTF JSON is not an object")
    asset = doc.get("asset")
    version = str(asset.get("version", "")) if isinstance(asset, dict) else ""
    if not version.startswith("2"):
        found = f"version '{version}'" if version else "no asset.version (glTF 1.0 layout)"
        raise InputError(f"{path}: glTF {found}: only glTF 2.0 is supported (convert it, e.g. with Blender)")
    for key in ("meshes", "materials", "textures", "images", "samplers", "scenes", "nodes"):
        _gltf_list(path, doc, key)
    _check_gltf_nodes(path, doc)
    buffers = _gltf_list(path, doc, "buffers")
    buffer_sizes: list[int] = []
    for i, buf in enumerate(buffers):
        length = _gltf_int(path, buf.get("byteLength", 0), f"buffer {i} byteLength")
        uri = buf.get("uri")
        if uri is not None and not isinstance(uri, str):
            raise InputError(f"{path}: glTF buffer {i} uri is {uri!r}: expected a string")
        if uri is None:
            available = bin_size if bin_size is not None else 0
            if length > available:
                raise InputError(
                    f"{path}: glTF buffer {i} claims {length:,} bytes but the binary chunk has {available:,}"
                )
        elif not uri.startswith("data:"):
            ext = path.parent / uri
            rel = Path(uri)
            if rel.is_absolute() or ".." in rel.parts:
                raise InputError(f"{path}: glTF buffer {i} refers to '{uri}': expected a file next to it")
            if not ext.is_file():
                raise InputError(
                    f"{path}: glTF buffer {i} refers to '{uri}', which does not exist next to it"
                )
            if ext.stat().st_size < length:
                raise InputError(
                    f"{path}: glTF buffer file '{uri}' is shorter than its declared {length:,} bytes"
                )
        buffer_sizes.append(length)
    views = _gltf_list(path, doc, "bufferViews")
    for i, view in enumerate(views):
        b = _gltf_int(path, view.get("buffer", 0), f"bufferView {i} buffer")
        end = _gltf_int(path, view.get("byteOffset", 0), f"bufferView {i} byteOffset") + _gltf_int(
            path, view.get("byteLength", 0), f"bufferView {i} byteLength"
        )
        if "byteStride" in view:
            _gltf_int(path, view["byteStride"], f"bufferView {i} byteStride")
        if b >= len(buffer_sizes) or end > buffer_sizes[b]:
            raise InputError(f"{path}: glTF bufferView {i} reaches byte {end:,}, beyond its buffer")
    for i, acc in enumerate(_gltf_list(path, doc, "accessors")):
        count = _gltf_int(path, acc.get("count", 0), f"accessor {i} count")
        _check_count(path, f"elements in glTF accessor {i}", count)
        _gltf_int(path, acc.get("byteOffset", 0), f"accessor {i} byteOffset")
        if "bufferView" not in acc:
            continue
        v = _gltf_int(path, acc["bufferView"], f"accessor {i} bufferView")
        if v >= len(views):
            raise InputError(f"{path}: glTF accessor {i} refers to missing bufferView {v}")
        elem = _COMPONENTS.get(acc.get("type"), 1) * _COMPONENT_BYTES.get(acc.get("componentType"), 1)
        stride = int(views[v].get("byteStride", 0)) or elem
        needed = int(acc.get("byteOffset", 0)) + (count - 1) * stride + elem if count else 0
        if needed > int(views[v].get("byteLength", 0)):
            raise InputError(
                f"{path}: glTF accessor {i} claims {count:,} elements ({needed:,} bytes) but its bufferView "
                f"holds {int(views[v].get('byteLength', 0)):,} bytes (truncated or corrupt)"
            )


def _check_glb(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"glTF":
            raise InputError(f"{path}: not a binary glTF file (no 'glTF' magic in its first bytes)")
        version, length = struct.unpack("<II", header[4:12])
        if version != 2:
            raise InputError(
                f"{path}: binary glTF version {version}: only glTF 2.0 is supported (convert it, e.g. with Blender)"
            )
        if length > size:
            raise InputError(
                f"{path}: GLB header claims {length:,} bytes but the file has {size:,} (truncated)"
            )
        chunk = fh.read(8)
        if len(chunk) < 8:
            raise InputError(f"{path}: GLB file has no JSON chunk")
        json_len, json_type = struct.unpack("<II", chunk)
        if json_type != 0x4E4F534A or 12 + 8 + json_len > size:
            raise InputError(f"{path}: GLB JSON chunk is missing or longer than the file")
        try:
            doc = json.loads(fh.read(json_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: GLB JSON chunk is not valid JSON ({exc})") from exc
        bin_size = None
        chunk = fh.read(8)
        if len(chunk) == 8:
            bin_len, _ = struct.unpack("<II", chunk)
            bin_size = min(bin_len, size - (12 + 8 + json_len + 8))
    _check_gltf_json(path, doc, bin_size)


def _check_gltf(path: Path, size: int) -> None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid glTF JSON ({exc})") from exc
    _check_gltf_json(path, doc, None)


_HEADER_CHECKS = {
    "ply": _check_ply_header,
    "off": _check_off_header,
    "stl": _check_stl,
    "glb": _check_glb,
    "gltf": _check_gltf,
}


# ------------------------------------------------------------------------------------------------
# Loading and normalisation
# ------------------------------------------------------------------------------------------------


#: Largest vertex coordinate accepted (absolute value): far beyond any real model, and small enough
#: that extents, centres and transforms stay finite (an OBJ at +-1e308 overflowed them).
MAX_COORDINATE = 1e18


def _validate_scene(scene, source: str) -> None:
    import trimesh

    if len(scene.geometry) == 0:
        raise InputError(f"{source}: the file contains no geometry")
    has_faces = False
    for name, geom in scene.geometry.items():
        verts = np.asarray(geom.vertices)
        if verts.size and not np.all(np.isfinite(verts)):
            raise InputError(f"{source}: geometry '{name}' has NaN or infinite vertex coordinates")
        if isinstance(geom, trimesh.Trimesh):
            faces = np.asarray(geom.faces)
            if faces.size:
                if faces.min() < 0 or faces.max() >= len(verts):
                    raise InputError(
                        f"{source}: geometry '{name}' has face indices outside [0, {len(verts) - 1}] "
                        f"(min {faces.min()}, max {faces.max()})"
                    )
                has_faces = True
    if not has_faces:
        raise InputError(
            f"{source}: no triangle faces (a point cloud or lines only): expected a surface mesh"
        )
    bounds = scene.bounds
    if bounds is None or not np.all(np.isfinite(bounds)):
        raise InputError(f"{source}: the scene has no finite bounding box")
    bounds = np.asarray(bounds, dtype=np.float64)
    if not np.all(np.isfinite(bounds[1] - bounds[0])) or float(np.max(np.abs(bounds))) > MAX_COORDINATE:
        raise InputError(
            f"{source}: coordinates reach {float(np.max(np.abs(bounds))):.3g}: expected at most "
            f"{MAX_COORDINATE:.0e} in absolute value"
        )
    if float(np.max(bounds[1] - bounds[0])) <= 0.0:
        raise InputError(f"{source}: the mesh has zero extent (all vertices coincide)")


def normalize_scene(scene, pre_transform: np.ndarray | None = None, source: str = "mesh"):
    """Normalise a trimesh scene (or mesh) to the unit cube; return (scene, source_to_world).

    Args:
        scene: a `trimesh.Scene` or `trimesh.Trimesh` in its own coordinates (not modified).
        pre_transform: optional (4, 4) applied first (e.g. `Y_UP_TO_Z_UP`); included in the result.
        source: name used in error messages.

    Returns:
        A new scene whose bounding box is centred at the origin with largest extent 1, and the
        (4, 4) float64 `source_to_world` = scale @ translate @ pre_transform.
    """
    import trimesh

    if isinstance(scene, trimesh.Trimesh):
        scene = trimesh.Scene(scene)
    elif not isinstance(scene, trimesh.Scene):
        raise InputError(f"{source}: expected a trimesh Scene or Trimesh, got {type(scene).__name__}")
    _validate_scene(scene, source)
    scene = scene.copy()
    pre = np.eye(4) if pre_transform is None else np.asarray(pre_transform, dtype=np.float64)
    if pre_transform is not None:
        scene.apply_transform(pre)
    bounds = np.asarray(scene.bounds, dtype=np.float64)
    centre = (bounds[0] + bounds[1]) / 2.0
    extent = float(np.max(bounds[1] - bounds[0]))
    norm = np.diag([1.0 / extent, 1.0 / extent, 1.0 / extent, 1.0])
    norm[:3, 3] = -centre / extent
    scene.apply_transform(norm)
    return scene, norm @ pre


def stretched(mesh: LoadedMesh, scales) -> LoadedMesh:
    """`mesh` stretched by `scales` (3,) along the world x, y, z axes, then normalised to the unit cube
    again (largest extent 1, centred); `source_to_world` records both, so its geometry stays in source
    coordinates. For shape augmentation (`render.jobs.RenderJobConfig.shape_augment`)."""
    scales = np.asarray(scales, dtype=np.float64)
    if scales.shape != (3,) or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise InputError(f"{mesh.source}: stretch {scales.tolist()}: expected three positive factors")
    scene, to_world = normalize_scene(mesh.scene, pre_transform=np.diag([*scales, 1.0]), source=mesh.source)
    return replace(mesh, scene=scene, source_to_world=to_world @ mesh.source_to_world)


def check_up_axis(up_axis: str | None, what: str = "up axis") -> str | None:
    """`up_axis` lower-cased when it is y or z (either case), None for None; else one `InputError` line
    naming `what` (the CLIs pass their option, "--up-axis")."""
    if up_axis is None:
        return None
    if not isinstance(up_axis, str) or up_axis.lower() not in ("y", "z"):
        raise InputError(f"{what} {up_axis!r}: expected y or z")
    return up_axis.lower()


def default_up_axis(path: str | Path) -> str:
    """The up axis a mesh file's format implies: "y" for glTF (its specification's), "z" for the other
    formats (which define none)."""
    return "y" if SUPPORTED_FORMATS.get(Path(path).suffix.lower()) in ("glb", "gltf") else "z"


def decode_textures(scene) -> None:
    """Decode the textures trimesh left lazy, inside the pixel budget (`render.images.image_budget`)."""
    for geom in scene.geometry.values():
        material = getattr(getattr(geom, "visual", None), "material", None)
        for name in ("image", "baseColorTexture"):
            image = getattr(material, name, None)
            if image is not None and hasattr(image, "load"):
                image.load()


def recording_resolver(folder_resolver: Any) -> tuple[Any, list[str]]:
    """(resolver, names): `folder_resolver` (a trimesh resolver) that also notes each name it could not
    serve. trimesh's loaders skip a material library or texture they cannot get, without a word; the
    names tell the user what an object was drawn without."""
    names: list[str] = []
    get = folder_resolver.get

    def recorded_get(name):
        try:
            return get(name)
        except BaseException:
            if str(name) not in names:
                names.append(str(name))
            raise

    folder_resolver.get = recorded_get
    return folder_resolver, names


def _read_scene(path: str | Path, up_axis: str | None) -> tuple[Any, str, tuple[str, ...]]:
    """Check and read a mesh file as a `trimesh.Scene` in its own coordinates; return (scene, up axis,
    the files it names that could not be read).

    The one reader of mesh files: `load_mesh` (normalised, for rendering and eval) and `read_trimesh`
    (one mesh in mv3d's axes, for export) both come through here, so both get the same checks.
    """
    import trimesh

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SUPPORTED_FORMATS:
        raise InputError(
            f"{path}: unsupported mesh format '{ext or '(no extension)'}': expected one of "
            f"{', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    if not path.exists():
        raise InputError(f"{path}: mesh file does not exist")
    if not path.is_file():
        raise InputError(f"{path}: not a file: expected a mesh file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: the file is empty")
    file_type = SUPPORTED_FORMATS[ext]
    if file_type in _HEADER_CHECKS:
        _HEADER_CHECKS[file_type](path, size)
    if up_axis is None:
        up_axis = default_up_axis(path)
    if up_axis not in ("y", "z"):
        raise InputError(f"up axis '{up_axis}': expected 'y' or 'z'")
    try:
        # process=False keeps vertices exactly as stored (no merging), so the recorded transform
        # maps the file's own coordinates.
        try:
            # trimesh's file resolver serves only files inside the mesh's folder
            resolver, unread = recording_resolver(trimesh.resolvers.FilePathResolver(str(path)))
            with image_budget(str(path)):  # textures: checked from their headers before decoding
                scene = trimesh.load_scene(str(path), file_type=file_type, process=False, resolver=resolver)
                decode_textures(scene)
        except ValueError:
            # trimesh's binary PLY reader assumes every face has as many corners as the first one;
            # Blender (and many scanners) write mixed triangles and quads. Read those ourselves.
            if file_type != "ply" or not _is_binary_ply(path):
                raise
            scene, unread = trimesh.Scene(_read_binary_ply_polygons(path)), []
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(f"{path}: too large to load into memory") from exc
    except Exception as exc:  # trimesh raises many types for malformed files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, IndexError):
            reason = f"face indices out of range ({reason})"
        raise InputError(f"{path}: cannot read {file_type.upper()} file: {reason}") from exc
    if file_type in ("glb", "gltf"):
        # glTF's COLOR_0 is linear; every other colour mv3d reads (PLY's, OBJ's, textures, images)
        # is sRGB, and so are a loaded scene's vertex colours: the renderers and export_mesh rely on it.
        from trimesh.visual.color import linear_to_srgb

        for geom in scene.geometry.values():
            if getattr(geom.visual, "kind", None) == "vertex":
                map_vertex_colours(geom, linear_to_srgb)
    return scene, up_axis, tuple(unread)


def load_mesh(path: str | Path, up_axis: str | None = None) -> LoadedMesh:
    """Load a mesh file into a scene normalised to the unit cube.

    Args:
        path: an OBJ, PLY, STL, OFF, GLB or glTF file.
        up_axis: "z" or "y": the source file's up axis. Default: "y" for glTF (the spec's), "z" for
            the other formats (which define none).

    Raises:
        InputError: unsupported extension, missing or empty file, malformed content, a header that
            claims more elements than the file holds, glTF 1, no faces, NaN/inf vertices, face indices
            out of range.
    """
    scene, up_axis, unread = _read_scene(path, up_axis)
    pre = Y_UP_TO_Z_UP if up_axis == "y" else None
    scene, s2w = normalize_scene(scene, pre, source=str(path))
    return LoadedMesh(scene=scene, source_to_world=s2w, source=str(path), unread_files=unread)


def map_vertex_colours(mesh, transfer) -> None:
    """Pass `mesh`'s vertex (or face) colours through `transfer`, in place, as vertex colours; alpha kept.

    `transfer` maps uint8 RGB to floats in [0, 1]: trimesh.visual.color's `srgb_to_linear` (glTF's
    COLOR_0 is linear) or `linear_to_srgb` (mv3d's colours are sRGB).
    """
    import trimesh

    colours = np.array(mesh.visual.vertex_colors, dtype=np.uint8)
    colours[:, :3] = np.round(transfer(colours[:, :3]) * 255.0).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh=mesh, vertex_colors=colours)


def read_trimesh(path: str | Path, up_axis: str | None = None):
    """One `trimesh.Trimesh` (materials and colours kept) of a mesh file, in mv3d's +Z-up axes.

    Unlike `load_mesh` nothing is normalised: a mesh written by `mv3d.export.export_mesh` reads back
    in the coordinates it was written in (glTF is turned from its +Y up to +Z up, as `load_mesh`), and
    with the sRGB vertex colours it was given (glTF stores them linear; `_read_scene` converts back).
    """
    import trimesh

    scene, up_axis, _ = _read_scene(path, up_axis)
    _validate_scene(scene, str(path))  # the checks load_mesh makes: finite, bounded, with faces
    mesh = scene.to_mesh()
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: the file holds no triangles")
    if up_axis == "y":
        mesh.apply_transform(Y_UP_TO_Z_UP)
    return mesh


_PLY_STRUCT = {
    "char": "b", "int8": "b", "uchar": "B", "uint8": "B",
    "short": "h", "int16": "h", "ushort": "H", "uint16": "H",
    "int": "i", "int32": "i", "uint": "I", "uint32": "I",
    "float": "f", "float32": "f", "double": "d", "float64": "d",
}  # fmt: skip


def _is_binary_ply(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b"format binary_" in head


def _read_binary_ply_polygons(path: Path):
    """Read a binary PLY whose faces have different corner counts (triangles and quads mixed).

    Vertex positions, colours (red/green/blue[/alpha]) and texture coordinates (s/t or u/v) are
    read; polygons are triangulated as fans (exact for the convex faces exporters write). The header
    was already checked against the file size (`_check_ply_header`).
    """
    import struct as _struct

    import trimesh

    data = path.read_bytes()
    end = data.index(b"end_header")
    body = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    order = "<" if any("binary_little_endian" in line for line in header) else ">"
    elements: list[tuple[str, int, list[tuple[str, str, str | None]]]] = []
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1][2].append((parts[4], _PLY_STRUCT[parts[3]], _PLY_STRUCT[parts[2]]))
            else:
                elements[-1][2].append((parts[2], _PLY_STRUCT[parts[1]], None))
    offset = body
    columns: dict[str, dict[str, np.ndarray]] = {}
    faces: list[list[int]] = []
    for name, count, props in elements:
        if all(lst is None for _, _, lst in props):
            dtype = np.dtype([(p, order + code) for p, code, _ in props])
            rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += count * dtype.itemsize
            columns[name] = {p: rows[p] for p, _, _ in props}
            continue
        for _ in range(count):
            for prop, code, list_code in props:
                if list_code is None:
                    offset += _struct.calcsize(code)
                    continue
                (n,) = _struct.unpack_from(order + list_code, data, offset)
                offset += _struct.calcsize(list_code)
                items = _struct.unpack_from(f"{order}{n}{code}", data, offset)
                offset += n * _struct.calcsize(code)
                if name == "face" and prop in ("vertex_indices", "vertex_index"):
                    faces.append(list(items))
    if "vertex" not in columns or not faces:
        raise InputError(f"{path}: PLY file has no vertices or faces")
    v = columns["vertex"]
    vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    tris = np.array([[f[0], f[i], f[i + 1]] for f in faces for i in range(1, len(f) - 1)], dtype=np.int64)
    if tris.size and (tris.min() < 0 or tris.max() >= len(vertices)):
        raise InputError(f"{path}: face indices outside [0, {len(vertices) - 1}]")
    mesh = trimesh.Trimesh(vertices, tris, process=False)
    if all(c in v for c in ("red", "green", "blue")):
        rgba = [v["red"], v["green"], v["blue"], v["alpha"] if "alpha" in v else np.full(len(vertices), 255)]
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.stack(rgba, axis=1).astype(np.uint8))
    return mesh


def world_geometry(mesh: LoadedMesh) -> list[tuple[str, object, np.ndarray]]:
    """Every geometry instance with its (4, 4) world transform: [(name, trimesh geometry, transform)]."""
    out = []
    for node in mesh.scene.graph.nodes_geometry:
        transform, geom_name = mesh.scene.graph[node]
        geom = mesh.scene.geometry.get(geom_name)
        if geom is not None:
            out.append((str(node), geom, np.asarray(transform, dtype=np.float64)))
    return out


def world_trimesh(loaded: LoadedMesh):
    """One `trimesh.Trimesh` (geometry only) of a `LoadedMesh` in the world frame.

    The one way from a loaded scene to a single mesh (eval's depth maps and mesh metrics use it).
    """
    import trimesh

    parts = []
    for _, geom, transform in world_geometry(loaded):
        if not hasattr(geom, "faces") or len(geom.faces) == 0:
            continue
        v = np.asarray(geom.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
        parts.append(trimesh.Trimesh(v, np.asarray(geom.faces), process=False))
    if not parts:
        raise InputError(f"{loaded.source}: the mesh has no faces")
    return trimesh.util.concatenate(parts)
