"""View metrics on hand-made cases with known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.view_metrics import (
    CLIPScorer,
    clip_similarity,
    depth_maps,
    mask_iou,
    masks_from_alpha,
    psnr,
    reprojection_error,
    ssim,
    to_tensor,
)
from render.cameras import opengl_to_opencv, static_orbit
from render.common import InputError


def _images(seed=0, n=3, size=32):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen)


def test_to_tensor_composites_on_white():
    rgba = np.zeros((1, 2, 2, 4), np.uint8)
    rgba[0, 0, 0] = (255, 0, 0, 255)
    rgba[0, 0, 1] = (0, 0, 0, 0)
    t = to_tensor(rgba)
    assert t.shape == (1, 3, 2, 2)
    assert torch.allclose(t[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(t[0, :, 0, 1], torch.ones(3))
    with pytest.raises(InputError):
        to_tensor(np.zeros((2, 2), np.uint8))


def test_psnr_known_values():
    x = _images()
    assert torch.all(psnr(x, x) == 100.0)
    # A constant offset of 0.1 everywhere: MSE 0.01 -> 20 dB exactly.
    y = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(y, y + 0.1), torch.full((2,), 20.0), atol=1e-4)
    with pytest.raises(InputError):
        psnr(x, x[:, :, :16])


def test_ssim_identical_shifted_and_symmetric():
    x = _images(size=48)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    # Smooth images shifted by a few pixels lose similarity; more shift loses more.
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 48), torch.linspace(0, 6, 48), indexing="ij")
    smooth = (0.5 + 0.4 * torch.sin(xx * 2) * torch.cos(yy * 3)).expand(1, 3, 48, 48)
    s1 = ssim(torch.roll(smooth, 1, dims=3), smooth)
    s4 = ssim(torch.roll(smooth, 4, dims=3), smooth)
    assert 1.0 > s1.item() > s4.item()
    assert torch.allclose(ssim(x, x.flip(0)), ssim(x.flip(0), x), atol=1e-6)


def test_mask_iou():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared -> 4 / 12
    a[1] = True  # vs empty -> 0
    # frame 2: both empty -> 1
    assert torch.allclose(mask_iou(a, b), torch.tensor([1 / 3, 0.0, 1.0]))
    rgba = np.zeros((1, 2, 2, 4), np.uint8)
    rgba[0, 0, 0, 3] = 128
    rgba[0, 0, 1, 3] = 127
    assert masks_from_alpha(rgba)[0].tolist() == [[True, False], [False, False]]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16,
    )  # fmt: skip
    d = tmp_path_factory.mktemp("clip")
    CLIPVisionModelWithProjection(cfg).save_pretrained(d)
    return d


def test_clip_similarity_with_local_tiny_clip(tiny_clip, tmp_path):
    scorer = CLIPScorer.from_pretrained(tiny_clip)
    x = _images(size=40)
    y = _images(seed=5, size=40)
    same = clip_similarity(x, x, scorer)
    assert same.shape == (3,) and torch.allclose(same, torch.ones(3), atol=1e-5)
    other = clip_similarity(x, y, scorer)
    assert torch.all(other < 1.0 - 1e-4) and torch.all(other >= -1.0)
    assert torch.allclose(other, clip_similarity(y, x, scorer), atol=1e-5)
    with pytest.raises(InputError, match="no CLIP weights"):
        CLIPScorer.from_pretrained(tmp_path)


def _position_coloured_views(mesh, orbit, res):
    """Views whose colour is a fixed function of the surface point: perfectly view-consistent."""
    depth = depth_maps(mesh, orbit, res)
    intr = orbit.intrinsics(res)
    c2w = opengl_to_opencv(orbit.camera_to_world())
    ys, xs = np.mgrid[0:res, 0:res]
    pix = (
        np.stack([xs + 0.5, ys + 0.5, np.ones((res, res))], -1).reshape(-1, 3)
        @ np.linalg.inv(intr.matrix()).T
    )
    views = np.zeros((len(orbit), res, res, 4), np.uint8)
    for i in range(len(orbit)):
        d = depth[i].reshape(-1)
        ok = np.isfinite(d)
        pts = (pix[ok] * d[ok, None]) @ c2w[i, :3, :3].T + c2w[i, :3, 3]
        col = 0.5 + 0.45 * np.sin(9.0 * pts + np.array([0.0, 1.0, 2.0]))
        flat = views[i].reshape(-1, 4)
        flat[ok, :3] = np.round(col * 255)
        flat[ok, 3] = 255
    return views, depth


def test_depth_map_of_a_sphere_is_exact_at_the_centre():
    import trimesh

    sphere = trimesh.creation.icosphere(4, radius=0.4)
    orbit = static_orbit(4, elevation_deg=0.0)
    depth = depth_maps(sphere, orbit, 33)
    # The centre pixel sees the sphere's front at distance radius_cam - 0.4 (up to tessellation).
    assert abs(depth[0, 16, 16] - (orbit.radius[0] - 0.4)) < 2e-3
    assert not np.isfinite(depth[0, 0, 0])
    # Silhouette area matches the projected disc of the sphere.
    r_img = orbit.intrinsics(33).fl_x * math.tan(math.asin(0.4 / orbit.radius[0]))
    assert abs(np.isfinite(depth[0]).sum() - math.pi * r_img**2) / (math.pi * r_img**2) < 0.05


def test_reprojection_error_consistent_vs_inconsistent():
    import trimesh

    mesh = trimesh.creation.box((0.6, 0.4, 0.5))
    orbit = static_orbit(8, elevation_deg=15.0)
    views, depth = _position_coloured_views(mesh, orbit, 48)
    err = reprojection_error(views, orbit, depth)
    assert err.shape == (8,) and np.all(np.isfinite(err))
    assert err.mean() < 0.03
    # The same views played in the wrong order (a generator that turned the other way).
    wrong = views[[0, 7, 6, 5, 4, 3, 2, 1]]
    assert reprojection_error(wrong, orbit, depth).mean() > 3 * err.mean()
    with pytest.raises(InputError):
        reprojection_error(views[:4], orbit, depth)


def test_clip_scorer_reads_a_full_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    cfg = CLIPConfig(
        text_config=dict(small, vocab_size=100, max_position_embeddings=16),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path)
    scorer = CLIPScorer.from_pretrained(tmp_path)
    x = _images(size=40, n=2)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=scorer.preprocess(x))
    ref = getattr(ref, "pooler_output", ref)  # transformers 5 may wrap the features
    torch.testing.assert_close(scorer.embed(x), torch.nn.functional.normalize(ref, dim=-1))


def test_depth_maps_agree_with_the_fast_renderer():
    """eval's rasteriser and render/'s pyrender renderer share the camera convention."""
    pytest.importorskip("pyrender")
    import trimesh

    from render.meshes import LoadedMesh, normalize_scene, world_trimesh
    from render.renderers import get_renderer

    scene, s2w = normalize_scene(trimesh.creation.box((0.6, 0.4, 0.8)).apply_translation([0.1, 0.0, 0.0]))
    loaded = LoadedMesh(scene, s2w, "box")
    orbit = static_orbit(4, elevation_deg=20.0)
    with get_renderer("fast") as renderer:
        ref = renderer.render(loaded, orbit, 64, depth=True).depth
    mine = depth_maps(world_trimesh(loaded), orbit, 64)
    hit_ref, hit_mine = ref > 0, np.isfinite(mine)
    assert (hit_ref == hit_mine).mean() > 0.99  # silhouettes differ only in edge pixels
    both = hit_ref & hit_mine
    assert np.median(np.abs(ref[both] - mine[both])) < 0.01


# ------------------------------------------------------------------------------------------------
# Pinned to independent implementations on real photographs (scikit-image's bundled data)
# ------------------------------------------------------------------------------------------------


def _photos(size=(96, 128)):
    """Three real photographs (uint8 on disk in scikit-image), cropped to one size: (3, H, W, 3) in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    h, w = size
    imgs = [
        data.astronaut()[100 : 100 + h, 150 : 150 + w],
        data.chelsea()[:h, 100 : 100 + w],
        data.coffee()[:h, :w],
    ]
    return np.stack(imgs).astype(np.float32) / 255.0


