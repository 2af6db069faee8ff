"""The camera convention: positions, axes, round trips, intrinsics, SV3D adapter."""

import math

import numpy as np
import pytest

from render.cameras import (
    SV3D_FOV_DEG,
    UNIT_CUBE_BOUNDING_RADIUS,
    Intrinsics,
    Orbit,
    angles_from_camera_to_world,
    camera_distance_for_fov,
    camera_to_world,
    dynamic_orbit,
    from_sv3d_order,
    opencv_to_opengl,
    opengl_to_opencv,
    project,
    static_orbit,
    to_sv3d,
)
from render.common import InputError


@pytest.mark.parametrize(
    "azimuth, expected_position",
    [(0, (0, -1, 0)), (90, (1, 0, 0)), (180, (0, 1, 0)), (270, (-1, 0, 0))],
)
def test_azimuth_positions_follow_the_convention(azimuth, expected_position):
    c2w = camera_to_world(azimuth, 0.0, 1.0)
    np.testing.assert_allclose(c2w[:3, 3], expected_position, atol=1e-12)
    # OpenGL: the camera looks down its -Z, i.e. towards the origin.
    forward = -c2w[:3, 2]
    np.testing.assert_allclose(forward, -np.asarray(expected_position), atol=1e-12)
    # Image up is world +Z on the equator; image right is horizontal.
    np.testing.assert_allclose(c2w[:3, 1], (0, 0, 1), atol=1e-12)
    assert abs(c2w[2, 0]) < 1e-12


def test_front_view_matches_blender_front():
    # Blender's front view: camera on -Y looking +Y, world +X to the right of the image.
    c2w = camera_to_world(0.0, 0.0, 3.0)
    np.testing.assert_allclose(c2w[:3, 0], (1, 0, 0), atol=1e-12)


def test_azimuth_is_counter_clockwise_from_above():
    a = camera_to_world(10.0, 0.0, 1.0)[:2, 3]
    b = camera_to_world(20.0, 0.0, 1.0)[:2, 3]
    # z-component of the 2D cross product > 0 means a counter-clockwise turn seen from +Z.
    assert a[0] * b[1] - a[1] * b[0] > 0


def test_positive_elevation_is_above_the_equator():
    assert camera_to_world(0.0, 30.0, 2.0)[2, 3] == pytest.approx(2.0 * math.sin(math.radians(30)))


def test_rotation_is_orthonormal_and_right_handed():
    orbit = dynamic_orbit(21, 10.0, seed=3)
    c2w = orbit.camera_to_world()
    r = c2w[:, :3, :3]
    np.testing.assert_allclose(
        r @ np.transpose(r, (0, 2, 1)), np.broadcast_to(np.eye(3), r.shape), atol=1e-10
    )
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-10)


def test_poles_are_finite():
    for el in (90.0, -90.0):
        c2w = camera_to_world(45.0, el, 2.0)
        assert np.all(np.isfinite(c2w))
        np.testing.assert_allclose(np.linalg.det(c2w[:3, :3]), 1.0, atol=1e-10)


def test_angles_round_trip():
    rng = np.random.default_rng(0)
    az = rng.uniform(0, 360, 50)
    el = rng.uniform(-89, 89, 50)
    r = rng.uniform(0.5, 5, 50)
    az2, el2, r2 = angles_from_camera_to_world(camera_to_world(az, el, r))
    np.testing.assert_allclose(((az2 - az + 180) % 360) - 180, 0, atol=1e-8)
    np.testing.assert_allclose(el2, el, atol=1e-8)
    np.testing.assert_allclose(r2, r, atol=1e-10)


def test_opencv_round_trip_and_axes():
    c2w = camera_to_world(30.0, 20.0, 2.5)
    cv = opengl_to_opencv(c2w)
    np.testing.assert_allclose(opencv_to_opengl(cv), c2w, atol=1e-12)
    # OpenCV looks down +Z: towards the origin.
    np.testing.assert_allclose(cv[:3, 2], -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)


