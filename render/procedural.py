"""Procedural objects: seeded unions of primitives with vertex colours and procedural textures.

A training set can be made anywhere without downloads (`mv3d render-dataset procedural:N:SEED`). Each
object is a `trimesh.Scene` that is a deterministic function of `(seed, index)`:

- a *body*: one of box, ellipsoid, cylinder, cone, capsule, torus, with random proportions, usually
  upright (+Z up, the world convention) and sometimes lying on its side;
- one to three *attachments*: smaller primitives placed so that they touch or overlap the body's
  surface in random directions (arms, knobs, feet, ...);
- one *marker*: a small part in a saturated colour that contrasts with the body, on one side only,
  so that the front, back and sides of the object look different (views must be distinguishable for a
  camera-conditioned model to learn the orbit direction);
- sometimes a *handle*: a thin torus on another side.

A *plain* object (`procedural_object(seed, index, plain=True)`, source `procedural:N:SEED:plain`) is the
body alone: the can, box, ball or ring that real objects so often are and that the full objects, which
always carry a marker and attachments, never show. It is the same body as the full object of the same
`(seed, index)` (the body is drawn first).

Parts are closed surfaces with outward-facing triangles (surfaces of revolution, boxes, tori; their
seams repeat vertices so that texture coordinates stay continuous, so a part is watertight once
vertices are merged by position). Every object has at least one textured part (stripes, checker or
dots image on `TextureVisuals` with UVs and a `SimpleMaterial`) and at least one part with vertex
colours (the marker; others get solid colours or height gradients). Face counts stay well below 20k.

Coordinates are in an arbitrary unit (the body is about one unit tall); loaders normalise objects to
the unit cube (`render.meshes.normalize_scene`).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
import trimesh
from PIL import Image

from render.common import InputError

PRIMITIVES = ("box", "ellipsoid", "cylinder", "cone", "capsule", "torus")
TEXTURE_KINDS = ("stripes", "checker", "dots")

# Tessellation: 48 segments around, ~20 along a profile -> about 2k triangles per round part.
_SEGMENTS = 48
_TEXTURE_SIZE = 64


# --------------------------------------------------------------------------------------------------
# Geometry: each builder returns (vertices (V,3) float64, uv (V,2) float64, faces (F,3) int64) of a
# closed surface centred on the origin, its axis (if any) along +Z.
# --------------------------------------------------------------------------------------------------


def _grid_faces(n_u: int, n_v: int) -> np.ndarray:
    """Two triangles per cell of a (n_u+1) x (n_v+1) vertex grid indexed `i * (n_v+1) + j`."""
    i, j = np.meshgrid(np.arange(n_u), np.arange(n_v), indexing="ij")
    a = (i * (n_v + 1) + j).ravel()
    b = ((i + 1) * (n_v + 1) + j).ravel()
    c = ((i + 1) * (n_v + 1) + j + 1).ravel()
    d = (i * (n_v + 1) + j + 1).ravel()
    return np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _revolve(radius: np.ndarray, height: np.ndarray, segments: int = _SEGMENTS):
    """Surface of revolution of the profile (radius[j], height[j]) about +Z.

    A profile that starts and ends on the axis (radius 0) gives a closed surface. Corners are made
    sharp by repeating a profile point: the zero-length segment's triangles are dropped later, and the
    two copies get separate normals.
    """
    radius = np.asarray(radius, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    phi = np.linspace(0.0, 2.0 * np.pi, segments + 1)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(radius), np.diff(height)))])
    v = arc / max(arc[-1], 1e-12)
    pp, jj = np.meshgrid(phi, np.arange(len(radius)), indexing="ij")
    verts = np.stack([radius[jj] * np.cos(pp), radius[jj] * np.sin(pp), height[jj]], -1).reshape(-1, 3)
    uv = np.stack([pp / (2.0 * np.pi), v[jj]], -1).reshape(-1, 2)
    return verts, uv, _grid_faces(segments, len(radius) - 1)


def _ellipsoid(rings: int = 20):
    theta = np.linspace(np.pi, 0.0, rings + 1)
    return _revolve(np.sin(theta) * 0.5, np.cos(theta) * 0.5)


def _cylinder(radius_top: float = 0.5, steps: int = 6):
    """Unit-height cylinder (or frustum / cone when `radius_top` is smaller) with flat caps."""
    side_r = np.linspace(0.5, radius_top, steps + 1)
    side_z = np.linspace(-0.5, 0.5, steps + 1)
    r = [0.0, 0.5, *side_r]
    z = [-0.5, -0.5, *side_z]
    if radius_top > 0:
        r += [radius_top, 0.0]
        z += [0.5, 0.5]
    return _revolve(np.array(r), np.array(z))


def _capsule(length: float, rings: int = 8):
    """Capsule of radius 0.5 whose straight part is `length` long."""
    t = np.linspace(0.0, np.pi / 2, rings + 1)
    r = np.concatenate([np.sin(t) * 0.5, np.cos(t) * 0.5])
    z = np.concatenate([-length / 2 - np.cos(t) * 0.5, length / 2 + np.sin(t) * 0.5])
    return _revolve(r, z)


def _torus(major: float, minor: float, segments: int = _SEGMENTS, tube: int = 16):
    phi = np.linspace(0.0, 2.0 * np.pi, segments + 1)
    psi = np.linspace(0.0, 2.0 * np.pi, tube + 1)
    pp, ss = np.meshgrid(phi, psi, indexing="ij")
    ring = major + minor * np.cos(ss)
    verts = np.stack([ring * np.cos(pp), ring * np.sin(pp), minor * np.sin(ss)], -1).reshape(-1, 3)
    uv = np.stack([pp / (2 * np.pi), ss / (2 * np.pi)], -1).reshape(-1, 2)
    return verts, uv, _grid_faces(segments, tube)


def _box():
    """Unit cube, 4 vertices per face so that each face carries the whole texture."""
    verts, uvs, faces = [], [], []
    corners_uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            quad = np.zeros((4, 3))
            quad[:, axis] = 0.5 * sign
            quad[:, u_ax] = corners_uv[:, 0] - 0.5
            quad[:, v_ax] = corners_uv[:, 1] - 0.5
            tris = np.array([[0, 1, 2], [0, 2, 3]])
            # Wind each face so that its normal points away from the centre along `axis`.
            if np.cross(quad[1] - quad[0], quad[2] - quad[0])[axis] * sign < 0:
                tris = tris[:, ::-1]
            faces.append(tris + 4 * len(verts))
            verts.append(quad)
            uvs.append(corners_uv)
    return np.concatenate(verts), np.concatenate(uvs), np.concatenate(faces)


def _clean_and_orient(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Drop zero-area triangles (poles, repeated corner points); wind the rest outwards.

    For a geometrically closed surface the signed volume sum(v0 . (v1 x v2)) / 6 is positive exactly
    when the triangles face outwards, whatever the seams.
    """
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    faces = faces[area2 > 1e-10 * max(float(area2.max()), 1e-30)]
    tri = verts[faces]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    return faces[:, ::-1].copy() if signed < 0 else faces


