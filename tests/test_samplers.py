"""Samplers and guidance schedules against closed forms (video_prior/samplers.py, guidance.py).

The data distribution is N(mu, s_d^2) per element, whose exact denoiser is
D(x; s) = (s_d^2 x + s^2 mu) / (s_d^2 + s^2) and whose probability-flow ODE has the exact solution
x(s) = mu + (x(s_max) - mu) sqrt((s_d^2 + s^2) / (s_d^2 + s_max^2)).
"""

from __future__ import annotations

import math

import pytest
import torch

from render.common import InputError
from video_prior.edm import karras_sigmas
from video_prior.guidance import apply_cfg, guidance_scales
from video_prior.samplers import SAMPLERS, get_sampler

MU, SD = 0.5, 0.3


def gaussian_denoiser(x, sigma, cond):
    s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return (SD**2 * x + s**2 * MU) / (SD**2 + s**2)


def exact_solution(x_start, sigma_start):
    return MU + (x_start - MU) * math.sqrt(SD**2 / (SD**2 + sigma_start**2))


@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2000, 1, 1, 5, 5, generator=g, dtype=torch.float64)


# (sampler, tolerance on the standard deviation, relative) at SV3D's 50 steps from sigma_max 700.
@pytest.mark.parametrize("name,std_rel", [("euler", 0.12), ("heun", 0.03), ("dpmpp2m", 0.03)])
def test_samplers_recover_gaussian_mean_and_variance(noise, name, std_rel):
    sigmas = karras_sigmas(50, sigma_max=700.0)
    x0 = SAMPLERS[name](gaussian_denoiser, noise * sigmas[0], sigmas)
    assert x0.shape == noise.shape
    assert x0.mean().item() == pytest.approx(MU, abs=0.01)
    assert x0.std().item() == pytest.approx(SD, rel=std_rel)


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpmpp2m", 2)])
def test_samplers_converge_at_their_order(noise, name, order):
    """Doubling the steps divides the error against the exact ODE solution by about 2^order."""
    errors = []
    for n in (20, 40, 80):
        sigmas = karras_sigmas(n, sigma_max=80.0)
        x0 = SAMPLERS[name](gaussian_denoiser, noise * sigmas[0], sigmas)
        errors.append((x0 - exact_solution(noise * sigmas[0], 80.0)).abs().max().item())
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        ratio = coarse / fine
        assert 0.7 * 2**order < ratio < 1.6 * 2**order, (errors, ratio)
    if order == 2:
        assert errors[-1] < 5e-3


def test_denoiser_calls_and_callback(noise):
    sigmas = karras_sigmas(7, sigma_max=80.0)
    x = noise[:4] * sigmas[0]
    for name, expected_calls in (("euler", 7), ("heun", 13), ("dpmpp2m", 7)):
        calls, infos = [], []

        def counted(x, sigma, cond, calls=calls):
            assert sigma.shape == (x.shape[0],)
            assert cond == "c"
            calls.append(float(sigma[0]))
            return gaussian_denoiser(x, sigma, cond)

        SAMPLERS[name](counted, x, sigmas, cond="c", callback=infos.append)
        assert len(calls) == expected_calls
        assert [info["i"] for info in infos] == list(range(7))
        assert calls[0] == pytest.approx(80.0)
        assert set(infos[0]) >= {"i", "sigma", "sigma_next", "x", "denoised"}


@pytest.mark.parametrize("name, churn, sd_rel", [("heun", 10.0, 0.05), ("euler", 5.0, 0.12)])
def test_stochastic_churn_is_seeded_and_still_recovers_the_distribution(noise, name, churn, sd_rel):
    """[EDM] Algorithm 2: each step starts at the raised level sigma_hat, so the exact denoiser's samples
    keep the data's mean and standard deviation (to the steps' own error: Euler's first-order one is
    the larger), and the churn's noise comes from the generator alone."""
    sigmas = karras_sigmas(40, sigma_max=80.0)
    kw = {"s_churn": churn, "s_tmin": 0.05, "s_tmax": 50.0}

    def sample(seed: int) -> torch.Tensor:
        return SAMPLERS[name](
            gaussian_denoiser, noise * 80.0, sigmas, generator=torch.Generator().manual_seed(seed), **kw
        )

    a = sample(5)
    assert torch.equal(a, sample(5))
    assert not torch.equal(a, sample(6))
    assert a.mean().item() == pytest.approx(MU, abs=0.01)
    assert a.std().item() == pytest.approx(SD, rel=sd_rel)


def test_get_sampler_names():
    assert get_sampler("euler") is SAMPLERS["euler"]
    with pytest.raises(InputError, match="dpmpp2m"):
        get_sampler("ddim")


def test_triangle_schedule_matches_sv3d():
    w = guidance_scales("triangle", 21, 1.0, 2.5)
    expected = [1.0 + 0.15 * min(i, 20 - i) for i in range(21)]
    assert w.tolist() == pytest.approx(expected, abs=1e-6)
    assert w[10].item() == pytest.approx(2.5)
    even = guidance_scales("triangle", 4, 1.0, 2.5)
    assert even.tolist() == pytest.approx([1.0, 2.0, 2.0, 1.0])


def test_linear_and_constant_schedules():
    assert guidance_scales("linear", 5, 1.0, 3.0).tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert guidance_scales("constant", 3, 1.0, 2.0).tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert guidance_scales("triangle", 1).tolist() == pytest.approx([1.0])
    with pytest.raises(InputError, match="triangle"):
        guidance_scales("cosine", 5)


def test_apply_cfg_per_frame():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 4, 2, 2, generator=g)
    c = torch.randn(2, 3, 4, 2, 2, generator=g)
    scales = torch.tensor([1.0, 0.0, 2.0])
    out = apply_cfg(u, c, scales)
    torch.testing.assert_close(out[:, 0], c[:, 0])  # scale 1: the conditional output
    torch.testing.assert_close(out[:, 1], u[:, 1])  # scale 0: the unconditional output
    torch.testing.assert_close(out[:, 2], 2 * c[:, 2] - u[:, 2])
    per_sample = apply_cfg(u, c, torch.stack([scales, torch.ones(3)]))
    torch.testing.assert_close(per_sample[0], out[0])
    torch.testing.assert_close(per_sample[1], c[1])
    with pytest.raises(ValueError):
        apply_cfg(u, c, torch.ones(4))
