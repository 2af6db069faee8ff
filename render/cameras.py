"""The one camera convention of mv3d, and the orbits built on it.

Convention (docs/architecture.md, decided once, used by every package):

* World: right-handed, +Z up. Objects are normalised to the unit cube centred at the origin.
* Camera-to-world matrices are 4x4 in OpenGL camera axes (as nerfstudio and Blender): the camera looks
  down its own -Z, +Y is up in the image, +X is right.
* Azimuth 0 puts the camera on the world -Y axis looking towards +Y (Blender's front view). Azimuth
  90 puts it on +X: azimuth grows counter-clockwise seen from above. Elevation is positive above the
  equator (the z = 0 plane). Angles are in degrees in every public API and on disk; radians appear only
  in a network's camera inputs (the SV3D adapter at the bottom of this module; `relative_camera_angles`
  for models in mv3d's frame order, which `MultiViewDenoiser.cameras` and training's data use).

    position(az, el, r) = r * (cos(el) sin(az), -cos(el) cos(az), sin(el))

* Orbits: frame 0 is the input view at azimuth 0. Static orbits are N views evenly spaced in azimuth;
  dynamic orbits (SV3D style) have a smooth elevation curve and jittered azimuth steps over a full turn.
  Radius is per view; the field of view is one for the whole orbit.

Converters to OpenCV axes and to SV3D's inputs (its frame order, input view last, and its (polar,
azimuth) radians: `to_sv3d`, `from_sv3d_order`) live here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from render.common import MAX_VIEWS, InputError, check_range, check_seed

#: SV3D renders its training orbits with a 33.8 degree field of view.
SV3D_FOV_DEG = 33.8
#: Radius of the sphere that bounds the unit cube centred at the origin.
UNIT_CUBE_BOUNDING_RADIUS = math.sqrt(3.0) / 2.0
#: Fraction of the half-image left free around the bounding sphere in the default framing.
DEFAULT_MARGIN = 0.05
#: SV3D's default input elevation.
DEFAULT_ELEVATION_DEG = 10.0


def camera_distance_for_fov(
    fov_deg: float = SV3D_FOV_DEG,
    margin: float = DEFAULT_MARGIN,
    bounding_radius: float = UNIT_CUBE_BOUNDING_RADIUS,
) -> float:
    """Camera distance at which a sphere of `bounding_radius` fills `1 - margin` of the half image.

    A sphere seen from distance d subtends a cone of half-angle asin(R/d); its image is a disc of
    radius tan(asin(R/d)) in normalised coordinates, where the image half-width is tan(fov/2). Solving
    tan(asin(R/d)) = (1 - margin) tan(fov/2) for d gives the distance below. Because the bounding sphere
    holds the unit cube in every orientation, the object stays inside the frame at any elevation.
    """
    if not 0 < fov_deg < 180:
        raise InputError(f"field of view {fov_deg} degrees: expected a value in (0, 180)")
    if not 0 <= margin < 1:
        raise InputError(f"framing margin {margin}: expected a value in [0, 1)")
    half = math.radians(fov_deg) / 2.0
    cone = math.atan((1.0 - margin) * math.tan(half))
    return bounding_radius / math.sin(cone)


def camera_position(azimuth_deg, elevation_deg, radius) -> np.ndarray:
    """Camera centres in world coordinates, shape (..., 3), from angles in degrees and radii."""
    az = np.deg2rad(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.deg2rad(np.asarray(elevation_deg, dtype=np.float64))
    r = np.asarray(radius, dtype=np.float64)
    return np.stack([r * np.cos(el) * np.sin(az), -r * np.cos(el) * np.cos(az), r * np.sin(el)], axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> np.ndarray:
    """OpenGL camera-to-world matrices for cameras at `eye` (..., 3) looking at `target` (3,).

    Returns (..., 4, 4). Columns 0-2 are the camera's +X (right), +Y (up), +Z (backwards: the camera
    looks down -Z) in world coordinates; column 3 is the camera centre. At the poles, where the view
    direction is parallel to world +Z, the image up falls back to the direction the camera would face
    at azimuth 0 (+Y), so the matrices stay continuous along an orbit that reaches +-90 degrees.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    forward = target - eye
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, up)
    norm = np.linalg.norm(right, axis=-1, keepdims=True)
    degenerate = norm[..., 0] < 1e-8
    if np.any(degenerate):
        right = np.where(degenerate[..., None], np.cross(forward, np.array([0.0, 1.0, 0.0])), right)
        norm = np.linalg.norm(right, axis=-1, keepdims=True)
    right = right / norm
    cam_up = np.cross(right, forward)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = cam_up
    c2w[..., :3, 2] = -forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def camera_to_world(azimuth_deg, elevation_deg, radius) -> np.ndarray:
    """OpenGL camera-to-world (..., 4, 4) for cameras on a sphere looking at the origin."""
    return look_at(camera_position(azimuth_deg, elevation_deg, radius))