def test_projection_of_origin_is_the_image_centre_and_depth_is_the_radius():
    intr = Intrinsics.from_fov(SV3D_FOV_DEG, 256)
    uv, z = project(np.zeros((1, 3)), camera_to_world(77.0, 12.0, 3.0), intr)
    np.testing.assert_allclose(uv[0], (128, 128), atol=1e-9)
    assert z[0] == pytest.approx(3.0)


def test_projection_orientation_right_and_up():
    intr = Intrinsics.from_fov(SV3D_FOV_DEG, 100)
    c2w = camera_to_world(0.0, 0.0, 3.0)
    uv, _ = project(np.array([[0.2, 0, 0], [0, 0, 0.2]]), c2w, intr)
    assert uv[0, 0] > 50  # world +X appears right of centre in the front view
    assert uv[1, 1] < 50  # world +Z appears above the centre (image rows grow downwards)


def test_intrinsics_from_fov_round_trip_and_scaling():
    intr = Intrinsics.from_fov(33.8, 576)
    assert intr.fov_x_deg == pytest.approx(33.8)
    assert intr.fl_x == pytest.approx(0.5 * 576 / math.tan(math.radians(16.9)))
    small = intr.scaled(64)
    assert small.fov_x_deg == pytest.approx(33.8)
    assert small.cx == 32


def test_default_framing_keeps_the_unit_cube_inside_every_view():
    d = camera_distance_for_fov()
    assert 2.9 < d < 3.4
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    intr = Intrinsics.from_fov(SV3D_FOV_DEG, 256)
    for el in (-90, -45, -5, 0, 10, 30, 60, 89):
        for az in range(0, 360, 15):
            uv, z = project(corners, camera_to_world(az, el, d), intr)
            assert np.all(z > 0)
            assert np.all((uv >= 0) & (uv <= 256)), (az, el)


def test_framing_margin_is_exact_for_the_bounding_sphere():
    d = camera_distance_for_fov(SV3D_FOV_DEG, 0.0)
    # With no margin the bounding sphere's silhouette touches the image border.
    half = math.tan(math.asin(UNIT_CUBE_BOUNDING_RADIUS / d))
    assert half == pytest.approx(math.tan(math.radians(SV3D_FOV_DEG / 2)))


def test_static_orbit():
    orbit = static_orbit(21, elevation_deg=10.0)
    assert len(orbit) == 21
    assert orbit.azimuth_deg[0] == 0.0
    np.testing.assert_allclose(np.diff(orbit.azimuth_deg), 360 / 21)
    np.testing.assert_allclose(orbit.elevation_deg, 10.0)
    np.testing.assert_allclose(orbit.polar_deg, 80.0)


def test_dynamic_orbit_is_smooth_full_turn_and_deterministic():
    a = dynamic_orbit(21, 10.0, seed=7)
    b = dynamic_orbit(21, 10.0, seed=7)
    c = dynamic_orbit(21, 10.0, seed=8)
    np.testing.assert_array_equal(a.azimuth_deg, b.azimuth_deg)
    np.testing.assert_array_equal(a.elevation_deg, b.elevation_deg)
    assert not np.allclose(a.elevation_deg, c.elevation_deg)
    assert a.azimuth_deg[0] == 0 and a.elevation_deg[0] == 10.0
    steps = np.diff(np.concatenate([a.azimuth_deg, [360.0]]))
    assert np.all(steps > 0) and steps.sum() == pytest.approx(360.0)
    assert not np.allclose(steps, 360 / 21)  # jittered
    assert np.ptp(a.elevation_deg) > 0.5  # varies
    assert np.max(np.abs(np.diff(a.elevation_deg))) < 15  # smooth
    # a seed numpy refuses is one line naming it (it was numpy's "expected non-negative integer")
    for bad in (-1, 2**64, 1.5):
        with pytest.raises(InputError, match=f"^seed {bad}: expected a whole number from 0") as info:
            dynamic_orbit(21, 10.0, seed=bad)
        assert info.value.field == "seed"


