"""MultiViewPipeline on a tiny random model: determinism, inputs, batched CFG, frame order, save/load, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import video_prior.pipeline as pipeline_module
from render.cameras import static_orbit
from render.common import InputError
from video_prior.components import tiny_config
from video_prior.pipeline import MultiViewPipeline, calibrate_alpha

N = 4


@pytest.fixture(scope="module")
def pipe() -> MultiViewPipeline:
    return MultiViewPipeline.from_config(tiny_config(num_frames=N, sample_size=16), seed=0)


@pytest.fixture(scope="module")
def rgba() -> np.ndarray:
    img = np.zeros((32, 32, 4), np.uint8)
    img[6:26, 10:22] = (220, 40, 30, 255)
    img[12:20, 4:28, 1] = 180
    img[12:20, 4:28, 3] = 128
    return img


def _seed(s: int) -> torch.Generator:
    return torch.Generator().manual_seed(s)


class _Spy:
    """Wraps the UNet's forward and records the batch size, input, context and added_time_ids of every call."""

    def __init__(self, unet):
        self.unet, self.calls = unet, []
        self._forward = unet.forward

    def __enter__(self):
        def forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
            self.calls.append(
                {
                    "batch": sample.shape[0],
                    "ids": added_time_ids.clone(),
                    "ctx": encoder_hidden_states,
                    "sample": sample.clone(),
                }
            )
            return self._forward(sample, timestep, encoder_hidden_states, added_time_ids, return_dict)

        self.unet.forward = forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward


def test_same_seed_same_output_and_shapes(pipe, rgba):
    orbit = static_orbit(N)
    a = pipe(rgba, orbit, num_inference_steps=2, generator=_seed(0))
    b = pipe(rgba, orbit, num_inference_steps=2, generator=_seed(0))
    c = pipe(rgba, orbit, num_inference_steps=2, generator=_seed(1))
    assert a.frames.shape == (N, 16, 16, 3) and a.frames.dtype == np.float32
    assert 0.0 <= a.frames.min() and a.frames.max() <= 1.0
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    np.testing.assert_allclose(a.camera_to_world, orbit.camera_to_world())
    assert a.orbit is orbit


def test_image_input_kinds_agree(pipe, rgba):
    orbit = static_orbit(N)
    kwargs = {"num_inference_steps": 1, "generator": None, "output_type": "pt"}
    ref = pipe(rgba, orbit, **{**kwargs, "generator": _seed(3)}).frames
    from_pil = pipe(Image.fromarray(rgba, "RGBA"), orbit, **{**kwargs, "generator": _seed(3)}).frames
    torch.testing.assert_close(from_pil, ref, rtol=0, atol=0)
    # a transparent RGBA image is composited on white: the same as an all-white tensor in [-1, 1]
    clear = np.zeros((16, 16, 4), np.uint8)
    white = torch.ones(3, 16, 16)
    a = pipe(clear, orbit, **{**kwargs, "generator": _seed(4)}).frames
    b = pipe(white, orbit, **{**kwargs, "generator": _seed(4)}).frames
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (N, 3, 16, 16)


def test_one_batched_cfg_forward_per_denoiser_call(pipe, rgba):
    with _Spy(pipe.unet) as spy:
        pipe(rgba, static_orbit(N), num_inference_steps=3, generator=_seed(0))
    assert [c["batch"] for c in spy.calls] == [2, 2, 2]  # Euler: one call per step, [uncond; cond]
    ctx = spy.calls[0]["ctx"]
    assert torch.all(ctx[0] == 0) and torch.any(ctx[1] != 0)  # uncond zeroes the CLIP embedding
    ids = spy.calls[0]["ids"]
    assert torch.equal(ids[0], ids[1])  # ... and keeps the camera conditioning
    torch.testing.assert_close(ids[..., 0], torch.full((2, N), pipe.info.default_cond_aug))  # model default
    with _Spy(pipe.unet) as spy:
        pipe(
            rgba,
            static_orbit(N),
            num_inference_steps=2,
            guidance="constant",
            max_guidance=1.0,
            generator=_seed(0),
        )
    assert [c["batch"] for c in spy.calls] == [1, 1]  # guidance 1 everywhere: no unconditional branch