# --------------------------------------------------------------------------------------------------
# Colours and textures
# --------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _to_u8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(rgb) * 255.0), 0, 255).astype(np.uint8)


def _texture_image(rng: np.random.Generator, kind: str, c1: np.ndarray, c2: np.ndarray) -> Image.Image:
    """A small RGB image: stripes, a checkerboard or dots in two colours."""
    n = _TEXTURE_SIZE
    y, x = np.mgrid[0:n, 0:n] / n
    if kind == "stripes":
        freq = int(rng.integers(3, 9))
        coord = x if rng.random() < 0.5 else y
        mask = np.floor(coord * freq * 2) % 2 == 0
    elif kind == "checker":
        cells = int(rng.integers(2, 7))
        mask = (np.floor(x * cells) + np.floor(y * cells)) % 2 == 0
    elif kind == "dots":
        cells = int(rng.integers(3, 7))
        fx, fy = (x * cells) % 1.0 - 0.5, (y * cells) % 1.0 - 0.5
        mask = np.hypot(fx, fy) > 0.25
    else:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {TEXTURE_KINDS}")
    img = np.where(mask[..., None], c1, c2)
    return Image.fromarray(_to_u8(img), mode="RGB")


# --------------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------------


def _rotation_to(direction: np.ndarray) -> np.ndarray:
    """3x3 rotation taking +Z to the unit vector `direction`."""
    d = direction / np.linalg.norm(direction)
    return trimesh.geometry.align_vectors([0.0, 0.0, 1.0], d)[:3, :3]


