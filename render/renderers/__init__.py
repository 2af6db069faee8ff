"""Renderers: a loaded mesh + cameras -> RGBA views (and optional depth and normals).

An explicit name -> class table (no class names in config strings):

    RENDERERS = {"fast": FastRenderer, "blender": BlenderRenderer}

Every renderer shares one interface::

    renderer = get_renderer("fast", **settings)
    result = renderer.render(mesh, orbit, resolution, depth=False, normals=False, light_seed=None)
    result.rgba      # (N, H, W, 4) uint8, straight alpha, transparent background
    result.depth     # (N, H, W) float32 distance along the camera axis, 0 on the background, or None
    result.normals   # (N, H, W, 3) float32 world-space unit normals, 0 on the background, or None

`render_cameras` takes explicit camera-to-world matrices and intrinsics instead of an orbit (to
re-render exactly the cameras of an existing dataset). Cameras always come from `render.cameras`:
OpenGL camera-to-world, world +Z up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from render.cameras import Intrinsics, Orbit
from render.common import MAX_IMAGE_SIDE, InputError, check_range


@dataclass
class RenderResult:
    """Views rendered for N cameras.

    Attributes:
        rgba: (N, H, W, 4) uint8, straight (not premultiplied) alpha; alpha 0 is background.
        depth: (N, H, W) float32 camera-axis distance, 0 where nothing was hit; None unless asked.
        normals: (N, H, W, 3) float32 world-space unit normals, 0 on the background; None unless asked.
    """

    rgba: np.ndarray
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None


class Renderer:
    """Base class: subclasses implement `render_cameras`; `render` is the orbit shortcut."""

    name: str = "base"

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings, recorded in every dataset this renderer writes."""
        raise NotImplementedError

    def render_cameras(
        self,
        mesh,
        camera_to_world: np.ndarray,
        intrinsics: Intrinsics,
        *,
        depth: bool = False,
        normals: bool = False,
        light_seed: int | None = None,
    ) -> RenderResult:
        """Render `mesh` (a `render.meshes.LoadedMesh`) from (N, 4, 4) OpenGL cameras."""
        raise NotImplementedError

    def render(
        self,
        mesh,
        orbit: Orbit,
        resolution: int,
        *,
        depth: bool = False,
        normals: bool = False,
        light_seed: int | None = None,
    ) -> RenderResult:
        """Render the N views of `orbit` at `resolution` x `resolution` pixels (8 to `MAX_IMAGE_SIDE`)."""
        # the upper bound too: a huge side was an allocation of tens of gigabytes, then MemoryError
        check_range("resolution", resolution, 8, MAX_IMAGE_SIDE, "pixels")
        return self.render_cameras(
            mesh,
            orbit.camera_to_world(),
            orbit.intrinsics(int(resolution)),
            depth=depth,
            normals=normals,
            light_seed=light_seed,
        )

    def close(self) -> None:
        """Release contexts or processes (optional)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Cap on material metallic factors, in both renderers. Neither renders a surrounding scene for a
#: metal to reflect, and glTF's default when `metallicFactor` is absent is 1: OBJ/MTL materials (which
#: have no metallic at all) reach the renderers that way, and drawn as metal a teddy bear turns gold.
MAX_METALLIC = 0.3


def light_setup(light_seed: int | None) -> list[dict[str, Any]]:
    """World-fixed directional lights shared by both renderers.

    Lights are fixed in the world, not to the camera, so the object's shading is the same in every
    view of an orbit (multi-view consistency). `None` gives the default three-point setup (key from
    the front-left above the azimuth-0 camera, fill from the right, rim from behind, a weak one from
    below so no side is black); an integer seed draws a random variation of it (directions, intensity,
    colour temperature) for augmentation. Each light: {"direction": (3,) unit vector the light travels
    along, in world axes, "intensity": relative strength, "color": (3,) RGB}.
    """
    base = [
        ((-0.6, -1.0, 1.2), 1.0),  # key: front-left-above (azimuth 0 looks from -Y)
        ((1.0, -0.4, 0.5), 0.55),  # fill: right
        ((0.3, 1.0, 0.8), 0.6),  # rim: behind
        ((0.0, 0.2, -1.0), 0.25),  # from below
    ]
    rng = None if light_seed is None else np.random.default_rng(int(light_seed))
    lights = []
    for pos, intensity in base:
        p = np.asarray(pos, dtype=np.float64)
        color = np.ones(3)
        if rng is not None:
            p = p + rng.normal(0.0, 0.35, size=3)
            intensity = intensity * float(rng.uniform(0.6, 1.4))
            warm = float(rng.uniform(-0.15, 0.15))  # colour temperature: warm (+) or cool (-)
            color = np.clip(np.array([1.0 + warm, 1.0, 1.0 - warm]), 0.0, None)
            color = color / color.max()
        p = p / max(np.linalg.norm(p), 1e-9)
        lights.append(
            {"direction": [float(v) for v in -p], "intensity": float(intensity), "color": color.tolist()}
        )
    return lights


# The engines themselves (pyrender, bpy) are imported inside the renderers' methods, so importing these
# classes is cheap. They import the base class above, hence the imports at the bottom.
from render.renderers.blender import BlenderRenderer  # noqa: E402
from render.renderers.fast import FastRenderer  # noqa: E402

#: Renderer name -> class: the extension point for renderers.
RENDERERS: dict[str, type[Renderer]] = {"fast": FastRenderer, "blender": BlenderRenderer}

RENDERER_NAMES = tuple(RENDERERS)


def get_renderer(name: str, **settings: Any) -> Renderer:
    """Build the renderer called `name` ("fast" or "blender") with its settings."""
    if name not in RENDERER_NAMES:
        raise InputError(f"renderer '{name}': expected one of {', '.join(RENDERER_NAMES)}")
    cls = RENDERERS[name]
    try:
        return cls(**settings)
    except TypeError as exc:
        raise InputError(f"renderer '{name}': bad settings {sorted(settings)} ({exc})") from exc