def test_the_unet_sees_the_noisy_latents_then_the_input_latent_zeroed_in_the_unconditional_branch(pipe, rgba):
    """SVD's input layout: the scaled noisy latents, then the input view's (unscaled) latent along channels;
    the unconditional branch of CFG zeroes the image latent as well as the CLIP embedding (SV3D)."""
    orbit = static_orbit(N)
    noise = torch.randn(1, N, 4, 8, 8, generator=_seed(2))
    with _Spy(pipe.unet) as spy:
        pipe(rgba, orbit, num_inference_steps=1, cond_aug=0.0, latents=noise, generator=_seed(0))
    sample = spy.calls[0]["sample"]  # (2, N, 8, 8, 8): [uncond; cond]
    # the first step's noisy latents are noise * sqrt(1 + sigma_max^2); c_in = 1 / sqrt(1 + sigma_max^2)
    torch.testing.assert_close(sample[:, :, :4], noise.expand(2, -1, -1, -1, -1))
    with torch.no_grad():
        latent = pipe.vae.encode(pipe.preprocess_image(rgba, 16)).latent_dist.mode()  # (1, 4, 8, 8)
    torch.testing.assert_close(sample[1, :, 4:], latent.expand(N, -1, -1, -1))
    assert not sample[0, :, 4:].any()


def test_mirror_averaging_conditions_its_mirrored_draws_on_the_left_right_mirror_image(pipe, rgba):
    asymmetric = rgba.copy()
    asymmetric[2:8, 24:30] = (20, 200, 40, 255)  # a patch top right: the two flips put it apart
    with _Spy(pipe.unet) as spy:
        pipe(
            asymmetric,
            static_orbit(N),
            num_inference_steps=1,
            cond_aug=0.0,
            ensemble=2,
            mirror_average=True,
            generator=_seed(0),
        )
    assert len(spy.calls) == 2  # one draw per branch, the input's first
    mirrored = pipe.preprocess_image(asymmetric, 16).flip(-1)
    with torch.no_grad():
        clip = pipe.denoiser.encode_image(mirrored)["context"]
        latent = pipe.vae.encode(mirrored).latent_dist.mode()
    torch.testing.assert_close(spy.calls[1]["sample"][1, :, 4:], latent.expand(N, -1, -1, -1))
    torch.testing.assert_close(spy.calls[1]["ctx"][1], clip[0])


def test_camera_ids_follow_the_orbit_in_mv3d_order(pipe, rgba):
    orbit = static_orbit(N, elevation_deg=20.0, start_azimuth_deg=30.0)
    with _Spy(pipe.unet) as spy:
        pipe(rgba, orbit, num_inference_steps=1, cond_aug=0.05, generator=_seed(0))
    ids = spy.calls[0]["ids"][1]  # (N, 3) of the conditional branch
    torch.testing.assert_close(ids[:, 0], torch.full((N,), 0.05))
    torch.testing.assert_close(ids[:, 1], torch.full((N,), np.deg2rad(70.0), dtype=torch.float32))
    # azimuth relative to the input view
    torch.testing.assert_close(
        ids[:, 2], torch.tensor(np.deg2rad(np.arange(N) * 360.0 / N), dtype=torch.float32)
    )


def test_sv3d_frame_order_and_input_overwrite(pipe, rgba, monkeypatch):
    info = dataclasses.replace(pipe.info, frame_order="sv3d", overwrite_input_frame=True)
    sv3d = MultiViewPipeline(pipe.unet, pipe.vae, pipe.image_encoder, info)
    orbit = static_orbit(N, elevation_deg=0.0)
    orbit = dataclasses.replace(orbit, elevation_deg=np.array([0.0, 10.0, 20.0, 30.0]))

    # the decoder returns frame j of the MODEL's order as a flat image of value j / 10
    def fake_decode(vae, latents, chunk_size=8):
        b, f = latents.shape[:2]
        return torch.arange(f, dtype=torch.float32).view(1, f, 1, 1, 1).expand(b, f, 3, 16, 16) / 10.0

    monkeypatch.setattr(pipeline_module, "decode_latents", fake_decode)
    with _Spy(sv3d.unet) as spy:
        out = sv3d(rgba, orbit, num_inference_steps=1, generator=_seed(0), output_type="pt")
    ids = spy.calls[0]["ids"][1]
    # SV3D puts the input view last: model frame j is orbit frame (j + 1) mod N
    order = (np.arange(N) + 1) % N
    torch.testing.assert_close(
        ids[:, 1], torch.tensor(np.deg2rad(90.0 - orbit.elevation_deg[order]), dtype=torch.float32)
    )
    assert float(ids[-1, 2]) == 0.0
    # back in the orbit's order: output frame i is model frame (i - 1) mod N; frame 0 is the input itself
    for i in range(1, N):
        expected = (((i - 1) % N) / 10.0 + 1.0) / 2.0
        torch.testing.assert_close(out.frames[i], torch.full((3, 16, 16), expected))
    expected0 = (sv3d.preprocess_image(rgba, 16)[0] + 1.0) / 2.0
    torch.testing.assert_close(out.frames[0], expected0.clamp(0, 1))