def _primitive(rng: np.random.Generator, kind: str, size: float):
    """Raw geometry of primitive `kind`, scaled so that its largest extent is about `size`."""
    if kind == "box":
        verts, uv, faces = _box()
        verts = verts * rng.uniform(0.5, 1.0, 3) * size
    elif kind == "ellipsoid":
        verts, uv, faces = _ellipsoid()
        verts = verts * rng.uniform(0.55, 1.0, 3) * size
    elif kind == "cylinder":
        verts, uv, faces = _cylinder()
        w = rng.uniform(0.45, 1.0)
        verts = verts * np.array([w, w * rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)]) * size
    elif kind == "cone":
        verts, uv, faces = _cylinder(radius_top=rng.choice([0.0, rng.uniform(0.1, 0.3)]))
        w = rng.uniform(0.5, 1.0)
        verts = verts * np.array([w, w, rng.uniform(0.7, 1.0)]) * size
    elif kind == "capsule":
        length = rng.uniform(0.4, 1.5)
        verts, uv, faces = _capsule(length)
        verts = verts / (length + 1.0) * size
    elif kind == "torus":
        minor = rng.uniform(0.1, 0.22)
        verts, uv, faces = _torus(0.5 - minor, minor)
        verts = verts * size
    else:
        raise ValueError(f"unknown primitive {kind!r}; expected one of {PRIMITIVES}")
    return verts, uv, faces


class _Builder:
    """Collects parts with their visuals into a scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.scene = trimesh.Scene()
        self.parts: list[dict] = []

    def add(
        self,
        name: str,
        verts: np.ndarray,
        uv: np.ndarray,
        faces: np.ndarray,
        paint: Callable[[np.ndarray, np.ndarray], trimesh.visual.base.Visuals],
        info: dict,
    ) -> trimesh.Trimesh:
        faces = _clean_and_orient(verts, faces)
        used = np.unique(faces)
        remap = np.full(len(verts), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        verts, uv, faces = verts[used], uv[used], remap[faces]
        mesh = trimesh.Trimesh(vertices=verts, faces=faces, visual=paint(verts, uv), process=False)
        self.scene.add_geometry(mesh, geom_name=name, node_name=name)
        self.parts.append({"name": name, **info})
        return mesh


def _vertex_paint(colour_a: np.ndarray, colour_b: np.ndarray | None = None):
    """Vertex colours: solid, or a gradient from `colour_a` (bottom) to `colour_b` (top)."""

    def paint(verts: np.ndarray, uv: np.ndarray) -> trimesh.visual.ColorVisuals:
        if colour_b is None:
            rgb = np.broadcast_to(colour_a, verts.shape)
        else:
            z = verts[:, 2]
            t = ((z - z.min()) / max(float(np.ptp(z)), 1e-9))[:, None]
            rgb = (1 - t) * colour_a + t * colour_b
        rgba = np.concatenate([_to_u8(rgb), np.full((len(verts), 1), 255, np.uint8)], 1)
        return trimesh.visual.ColorVisuals(vertex_colors=rgba)

    return paint


def _texture_paint(image: Image.Image):
    def paint(verts: np.ndarray, uv: np.ndarray) -> trimesh.visual.TextureVisuals:
        material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=[255, 255, 255, 255])
        return trimesh.visual.TextureVisuals(uv=uv, material=material)

    return paint


def _support(verts: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The point of `verts` farthest along `direction` (on the surface of a convex part)."""
    return verts[int(np.argmax(verts @ direction))]


def _random_direction(rng: np.random.Generator, el_lo: float, el_hi: float) -> tuple[np.ndarray, float]:
    az = rng.uniform(0.0, 360.0)
    el = np.radians(rng.uniform(el_lo, el_hi))
    a = np.radians(az)
    return np.array([np.cos(el) * np.sin(a), -np.cos(el) * np.cos(a), np.sin(el)]), az


