"""Build `examples/toy_house.glb`, the example mesh shipped with mv3d (run: python examples/make_example_mesh.py).

A small house with a brick-textured body (an image texture with UVs), a vertex-coloured roof, a door
off-centre on the front (-Y), a window on the right (+X), a chimney at the back-right and a tree on
the left: every side looks different, so the views of an orbit can be told apart. The scene is built
+Z up (mv3d's world) and written +Y up with linear vertex colours, as glTF requires. Run as a script it
also draws `toy_house_orbit.png` (`orbit_figure`: the fast renderer above, Blender below).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trimesh.visual.color import srgb_to_linear  # noqa: E402

from render.meshes import Y_UP_TO_Z_UP, map_vertex_colours  # noqa: E402


def brick_texture(size: int = 64) -> Image.Image:
    """A brick pattern: rows of 16x8 px bricks with light mortar, every other row offset."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (170, 72, 50)
    rng = np.random.default_rng(0)
    for row in range(size // 8):
        y0 = row * 8
        img[y0, :] = (215, 210, 200)
        offset = 8 if row % 2 else 0
        for col in range(-1, size // 16 + 1):
            x0 = col * 16 + offset
            if 0 <= x0 < size:
                img[y0 : y0 + 8, x0] = (215, 210, 200)
            shade = rng.integers(-20, 20)
            xs = slice(max(x0 + 1, 0), max(min(x0 + 16, size), 0))
            img[y0 + 1 : y0 + 8, xs] = np.clip(np.array([170, 72, 50]) + shade, 0, 255)
    return Image.fromarray(img, "RGB")


def textured_box(extents, texture: Image.Image, repeats: float = 2.0) -> trimesh.Trimesh:
    """A box with its own 4 vertices per face and UVs that tile `texture` `repeats` times per unit."""
    box = trimesh.creation.box(extents=extents)
    box.unmerge_vertices()
    verts, normals = box.vertices, np.repeat(box.face_normals, 3, axis=0)
    uv = np.zeros((len(verts), 2))
    for i, (v, n) in enumerate(zip(verts, normals, strict=True)):
        axis = int(np.argmax(np.abs(n)))
        a, b = [k for k in range(3) if k != axis]
        uv[i] = (v[a] * repeats, v[b] * repeats)
    material = trimesh.visual.material.SimpleMaterial(image=texture, diffuse=(255, 255, 255, 255))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=texture, material=material)
    return box


def coloured(mesh: trimesh.Trimesh, rgb) -> trimesh.Trimesh:
    mesh.visual.vertex_colors = np.tile([*rgb, 255], (len(mesh.vertices), 1)).astype(np.uint8)
    return mesh


def prism_roof(width: float, depth: float, height: float) -> trimesh.Trimesh:
    """A gable roof: a triangular prism along X, ridge at the top."""
    w, d, h = width / 2, depth / 2, height
    v = np.array([[-w, -d, 0], [w, -d, 0], [w, d, 0], [-w, d, 0], [-w, 0, h], [w, 0, h]], float)
    f = np.array([[0, 1, 5], [0, 5, 4], [2, 3, 4], [2, 4, 5], [0, 4, 3], [1, 2, 5], [0, 3, 2], [0, 2, 1]])
    roof = trimesh.Trimesh(v, f, process=False)
    roof.fix_normals()
    roof.unmerge_vertices()
    # Darker towards the ridge, so the vertex colours vary across each face.
    t = roof.vertices[:, 2] / h
    rgb = np.stack([200 - 80 * t, 40 + 0 * t, 40 + 0 * t, 255 + 0 * t], axis=1)
    roof.visual.vertex_colors = rgb.astype(np.uint8)
    return roof


def build_scene() -> trimesh.Scene:
    scene = trimesh.Scene()
    body = textured_box([1.0, 0.7, 0.6], brick_texture())
    body.apply_translation([0, 0, 0.3])
    scene.add_geometry(body, geom_name="body")
    roof = prism_roof(1.1, 0.8, 0.35)
    roof.apply_translation([0, 0, 0.6])
    scene.add_geometry(roof, geom_name="roof")
    door = coloured(trimesh.creation.box(extents=[0.18, 0.04, 0.32]), (110, 70, 30))
    door.apply_translation([-0.22, -0.36, 0.16])
    scene.add_geometry(door, geom_name="door")
    knob = coloured(trimesh.creation.icosphere(subdivisions=1, radius=0.025), (240, 200, 40))
    knob.apply_translation([-0.17, -0.39, 0.16])
    scene.add_geometry(knob, geom_name="knob")
    window = coloured(trimesh.creation.box(extents=[0.04, 0.26, 0.2]), (120, 190, 240))
    window.apply_translation([0.51, 0.05, 0.35])
    scene.add_geometry(window, geom_name="window")
    chimney = coloured(trimesh.creation.box(extents=[0.12, 0.12, 0.3]), (70, 70, 75))
    chimney.apply_translation([0.3, 0.2, 0.85])
    scene.add_geometry(chimney, geom_name="chimney")
    trunk = coloured(trimesh.creation.cylinder(radius=0.04, height=0.3, sections=16), (100, 60, 30))
    trunk.apply_translation([-0.8, -0.1, 0.15])
    scene.add_geometry(trunk, geom_name="trunk")
    crown = coloured(trimesh.creation.cone(radius=0.18, height=0.45, sections=24), (40, 150, 60))
    crown.apply_translation([-0.8, -0.1, 0.25])
    scene.add_geometry(crown, geom_name="crown")
    return scene


def main(out: str | Path = Path(__file__).with_name("toy_house.glb")) -> Path:
    scene = build_scene()
    for geom in scene.geometry.values():
        if geom.visual.kind == "vertex":
            # glTF's COLOR_0 is linear; the colours above are sRGB, as a PLY's or a texture's are
            map_vertex_colours(geom, srgb_to_linear)
    scene.apply_transform(np.linalg.inv(Y_UP_TO_Z_UP))  # glTF is +Y up
    Path(out).write_bytes(scene.export(file_type="glb"))
    return Path(out)


def orbit_figure(mesh_path: str | Path, out: str | Path, views: int = 8, size: int = 160) -> Path:
    """The README's picture: `views` views of an orbit at elevation 20, fast renderer above, Blender below.

    Needs the blender extra (bpy). Written on white, RGB.
    """
    from render.cameras import static_orbit
    from render.images import WHITE, on_background
    from render.meshes import load_mesh
    from render.renderers import get_renderer

    mesh, orbit = load_mesh(mesh_path), static_orbit(views, elevation_deg=20.0)
    rows = []
    for name, settings in (("fast", {}), ("blender", {"samples": 64})):
        with get_renderer(name, **settings) as renderer:
            rgba = renderer.render(mesh, orbit, size).rgba
        rows.append(np.concatenate([on_background(view, WHITE) for view in rgba], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    return Path(out)


if __name__ == "__main__":
    path = main(*sys.argv[1:2])
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    figure = orbit_figure(path, path.with_name(path.stem + "_orbit.png"))
    print(f"wrote {figure}")