def test_save_load_and_offload_give_the_same_output(pipe, rgba, tmp_path):
    orbit = static_orbit(N)
    ref = pipe(rgba, orbit, num_inference_steps=2, generator=_seed(7)).frames
    pipe.save_pretrained(tmp_path / "model")
    loaded = MultiViewPipeline.from_pretrained(tmp_path / "model")
    assert np.array_equal(loaded(rgba, orbit, num_inference_steps=2, generator=_seed(7)).frames, ref)
    loaded.enable_model_cpu_offload("cpu")
    steps = []
    out = loaded(
        rgba, orbit, num_inference_steps=2, generator=_seed(7), callback=lambda i, n: steps.append((i, n))
    )
    assert np.array_equal(out.frames, ref)
    assert steps == [(1, 2), (2, 2)]
    assert loaded.device == torch.device("cpu")


def test_other_samplers_outputs_and_svd_model(rgba):
    svd = MultiViewPipeline.from_config(tiny_config(num_frames=3, conditioning="svd"), seed=1)
    out = svd(
        rgba,
        static_orbit(3),
        num_inference_steps=2,
        sampler="dpmpp2m",
        guidance="linear",
        output_type="uint8",
    )
    assert out.frames.shape == (3, 16, 16, 3) and out.frames.dtype == np.uint8


def test_clear_errors(pipe, rgba):
    orbit = static_orbit(N)
    with pytest.raises(InputError, match="square"):
        pipe(rgba[:, :20], orbit)
    with pytest.raises(InputError, match="sampler 'ddim'"):
        pipe(rgba, orbit, sampler="ddim")
    with pytest.raises(InputError, match="guidance schedule"):
        pipe(rgba, orbit, guidance="zigzag")
    with pytest.raises(InputError, match="output type"):
        pipe(rgba, orbit, output_type="gif")
    with pytest.raises(InputError, match="Orbit"):
        pipe(rgba, [0, 90, 180])
    fixed = MultiViewPipeline(
        pipe.unet, pipe.vae, pipe.image_encoder, dataclasses.replace(pipe.info, num_frames=N)
    )
    with pytest.raises(InputError, match=f"exactly {N}"):
        fixed(rgba, static_orbit(N + 1))
    with pytest.raises(InputError, match="multiple of"):
        pipe(rgba, orbit, height=18, width=18)


def test_mirror_orbit_reflects_the_cameras_in_the_input_cameras_vertical_plane():
    from video_prior.pipeline import mirror_orbit

    orbit = static_orbit(N, elevation_deg=20.0, start_azimuth_deg=30.0)
    mirrored = mirror_orbit(orbit)
    np.testing.assert_allclose(mirrored.azimuth_deg, (60.0 - orbit.azimuth_deg) % 360.0)
    np.testing.assert_allclose(mirror_orbit(mirrored).azimuth_deg, orbit.azimuth_deg)
    centres, centres_m = orbit.camera_to_world()[:, :3, 3], mirrored.camera_to_world()[:, :3, 3]
    d = centres[0, :2] / np.linalg.norm(centres[0, :2])
    normal = np.array([-d[1], d[0], 0.0])  # horizontal, perpendicular to the input camera's direction
    reflect = np.eye(3) - 2.0 * np.outer(normal, normal)
    np.testing.assert_allclose(centres_m, centres @ reflect.T, atol=1e-9)
    assert not np.allclose(centres_m[1:], centres[1:])


def test_mirror_average_draws_half_the_ensemble_mirrored_and_flips_it_back(pipe, rgba, monkeypatch):
    # the decoder returns one left-right asymmetric image (a ramp along x) for every frame and draw
    ramp = torch.linspace(-0.5, 0.5, 16).view(1, 1, 1, 1, 16)

    def fake_decode(vae, latents, chunk_size=8):
        b, f = latents.shape[:2]
        return ramp.expand(b, f, 4, 16, 16).clone()

    monkeypatch.setattr(pipeline_module, "decode_latents", fake_decode)
    orbit = static_orbit(N, elevation_deg=10.0)
    kw = {"num_inference_steps": 1, "generator": _seed(0), "output_type": "pt"}
    with _Spy(pipe.unet) as spy:
        plain = pipe(rgba, orbit, ensemble=3, **kw).frames
        progress = []
        mixed = pipe(
            rgba, orbit, ensemble=3, mirror_average=True, callback=lambda i, n: progress.append((i, n)), **kw
        ).frames
    assert progress == [(1, 3), (2, 3), (3, 3)]  # one count over both branches
    ramp01 = (ramp[0, 0] + 1.0) / 2.0
    torch.testing.assert_close(plain, ramp01.expand_as(plain))
    torch.testing.assert_close(mixed, ((2.0 * ramp01 + ramp01.flip(-1)) / 3.0).expand_as(mixed))
    # the mirrored draw (the last UNet call) sees the orbit's azimuths mirrored: -phi mod 2 pi
    az = np.deg2rad(np.arange(N) * 360.0 / N)
    torch.testing.assert_close(
        spy.calls[-1]["ids"][-1][:, 2], torch.tensor((-az) % (2 * np.pi), dtype=torch.float32)
    )
    assert len(spy.calls) == 6  # three draws each, one step
    # one draw (the real decoder again): nothing to mirror, exactly the plain output
    monkeypatch.undo()
    one = pipe(rgba, orbit, num_inference_steps=1, ensemble=1, mirror_average=True, generator=_seed(1)).frames
    assert np.array_equal(
        one, pipe(rgba, orbit, num_inference_steps=1, ensemble=1, generator=_seed(1)).frames
    )


