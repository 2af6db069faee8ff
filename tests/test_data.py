"""The orbit-video data loader (video_prior/data.py) on tiny synthetic orbit datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from render.cameras import dynamic_orbit, static_orbit
from render.common import InputError
from render.dataset import write_orbit_dataset
from video_prior import data as vdata


def disc_views(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 4) RGBA: a disc whose red channel encodes the view index; transparent outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 < (size * 0.35) ** 2
    ims = np.zeros((n, size, size, 4), np.uint8)
    base = rng.integers(0, 256, 2)
    for i in range(n):
        ims[i, ..., 0] = 10 * i
        ims[i, ..., 1:3] = base
        ims[i, ..., 3] = np.where(inside, 255, 0)
    return ims


def make_objects(root, count=3, views=8, dynamic=False):
    for k in range(count):
        orbit = dynamic_orbit(views, 15.0, seed=k) if dynamic else static_orbit(views, 10.0 + k)
        write_orbit_dataset(root / f"obj{k:02d}", disc_views(views, seed=k), orbit)
    return root


def test_find_object_dirs_and_errors(tmp_path):
    make_objects(tmp_path / "a", 2)
    make_objects(tmp_path / "b" / "nested", 1)
    dirs = vdata.find_object_dirs([tmp_path / "a", tmp_path / "b"])
    assert [d.name for d in dirs] == ["obj00", "obj01", "obj00"]
    assert vdata.find_object_dirs([tmp_path / "a" / "obj01"]) == [(tmp_path / "a" / "obj01").resolve()]
    with pytest.raises(InputError, match="does not exist"):
        vdata.find_object_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no orbit datasets"):
        vdata.find_object_dirs([tmp_path / "empty"])


def test_views_that_are_not_square_are_refused(tmp_path):
    """The loader resizes every view to resolution x resolution: 32x24 views would be stretched, so they
    are refused with one line naming the dataset (before, they trained silently, squashed)."""
    write_orbit_dataset(tmp_path / "wide", disc_views(4)[:, 4:28], static_orbit(4, 10.0))
    cfg = vdata.DataConfig(num_frames=4, resolution=16)
    with pytest.raises(
        InputError, match=r"wide/transforms.json: views of 32x24 pixels: expected square views"
    ):
        vdata.OrbitVideoDataset([tmp_path], cfg)


def test_select_frames_orbits():
    az = np.arange(8) * 45.0
    assert vdata.select_frames(az, 8, 3).tolist() == [3, 4, 5, 6, 7, 0, 1, 2]
    assert vdata.select_frames(az, 4, 1).tolist() == [1, 3, 5, 7]  # stride 2: still a full turn
    shuffled = np.array([90.0, 0.0, 270.0, 180.0])
    assert vdata.select_frames(shuffled, 4, 0).tolist() == [1, 0, 3, 2]  # sorted by azimuth
    from render.cameras import relative_camera_angles

    polar, rel = relative_camera_angles(az[[3, 4, 5]], np.array([10.0, 20.0, 30.0]))
    np.testing.assert_allclose(rel, np.deg2rad([0.0, 45.0, 90.0]), atol=1e-6)
    np.testing.assert_allclose(polar, np.deg2rad([80.0, 70.0, 60.0]), atol=1e-6)


def test_item_shapes_frames_and_conditioning_view(tmp_path):
    make_objects(tmp_path, 3, views=8)
    cfg = vdata.DataConfig(num_frames=8, resolution=16, background="white")
    ds = vdata.OrbitVideoDataset([tmp_path], cfg, seed=1)
    item = ds[1]
    assert item["frames"].shape == (8, 3, 16, 16)
    assert item["frames"].min() >= -1 and item["frames"].max() <= 1
    torch.testing.assert_close(item["cond_image"], item["frames"][0])
    # Frame 0 is the conditioning view, the rest follow the orbit; azimuths are relative to it.
    views = item["view_indices"].tolist()
    assert views == [(views[0] + k) % 8 for k in range(8)]
    torch.testing.assert_close(item["azimuth_rad"], torch.deg2rad(torch.arange(8) * 45.0))
    torch.testing.assert_close(
        item["polar_rad"], torch.full((8,), np.deg2rad(79.0), dtype=torch.float32)
    )  # object 1: elevation 11
    # The disc's red channel encodes the view index: the centre pixel of each frame is that view.
    red = (item["frames"][:, 0, 8, 8] + 1) / 2 * 255
    np.testing.assert_allclose(red.numpy(), [10 * v for v in views], atol=1.5)
    # White background in the corner.
    assert torch.all(item["frames"][:, :, 0, 0] > 0.99)


def test_determinism_and_backgrounds(tmp_path):
    make_objects(tmp_path, 2, views=6, dynamic=True)
    cfg = vdata.DataConfig(num_frames=3, resolution=8, background="random")
    a = vdata.OrbitVideoDataset([tmp_path], cfg, seed=3)
    b = vdata.OrbitVideoDataset([tmp_path], cfg, seed=3)
    torch.testing.assert_close(a[0]["frames"], b[0]["frames"], rtol=0, atol=0)
    corners = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        corners.add(tuple(a[0]["frames"][0, :, 0, 0].tolist()))
    assert len(corners) > 3  # a new random colour per epoch
    item = a[1]
    assert item["azimuth_rad"][0] == 0 and torch.all(item["azimuth_rad"][1:] > 0)
    with pytest.raises(InputError, match="background"):
        vdata.DataConfig(background="checker")


def test_batch_order_is_a_function_of_the_step():
    seen = [vdata.batch_indices(10, 2, s, seed=0) for s in range(5)]
    assert all(e == 0 for e, _ in seen)
    assert sorted(i for _, b in seen for i in b) == list(range(10))  # one epoch visits every item once
    assert vdata.batch_indices(10, 2, 5, seed=0)[0] == 1
    # Two processes split each global batch without overlap.
    r0 = vdata.batch_indices(10, 2, 1, seed=0, rank=0, world_size=2)[1]
    r1 = vdata.batch_indices(10, 2, 1, seed=0, rank=1, world_size=2)[1]
    assert not set(r0) & set(r1)
    # Fewer items than a batch wraps around.
    assert len(vdata.batch_indices(1, 3, 0, seed=0)[1]) == 3


def test_loader_resumes_at_a_step(tmp_path):
    make_objects(tmp_path, 3, views=4)
    ds = vdata.OrbitVideoDataset([tmp_path], vdata.DataConfig(num_frames=4, resolution=8), seed=0)
    it = iter(vdata.make_loader(ds, 2, seed=0))
    batches = [next(it) for _ in range(4)]
    resumed = next(iter(vdata.make_loader(ds, 2, seed=0, start=3)))
    torch.testing.assert_close(resumed["frames"], batches[3]["frames"], rtol=0, atol=0)
    assert batches[0]["frames"].shape == (2, 4, 3, 8, 8)


def test_shuffled_frames_and_alpha_channel(tmp_path):
    root = make_objects(tmp_path, count=1, views=8)
    plain = vdata.OrbitVideoDataset([root], vdata.DataConfig(num_frames=8, resolution=16, background="white"))
    cfg = vdata.DataConfig(num_frames=8, resolution=16, background="white", shuffle_frames=True, alpha=True)
    ds = vdata.OrbitVideoDataset([root], cfg, seed=0)
    a, b = plain[0], ds[0]
    # frame 0 is still the conditioning view; the novel views are the same set in another order
    assert b["view_indices"][0] == a["view_indices"][0]
    assert sorted(b["view_indices"][1:].tolist()) == sorted(a["view_indices"][1:].tolist())
    orders = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        orders.add(tuple(ds[0]["view_indices"].tolist()))
    assert len(orders) > 1
    # each frame's camera still describes the view it shows: the red channel encodes the view index
    ds.set_epoch(0)
    item = ds[0]
    red = ((item["frames"][:, 0, 8, 8] + 1) / 2 * 255).round() / 10
    assert red.tolist() == item["view_indices"].float().tolist()
    shown = ds.orbits[0].orbit.azimuth_deg[item["view_indices"].numpy()]
    az = np.deg2rad(np.mod(shown - shown[0], 360.0))
    np.testing.assert_allclose(item["azimuth_rad"].numpy(), az, atol=1e-5)
    # the 4th channel is the alpha matte in [-1, 1]: opaque disc, clear corners
    assert item["frames"].shape == (8, 4, 16, 16) and item["cond_image"].shape == (4, 16, 16)
    assert item["frames"][:, 3, 8, 8].eq(1).all() and item["frames"][:, 3, 0, 0].eq(-1).all()
    with pytest.raises(InputError, match="alpha with use_cache"):
        vdata.DataConfig(alpha=True, use_cache=True)