def test_orbit_dict_round_trip_and_validation():
    orbit = dynamic_orbit(5, 20.0, seed=1)
    again = Orbit.from_dict(orbit.to_dict())
    assert again == orbit
    with pytest.raises(InputError, match="elevation"):
        Orbit(np.zeros(2), np.array([0.0, 95.0]), 3.0)
    with pytest.raises(InputError, match="azimuth"):
        Orbit.from_dict({"elevation_deg": [0]}, source="orbit.json")
    with pytest.raises(InputError):
        static_orbit(0)


def test_sv3d_adapter_order_and_units():
    orbit = static_orbit(21, elevation_deg=10.0)
    sv = to_sv3d(orbit)
    # SV3D's input view is its LAST frame, at azimuth 0; its frame j is mv3d frame j + 1.
    assert sv.order[-1] == 0
    np.testing.assert_allclose(sv.azimuth_rad[-1], 0.0)
    np.testing.assert_allclose(np.rad2deg(sv.azimuth_rad[:-1]), 360 / 21 * np.arange(1, 21))
    np.testing.assert_allclose(sv.polar_rad, np.deg2rad(80.0))
    frames = np.arange(21)[sv.order]  # "generated" in SV3D order
    np.testing.assert_array_equal(from_sv3d_order(frames, sv.order), np.arange(21))
    mirrored = to_sv3d(orbit, direction=-1)
    np.testing.assert_allclose(np.rad2deg(mirrored.azimuth_rad[0]), 360 - 360 / 21)


def test_non_square_intrinsics_and_projection():
    """Landscape and portrait images: principal point at the centre, square pixels, fov_x as asked."""
    for w, h in ((160, 90), (90, 160)):
        intr = Intrinsics.from_fov(40.0, w, h)
        assert (intr.cx, intr.cy) == (w / 2, h / 2)
        assert intr.fl_x == intr.fl_y == pytest.approx(0.5 * w / math.tan(math.radians(20.0)))
        assert intr.fov_x_deg == pytest.approx(40.0)
        # Square pixels: tan(fov_y / 2) = (h / w) tan(fov_x / 2).
        assert math.tan(math.radians(intr.fov_y_deg / 2)) == pytest.approx(
            h / w * math.tan(math.radians(20.0))
        )
        c2w = camera_to_world(0.0, 0.0, 3.0)
        uv, _ = project(np.array([[0.0, 0, 0], [0.3, 0, 0], [0, 0, 0.3]]), c2w, intr)
        np.testing.assert_allclose(uv[0], (w / 2, h / 2), atol=1e-9)
        # The same world offset moves as many pixels right (+X) as up (+Z): square pixels.
        assert uv[1, 0] - w / 2 == pytest.approx(h / 2 - uv[2, 1])
        assert uv[1, 0] - w / 2 == pytest.approx(intr.fl_x * 0.3 / 3.0)
    # Orbit.intrinsics passes the height through.
    assert static_orbit(3).intrinsics(64, 48).cy == 24


def test_intrinsics_scaled_with_different_x_and_y_scales():
    intr = Intrinsics(fl_x=100.0, fl_y=120.0, cx=64.0, cy=40.0, width=128, height=96)
    s = intr.scaled(64, 24)  # x halves, y quarters
    assert (s.fl_x, s.cx, s.width) == (50.0, 32.0, 64)
    assert (s.fl_y, s.cy, s.height) == (30.0, 10.0, 24)
    # The same scene point lands at the scaled pixel position (pixel-corner convention, no half-pixel shift).
    c2w = camera_to_world(30.0, 20.0, 3.0)
    pts = np.array([[0.1, -0.2, 0.15], [0.3, 0.1, -0.1]])
    uv, _ = project(pts, c2w, intr)
    uv_s, _ = project(pts, c2w, s)
    np.testing.assert_allclose(uv_s, uv * np.array([0.5, 0.25]), atol=1e-9)