def angles_from_camera_to_world(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `camera_to_world` for cameras that look at the origin: (azimuth, elevation, radius).

    Azimuth is returned in [0, 360) degrees, elevation in [-90, 90] degrees.
    """
    pos = np.asarray(c2w, dtype=np.float64)[..., :3, 3]
    radius = np.linalg.norm(pos, axis=-1)
    elevation = np.rad2deg(np.arcsin(np.clip(pos[..., 2] / np.maximum(radius, 1e-12), -1.0, 1.0)))
    azimuth = np.rad2deg(np.arctan2(pos[..., 0], -pos[..., 1])) % 360.0
    return azimuth, elevation, radius


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenCV axes (looks down +Z, +Y down) from OpenGL axes; works both ways."""
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    return np.asarray(c2w, dtype=np.float64) @ flip


opencv_to_opengl = opengl_to_opencv


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; the principal point is at the image centre by default."""

    fl_x: float
    fl_y: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int | None = None) -> Intrinsics:
        """Intrinsics from the horizontal field of view (square pixels)."""
        height = width if height is None else height
        if width <= 0 or height <= 0:
            raise InputError(f"image size {width}x{height}: expected positive integers")
        fl = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
        return cls(fl, fl, width / 2.0, height / 2.0, int(width), int(height))

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fl_x))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.height / self.fl_y))

    def to_transforms(self) -> dict[str, float | int]:
        """The intrinsics as nerfstudio's transforms.json keys (`fl_x`, `fl_y`, `cx`, `cy`, `w`, `h`)."""
        return {
            "fl_x": self.fl_x,
            "fl_y": self.fl_y,
            "cx": self.cx,
            "cy": self.cy,
            "w": self.width,
            "h": self.height,
        }

    def matrix(self) -> np.ndarray:
        """The 3x3 OpenCV K matrix."""
        return np.array([[self.fl_x, 0.0, self.cx], [0.0, self.fl_y, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int | None = None) -> Intrinsics:
        """The same camera at another image size."""
        height = width if height is None else height
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fl_x * sx, self.fl_y * sy, self.cx * sx, self.cy * sy, width, height)


def project(points: np.ndarray, c2w: np.ndarray, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (P, 3) into one camera: pixel coordinates (P, 2) and depth (P,).

    Pixel (0, 0) is the top-left corner of the top-left pixel; depth is positive in front of the
    camera (distance along its viewing axis).
    """
    w2c = np.linalg.inv(opengl_to_opencv(c2w))
    pts = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = pts[:, 2]
    safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    uv = np.stack([intr.fl_x * pts[:, 0] / safe + intr.cx, intr.fl_y * pts[:, 1] / safe + intr.cy], axis=-1)
    return uv, z


@dataclass(frozen=True, eq=False)
class Orbit:
    """N cameras on spheres around the origin, all looking at it, with one field of view.

    Attributes:
        azimuth_deg: (N,) azimuths in degrees; frame 0 is the input view.
        elevation_deg: (N,) elevations in degrees.
        radius: (N,) camera distances from the origin.
        fov_deg: horizontal (= vertical, square images) field of view in degrees.
    """

    azimuth_deg: np.ndarray
    elevation_deg: np.ndarray
    radius: np.ndarray
    fov_deg: float = SV3D_FOV_DEG
    kind: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        az = np.asarray(self.azimuth_deg, dtype=np.float64).reshape(-1)
        el = np.asarray(self.elevation_deg, dtype=np.float64).reshape(-1)
        r = np.broadcast_to(np.asarray(self.radius, dtype=np.float64), az.shape).copy()
        if az.shape != el.shape:
            raise InputError(
                f"orbit has {az.size} azimuths but {el.size} elevations: expected as many of each"
            )
        if az.size == 0:
            raise InputError("orbit has no views: expected at least one")
        if az.size > MAX_VIEWS:
            raise InputError(f"orbit has {az.size} views: expected at most {MAX_VIEWS}")
        if not (np.all(np.isfinite(az)) and np.all(np.isfinite(el)) and np.all(np.isfinite(r))):
            raise InputError("orbit has non-finite angles or radii")
        if np.any(np.abs(el) > 90.0):
            raise InputError(
                f"orbit elevation {el[np.abs(el) > 90][0]} degrees: expected a value in [-90, 90]"
            )
        if np.any(r <= 0):
            raise InputError(f"orbit radius {r[r <= 0][0]}: expected a positive distance")
        object.__setattr__(self, "azimuth_deg", az)
        object.__setattr__(self, "elevation_deg", el)
        object.__setattr__(self, "radius", r)

    def __len__(self) -> int:
        return int(self.azimuth_deg.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Orbit):
            return NotImplemented
        return (
            self.fov_deg == other.fov_deg
            and np.array_equal(self.azimuth_deg, other.azimuth_deg)
            and np.array_equal(self.elevation_deg, other.elevation_deg)
            and np.array_equal(self.radius, other.radius)
        )

    __hash__ = None  # mutable-looking arrays inside: orbits are not dictionary keys

    @property
    def polar_deg(self) -> np.ndarray:
        return 90.0 - self.elevation_deg

    def camera_to_world(self) -> np.ndarray:
        """(N, 4, 4) OpenGL camera-to-world matrices."""
        return camera_to_world(self.azimuth_deg, self.elevation_deg, self.radius)

    def intrinsics(self, width: int, height: int | None = None) -> Intrinsics:
        return Intrinsics.from_fov(self.fov_deg, width, height)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "fov_deg": float(self.fov_deg),
            "azimuth_deg": [float(a) for a in self.azimuth_deg],
            "elevation_deg": [float(e) for e in self.elevation_deg],
            "radius": [float(r) for r in self.radius],
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "orbit") -> Orbit:
        """Read an orbit written by `to_dict` (also the `--orbit FILE.json` format of the CLI)."""
        try:
            az = data["azimuth_deg"]
            el = data["elevation_deg"]
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"{source}: expected keys 'azimuth_deg' and 'elevation_deg' (lists of degrees)"
            ) from exc
        try:
            fov = float(data.get("fov_deg", SV3D_FOV_DEG))
            radius = data.get("radius", camera_distance_for_fov(fov))
            az, el, radius = (np.asarray(v, float) for v in (az, el, radius))
            return cls(az, el, np.broadcast_to(radius, az.shape), fov, str(data.get("kind", "custom")))
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(
                f"{source}: expected numbers: 'azimuth_deg', 'elevation_deg' and 'radius' as lists of one "
                f"value a view, 'fov_deg' one number ({str(exc).splitlines()[0]})"
            ) from None


def static_orbit(
    num_views: int,
    elevation_deg: float = DEFAULT_ELEVATION_DEG,
    start_azimuth_deg: float = 0.0,
    fov_deg: float = SV3D_FOV_DEG,
    radius: float | None = None,
    margin: float = DEFAULT_MARGIN,
) -> Orbit:
    """N views evenly spaced over a full turn at one elevation; frame 0 at `start_azimuth_deg`."""
    check_range("views", num_views, 1, MAX_VIEWS, "a number of views")
    radius = camera_distance_for_fov(fov_deg, margin) if radius is None else radius
    az = (start_azimuth_deg + 360.0 * np.arange(num_views) / num_views) % 360.0
    el = np.full(num_views, float(elevation_deg))
    return Orbit(az, el, np.full(num_views, radius), fov_deg, "static")


def dynamic_orbit(
    num_views: int,
    elevation_deg: float = DEFAULT_ELEVATION_DEG,
    seed: int | np.random.Generator = 0,
    fov_deg: float = SV3D_FOV_DEG,
    radius: float | None = None,
    margin: float = DEFAULT_MARGIN,
    max_amplitude_deg: float = 10.0,
    num_sinusoids: int = 3,
    azimuth_jitter: float = 0.3,
    elevation_range_deg: tuple[float, float] = (-89.0, 89.0),
) -> Orbit:
    """An SV3D-style dynamic orbit: smooth elevation and jittered azimuth, still one full turn.

    Elevation is `elevation_deg` plus a sum of `num_sinusoids` sinusoids in azimuth (harmonics 1..K,
    random phases, amplitudes in [0.5, max_amplitude_deg] / k), shifted so that frame 0 sits exactly
    at `elevation_deg` (it is the input view). Azimuth steps are 360/N scaled by factors in
    [1 - jitter, 1 + jitter], renormalised to sum to 360, so the azimuths increase monotonically from
    0 and the last step closes the turn.
    """
    if num_views < 1:
        raise InputError(f"number of views {num_views}: expected at least 1")
    if not 0 <= azimuth_jitter < 1:
        raise InputError(f"azimuth jitter {azimuth_jitter}: expected a value in [0, 1)")
    # a negative seed was numpy's bare "expected non-negative integer" (the CLIs check theirs)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
    radius = camera_distance_for_fov(fov_deg, margin) if radius is None else radius
    steps = 1.0 + rng.uniform(-azimuth_jitter, azimuth_jitter, size=num_views)
    steps = 360.0 * steps / steps.sum()
    az = np.concatenate([[0.0], np.cumsum(steps[:-1])])
    theta = np.deg2rad(az)
    offset = np.zeros(num_views)
    for k in range(1, num_sinusoids + 1):
        amp = rng.uniform(min(0.5, max_amplitude_deg), max_amplitude_deg) / k
        phase = rng.uniform(0.0, 2.0 * np.pi)
        offset += amp * (np.sin(k * theta + phase) - np.sin(phase))
    el = np.clip(elevation_deg + offset, *elevation_range_deg)
    el[0] = elevation_deg
    return Orbit(az, el, np.full(num_views, radius), fov_deg, "dynamic")


def relative_camera_angles(azimuth_deg, elevation_deg) -> tuple[np.ndarray, np.ndarray]:
    """A network's camera inputs for views in mv3d's frame order: (polar, azimuth), each (N,) float64
    radians; polar = 90 - elevation, azimuth relative to the first view in [0, 2 pi)."""
    azimuth = np.asarray(azimuth_deg, np.float64)
    polar = np.deg2rad(90.0 - np.asarray(elevation_deg, np.float64))
    return polar, np.deg2rad(np.mod(azimuth - azimuth[0], 360.0))


# ------------------------------------------------------------------------------------------------
# SV3D adapter: the only place that knows SV3D's angle units and frame order.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SV3DConditioning:
    """Per-frame conditioning in SV3D's units and frame order.

    Attributes:
        polar_rad: (N,) polar angles in radians (polar = 90 deg - elevation), SV3D frame order.
        azimuth_rad: (N,) azimuths in radians in [0, 2 pi), relative to the input view, SV3D order.
        order: (N,) indices into the mv3d orbit: SV3D frame j is mv3d frame `order[j]`.
    """

    polar_rad: np.ndarray
    azimuth_rad: np.ndarray
    order: np.ndarray


def to_sv3d(orbit: Orbit, direction: int = 1) -> SV3DConditioning:
    """Map an mv3d orbit (frame 0 = input, azimuth counter-clockwise from above) to SV3D's inputs.

    SV3D_p's reference orbit puts the input view LAST: its azimuths are 360/N, 2*360/N, ..., 360 = 0,
    re-referenced to the last frame. So SV3D frame j is mv3d frame (j + 1) mod N, and its azimuth is
    measured from the input view. `direction` is -1 if SV3D's weights turn the other way than mv3d's
    counter-clockwise convention (undocumented; establish it empirically with real weights): azimuths
    are then mirrored (a -> 360 - a).
    """
    if direction not in (1, -1):
        raise InputError(f"SV3D azimuth direction {direction}: expected 1 or -1")
    n = len(orbit)
    order = (np.arange(n) + 1) % n
    rel = (orbit.azimuth_deg - orbit.azimuth_deg[0]) % 360.0
    if direction == -1:
        rel = (-rel) % 360.0
    return SV3DConditioning(
        polar_rad=np.deg2rad(orbit.polar_deg[order]),
        azimuth_rad=np.deg2rad(rel[order]),
        order=order,
    )


def from_sv3d_order(frames, order: np.ndarray):
    """Put frames generated in SV3D order back into mv3d order (frame 0 = input view).

    `frames` is indexable along its first axis (N, ...); returns the same type reordered.
    """
    inverse = np.argsort(np.asarray(order))
    return frames[inverse]