def _t(arr):
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)


def test_ssim_matches_scikit_image_on_photographs():
    """The project's settings (11x11 Gaussian window, sigma 1.5, data range 1) against skimage's reference."""
    from skimage.metrics import structural_similarity

    a = _photos()
    rng = np.random.default_rng(0)
    noisy = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1).astype(np.float32)
    others = a[[1, 2, 0]]  # each photo against a different one: low similarity
    blurred = (a + np.roll(a, 1, 1) + np.roll(a, 1, 2) + np.roll(a, (1, 1), (1, 2))).astype(np.float32) / 4
    for b in (noisy, others, blurred):
        ref = [
            structural_similarity(
                x.astype(np.float64), y.astype(np.float64), win_size=11, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=1.0, channel_axis=-1,
            )
            for x, y in zip(a, b, strict=True)
        ]  # fmt: skip
        np.testing.assert_allclose(ssim(_t(a), _t(b)).numpy(), ref, atol=2e-6)
    # The three cases are far apart, so the comparison above is not between near-equal numbers.
    assert ssim(_t(a), _t(others)).max() < 0.3 < ssim(_t(a), _t(noisy)).min()
    with pytest.raises(InputError, match="at least 11"):
        ssim(torch.zeros(1, 3, 8, 40), torch.zeros(1, 3, 8, 40))


def test_psnr_is_per_image_and_matches_scikit_image():
    """Each image's PSNR from its own MSE (not the batch's mean MSE), pinned to skimage's."""
    from skimage.metrics import peak_signal_noise_ratio

    a = _photos()
    rng = np.random.default_rng(1)
    # Very different errors per image: a batch-mean MSE would give all three the same value.
    b = np.stack(
        [np.clip(x + rng.normal(0, s, x.shape), 0, 1) for x, s in zip(a, (0.01, 0.05, 0.2), strict=True)]
    )
    b = b.astype(np.float32)
    ref = [
        peak_signal_noise_ratio(x.astype(np.float64), y.astype(np.float64), data_range=1.0)
        for x, y in zip(a, b, strict=True)
    ]
    got = psnr(_t(b), _t(a)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert got[0] - got[2] > 20  # the errors above differ by a factor of 20 in RMS
