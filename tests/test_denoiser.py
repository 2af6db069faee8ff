"""MultiViewDenoiser (video_prior/denoiser.py): the one reader of a model's info, on tiny random models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from render.cameras import static_orbit
from video_prior import edm
from video_prior.components import ModelInfo, build_components, model_info_from_config, tiny_config
from video_prior.conditioning import encode_frames
from video_prior.denoiser import Conditioning, MultiViewDenoiser
from video_prior.matte import matte_views
from video_prior.pipeline import MultiViewPipeline


@pytest.fixture(scope="module")
def tiny() -> MultiViewDenoiser:
    config = tiny_config(num_frames=4, sample_size=16)
    torch.manual_seed(0)
    return MultiViewDenoiser(**build_components(config), info=model_info_from_config(config))


def _cond(b: int = 2, f: int = 4) -> Conditioning:
    g = torch.Generator().manual_seed(1)
    return Conditioning(
        torch.randn(b, 1, 32, generator=g),
        torch.randn(b, 4, 8, 8, generator=g),
        torch.rand(b, f, 3, generator=g),
    )


def test_dropout_of_every_sample_is_the_unconditional_branch(tiny):
    cond = _cond()
    dropped = cond.drop(torch.zeros(2))
    uncond = cond.unconditional()
    for name in Conditioning.DROPPABLE:
        assert torch.equal(getattr(dropped, name).abs(), getattr(uncond, name))
    assert torch.equal(dropped.time_ids, cond.time_ids)  # the cameras are kept
    kept = cond.drop(torch.tensor([1.0, 0.0]))
    assert torch.equal(kept.context[0], cond.context[0]) and not kept.context[1].any()
    x, sigma = torch.randn(2, 4, 4, 8, 8), torch.tensor([1.5, 0.3])
    with torch.no_grad():
        torch.testing.assert_close(tiny.denoise(x, sigma, dropped), tiny.denoise(x, sigma, uncond))


def test_guidance_is_one_batched_call_and_off_without_an_unconditional_branch(tiny):
    cond, x, sigma = _cond(1), torch.randn(1, 4, 4, 8, 8), torch.tensor([2.0])
    scales = tiny.guidance_scales("triangle", 4, 1.0, 3.0)
    assert scales is not None and tiny.guidance_scales("constant", 4, 1.0, 1.0) is None
    with torch.no_grad():
        guided = tiny.denoise(x, sigma, cond.unconditional().cat(cond), scales)
        c, u = tiny.denoise(x, sigma, cond), tiny.denoise(x, sigma, cond.unconditional())
    torch.testing.assert_close(guided, u + scales.view(1, 4, 1, 1, 1) * (c - u), rtol=1e-5, atol=1e-5)
    unguided = MultiViewDenoiser(
        tiny.unet, tiny.vae, tiny.image_encoder, dataclasses.replace(tiny.info, cfg=False)
    )
    assert unguided.guidance_scales("triangle", 4, 1.0, 3.0) is None


def test_residual_round_trip_and_loss(tiny):
    residual = MultiViewDenoiser(
        tiny.unet, tiny.vae, tiny.image_encoder, dataclasses.replace(tiny.info, residual=True)
    )
    latents, image_latent = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 4, 8, 8)
    moved = residual.to_residual(latents, image_latent)
    assert not torch.equal(moved, latents) and tiny.to_residual(latents, image_latent) is latents
    torch.testing.assert_close(residual.from_residual(moved, image_latent), latents)
    # relative to the input view's own scaled latent (the diffusion targets): the input view's residual is
    # zero, so a zero residual decodes as the input view (the "copy the input" baseline)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        own = encode_frames(tiny.vae, images[:, None])  # (2, 1, 4, 8, 8), times the VAE's scaling factor
        clean = residual.encode_clean_latent(images)
    assert tiny.vae.config.scaling_factor != 1.0
    torch.testing.assert_close(residual.to_residual(own, clean), torch.zeros_like(own))
    torch.testing.assert_close(residual.from_residual(torch.zeros_like(own), clean), own)
    # the loss is edm_loss of the network with this model's prediction
    cond, sigma, noise = _cond(), torch.tensor([0.5, 2.0]), torch.randn(2, 4, 4, 8, 8)
    with torch.no_grad():
        got = tiny.loss(latents, sigma, noise, cond)
        want = edm.edm_loss(tiny.network_fn(cond), latents, sigma, noise, prediction=tiny.info.prediction)
    torch.testing.assert_close(got, want)


def test_cameras_in_either_frame_order():
    orbit = static_orbit(4, 10.0)
    polar, azimuth, order = MultiViewDenoiser(None, None, None, ModelInfo(frame_order="mv3d")).cameras(orbit)
    np.testing.assert_allclose(np.rad2deg(azimuth), [0, 90, 180, 270], atol=1e-9)
    assert order.tolist() == [0, 1, 2, 3] and np.allclose(np.rad2deg(polar), 80.0)
    sv3d = MultiViewDenoiser(None, None, None, ModelInfo(frame_order="sv3d"))
    _, _, order = sv3d.cameras(orbit)
    assert order.tolist() == [1, 2, 3, 0]  # the input view last
    frames = torch.arange(4.0)[order]
    assert sv3d.from_model_order(frames, order).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_pipeline_returns_rgba_views_with_the_input_kept_once():
    pipe = MultiViewPipeline.from_config(tiny_config(num_frames=3, sample_size=16), seed=0)
    image = np.zeros((16, 16, 4), np.uint8)
    image[4:12, 5:11] = (200, 50, 20, 255)
    image[4:12, 5, 3] = 100
    orbit = static_orbit(3)
    kw = {"num_inference_steps": 1, "output_type": "np"}
    out = pipe(image, orbit, generator=torch.Generator().manual_seed(0), keep_input_view=True, **kw)
    assert out.rgba.shape == (3, 16, 16, 4) and out.rgba.dtype == np.uint8
    assert np.array_equal(out.rgba[0], image)  # the input itself, not its trip through compositing
    assert np.array_equal(out.rgba[1:], matte_views(out.frames, (1.0, 1.0, 1.0))[1:])
    generated = pipe(image, orbit, generator=torch.Generator().manual_seed(0), **kw)  # the model's default
    assert not np.array_equal(generated.rgba[0], image)
    assert np.array_equal(generated.rgba[1:], out.rgba[1:])