@pytest.mark.parametrize("elevation", [90.0, -90.0])
def test_camera_at_the_poles(elevation):
    """At the poles the image up falls back to world +Y (the way the azimuth-0 camera faces)."""
    for az in (0.0, 45.0, 200.0):  # azimuth is meaningless at a pole: the same camera every time
        c2w = camera_to_world(az, elevation, 2.0)
        np.testing.assert_allclose(c2w[:3, 3], (0, 0, 2.0 * np.sign(elevation)), atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 1], (0, 1, 0), atol=1e-12)  # image up
        np.testing.assert_allclose(c2w[:3, 2], (0, 0, np.sign(elevation)), atol=1e-12)  # looks at the origin
        np.testing.assert_allclose(np.linalg.det(c2w[:3, :3]), 1.0, atol=1e-12)
    # A point on world +Y appears above the image centre; one on +X to the right (north) or left (south).
    intr = Intrinsics.from_fov(SV3D_FOV_DEG, 64, 48)
    uv, z = project(np.array([[0, 0.2, 0], [0.2, 0, 0]]), camera_to_world(0.0, elevation, 2.0), intr)
    assert np.all(z > 0) and uv[0, 1] < 24 and uv[0, 0] == pytest.approx(32)
    assert (uv[1, 0] > 32) == (elevation > 0)


def test_orbit_through_the_north_pole_is_continuous_from_azimuth_zero():
    """A camera rising over the top at azimuth 0 reaches the pole's matrix without a jump."""
    el = np.array([80.0, 89.0, 89.9, 89.999, 90.0])
    c2w = camera_to_world(np.zeros_like(el), el, 2.5)
    steps = np.linalg.norm(np.diff(c2w[:, :3, :3], axis=0), axis=(1, 2))
    assert np.all(np.isfinite(c2w))
    assert steps[-1] < 1e-3 and np.all(steps < 0.5)
    # From the other side (azimuth 180) the south pole is reached smoothly likewise.
    el_s = -el
    c2w_s = camera_to_world(np.full_like(el_s, 180.0), el_s, 2.5)
    assert np.linalg.norm(c2w_s[-1, :3, :3] - c2w_s[-2, :3, :3]) < 1e-3


@pytest.mark.parametrize("seed", range(6))
def test_dynamic_orbit_is_anchored_and_smooth_across_frame_zero(seed):
    """Frame 0 is the input view, and the elevation curve passes through it: no jump from frame 0 to 1.

    The offset is a sum of K sinusoids in azimuth with amplitudes at most A / k, so its slope is at most
    K * A degrees per radian of azimuth; each step's change is bounded by that times the step.
    """
    n, amp, k = 120, 10.0, 3
    orbit = dynamic_orbit(n, 15.0, seed=seed, max_amplitude_deg=amp, num_sinusoids=k)
    assert orbit.azimuth_deg[0] == 0.0 and orbit.elevation_deg[0] == 15.0
    az = np.deg2rad(np.concatenate([orbit.azimuth_deg, [360.0]]))
    el = np.concatenate([orbit.elevation_deg, orbit.elevation_deg[:1]])  # the turn closes on frame 0
    bound = k * amp * np.diff(az) + 1e-9
    assert np.all(np.abs(np.diff(el)) <= bound), (np.abs(np.diff(el)) / bound).max()
    assert np.ptp(orbit.elevation_deg) > 1.0


def test_relative_camera_angles_wrap_past_a_full_turn():
    """A network's azimuth inputs are relative to the first view and in [0, 2 pi): an orbit starting
    at 300 degrees (or given in negative degrees) crosses 360 and must not go negative."""
    from render.cameras import relative_camera_angles

    polar, azimuth = relative_camera_angles([300.0, 330.0, 0.0, 30.0, -60.0], [0.0, 10.0, -10.0, 90.0, 0.0])
    np.testing.assert_allclose(np.rad2deg(azimuth), [0.0, 30.0, 60.0, 90.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.rad2deg(polar), [90.0, 80.0, 100.0, 0.0, 90.0], atol=1e-9)
    assert polar.dtype == azimuth.dtype == np.float64