def procedural_object(seed: int, index: int, plain: bool = False) -> trimesh.Scene:
    """The procedural object number `index` of the set made with `seed` (its body alone if `plain`).

    Deterministic: the same `(seed, index)` gives identical vertices, faces, UVs, colours and texture
    images on every machine (numpy's PCG64 seeded by `SeedSequence([seed, index])`).

    Args:
        seed: non-negative integer.
        index: non-negative integer.
        plain: only the body (module docstring), none of the parts drawn after it.

    Returns:
        A `trimesh.Scene` whose geometries are named `body`, `part1`..., `marker` and possibly
        `handle` (`body` alone if plain), each with identity transform; `scene.metadata["procedural"]`
        describes the parts.
    """
    if int(seed) < 0 or int(index) < 0:
        raise InputError(f"procedural object seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    b = _Builder(rng)

    # Palette: the body's hue, attachments near it, the marker opposite it on the colour wheel.
    hue = rng.random()
    body_c1 = _hsv(hue, rng.uniform(0.35, 0.8), rng.uniform(0.55, 0.95))
    body_c2 = _hsv(hue + rng.uniform(0.08, 0.25), rng.uniform(0.2, 0.7), rng.uniform(0.35, 0.9))

    def surface_paint(textured: bool, c1: np.ndarray, c2: np.ndarray):
        if textured:
            kind = str(rng.choice(TEXTURE_KINDS))
            return _texture_paint(_texture_image(rng, kind, c1, c2)), {"visual": f"texture:{kind}"}
        if rng.random() < 0.5:
            return _vertex_paint(c1, c2), {"visual": "vertex:gradient"}
        return _vertex_paint(c1), {"visual": "vertex:solid"}

    # 1. The body.
    body_kind = str(rng.choice(PRIMITIVES))
    verts, uv, faces = _primitive(rng, body_kind, 1.0)
    if body_kind == "torus" or rng.random() < 0.25:
        # A torus stands up like a ring half of the time; other bodies sometimes lie on their side.
        if body_kind != "torus" or rng.random() < 0.5:
            verts = verts @ _rotation_to(np.array([1.0, 0.0, 0.0])).T
    spin = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * np.pi), [0, 0, 1])[:3, :3]
    body_verts = verts @ spin.T
    textured_body = rng.random() < 0.6
    paint, info = surface_paint(textured_body, body_c1, body_c2)
    b.add("body", body_verts, uv, faces, paint, {"primitive": body_kind, **info})
    body_extent = float(np.ptp(body_verts, axis=0).max())
    # `parts` is the builder's list: the parts added below appear in it too
    meta = {"seed": int(seed), "index": int(index), "plain": bool(plain), "parts": b.parts}
    if plain:
        b.scene.metadata["procedural"] = meta
        return b.scene

    # 2. Attachments touching the body: centred on the body's support point in a random direction,
    # pushed out by part of their own length so that they overlap the surface (no floating parts).
    n_parts = int(rng.integers(1, 4))
    any_texture = textured_body
    for k in range(n_parts):
        kind = str(rng.choice(PRIMITIVES[:-1]))
        direction, _ = _random_direction(rng, -50.0, 80.0)
        size = body_extent * rng.uniform(0.3, 0.6)
        verts, uv, faces = _primitive(rng, kind, size)
        verts = verts @ _rotation_to(direction).T
        half = float(np.max(verts @ direction))
        verts = verts + _support(body_verts, direction) + direction * half * rng.uniform(0.2, 0.6)
        textured = rng.random() < 0.4 or (k == n_parts - 1 and not any_texture)
        any_texture = any_texture or textured
        c1 = _hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.95))
        c2 = _hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.95))
        paint, info = surface_paint(textured, c1, c2)
        b.add(f"part{k + 1}", verts, uv, faces, paint, {"primitive": kind, **info})

    # 3. The marker: a saturated, contrasting nose on one side, near the equator, so that the views
    # around the orbit differ (an object with a mirror-symmetric silhouette still has a "front").
    direction, marker_az = _random_direction(rng, -20.0, 30.0)
    kind = str(rng.choice(["cone", "ellipsoid", "box"]))
    verts, uv, faces = _primitive(rng, kind, body_extent * rng.uniform(0.3, 0.45))
    verts = verts @ _rotation_to(direction).T
    half = float(np.max(verts @ direction))
    verts = verts + _support(body_verts, direction) + direction * half * 0.5
    marker_colour = _hsv(hue + 0.5 + rng.uniform(-0.08, 0.08), 0.9, 0.95)
    b.add(
        "marker",
        verts,
        uv,
        faces,
        _vertex_paint(marker_colour),
        {"primitive": kind, "visual": "vertex:solid"},
    )

    # 4. Sometimes a handle: a thin upright ring half sunk into the body at another azimuth.
    if rng.random() < 0.4:
        direction, _ = _random_direction(rng, -10.0, 10.0)
        verts, uv, faces = _torus(0.5 - 0.08, 0.08)
        verts = verts * body_extent * rng.uniform(0.35, 0.5)
        # The ring's axis is horizontal and perpendicular to `direction`, so the ring stands in the
        # vertical plane through `direction` like a mug's handle.
        axis = np.cross(direction, [0.0, 0.0, 1.0])
        verts = verts @ _rotation_to(axis).T
        radius = float(np.max(verts @ direction))
        verts = verts + _support(body_verts, direction) + direction * radius * 0.35
        c = _hsv(hue + rng.uniform(0.2, 0.4), rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.8))
        b.add("handle", verts, uv, faces, _vertex_paint(c), {"primitive": "torus", "visual": "vertex:solid"})

    b.scene.metadata["procedural"] = {**meta, "marker_azimuth_deg": float(marker_az)}
    return b.scene


def procedural_objects(n: int, seed: int, plain: bool = False) -> list[trimesh.Scene]:
    """Objects `0..n-1` of the set made with `seed` (see `procedural_object`)."""
    if int(n) < 0:
        raise InputError(f"number of procedural objects must be >= 0, got {n}")
    return [procedural_object(seed, i, plain) for i in range(int(n))]