def test_calibrate_alpha_moves_the_threshold_to_one_half():
    alpha = torch.linspace(0.0, 1.0, 1001)
    for t in (0.2, 0.4, 0.5, 0.7):
        out = calibrate_alpha(alpha, t)
        assert float(out[0]) == 0.0 and float(out[-1]) == 1.0
        assert bool(torch.all(out[1:] >= out[:-1]))  # monotone
        torch.testing.assert_close(calibrate_alpha(torch.tensor([t]), t), torch.tensor([0.5]))
        # the silhouette cut at 0.5 after the map is the raw matte cut at t
        assert torch.equal(out > 0.5, alpha > t)
    torch.testing.assert_close(calibrate_alpha(alpha, 0.5), alpha)


def test_calibrate_alpha_floor_cuts_only_the_faint_matte():
    alpha = torch.linspace(0.0, 1.0, 1001)
    for t, floor in ((0.35, 0.3), (0.5, 0.1), (0.2, 0.45)):
        mapped, cut = calibrate_alpha(alpha, t), calibrate_alpha(alpha, t, floor)
        assert torch.equal(cut[mapped < floor], torch.zeros_like(cut[mapped < floor]))
        assert torch.equal(cut[mapped >= floor], mapped[mapped >= floor])
        assert torch.equal(cut > 0.5, mapped > 0.5)  # silhouettes never move
    torch.testing.assert_close(calibrate_alpha(alpha, 0.35, 0.0), calibrate_alpha(alpha, 0.35))


def test_given_latents_are_the_generators_draws_after_the_conditioning_noise(pipe, rgba, monkeypatch):
    """`latents=` in the orbit's order, unit variance; the pipeline scales them by sqrt(1 + sigma_max^2)
    (the reference's sampler) and reorders them to the model's frame order; the generator's first draw
    is the conditioning image's noise (diffusers' SVD pipeline)."""
    info = dataclasses.replace(pipe.info, frame_order="sv3d", default_cond_aug=0.05)
    sv3d = MultiViewPipeline(pipe.unet, pipe.vae, pipe.image_encoder, info)
    orbit = static_orbit(N, elevation_deg=10.0)
    kw = {"num_inference_steps": 2, "output_type": "pt"}
    drawn = sv3d(rgba, orbit, generator=_seed(4), **kw).frames
    # the same draws by hand: conditioning noise (1, 3, 16, 16) first, then the initial noise in the
    # model's order, where model frame j is orbit frame (j + 1) mod N
    g = _seed(4)
    torch.randn((1, 3, 16, 16), generator=g)
    model_order = torch.randn((1, 1, N, 4, 8, 8), generator=g)[:, 0]
    orbit_order = model_order[:, (np.arange(N) - 1) % N]
    given = sv3d(rgba, orbit, generator=_seed(4), latents=orbit_order, **kw).frames
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)
    # without the same conditioning noise it differs
    other = sv3d(rgba, orbit, generator=_seed(5), latents=orbit_order, **kw).frames
    assert not torch.equal(other, drawn)

    # what the sampler starts from: the latents in the model's order times sqrt(1 + sigma_max^2)
    seen = []

    def spy_sampler(denoiser, x, sigmas, cond, callback=None):
        seen.append((x.clone(), sigmas.clone()))
        return x

    monkeypatch.setattr(pipeline_module, "get_sampler", lambda name: spy_sampler)
    sv3d(rgba, orbit, generator=_seed(4), latents=orbit_order, **kw)
    x, sigmas = seen[0]
    assert float(sigmas[0]) == pytest.approx(info.sigma_max)
    scale = float(np.sqrt(1.0 + float(info.sigma_max) ** 2))
    torch.testing.assert_close(x, model_order * scale)


def test_latents_of_the_wrong_shape_are_one_clear_error(pipe, rgba):
    orbit = static_orbit(N)
    with pytest.raises(InputError, match=r"latents of shape \(1, 4, 4, 3, 3\): expected \(2, 4, 4, 8, 8\)"):
        pipe(rgba, orbit, num_inference_steps=1, ensemble=2, latents=torch.zeros(1, N, 4, 3, 3))
