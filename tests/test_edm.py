"""EDM preconditioning, schedules and loss against their closed forms (video_prior/edm.py)."""

from __future__ import annotations

import math

import pytest
import torch

from video_prior import edm


def test_vpred_scalings_identities():
    sigma = torch.tensor([0.002, 0.1, 1.0, 7.0, 700.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.vpred_scalings(sigma)
    torch.testing.assert_close(c_skip, 1.0 / (sigma**2 + 1.0))
    torch.testing.assert_close(c_out, -sigma / torch.sqrt(sigma**2 + 1.0))
    torch.testing.assert_close(c_in, 1.0 / torch.sqrt(sigma**2 + 1.0))
    torch.testing.assert_close(c_noise, 0.25 * torch.log(sigma))
    # v-prediction's scalings lie on the unit circle (c_skip / c_in)^2 + c_out^2 = 1, and c_in^2 = c_skip.
    torch.testing.assert_close((c_skip / c_in) ** 2 + c_out**2, torch.ones_like(sigma))
    torch.testing.assert_close(c_in**2, c_skip)
    # The loss weight is 1 / c_out^2 (EDM eq. 8: unit-weighted network-output loss).
    torch.testing.assert_close(edm.loss_weighting(sigma), 1.0 / c_out**2)


def _through_a_perfect_network(prediction: str, sigma: torch.Tensor, seed: int):
    """Noisy samples x of clean data at `sigma`, denoised by a network that outputs the exact target of
    `prediction`: (clean, noise, the network, D(x), what the network was given {"x_in", "c_noise"})."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(3, 4, 4, 5, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(clean.shape, generator=g, dtype=torch.float64)
    x = clean + noise * sigma.reshape(-1, 1, 1, 1, 1)
    target = edm.v_target(clean, noise, sigma) if prediction == "v" else clean
    seen = {}

    def perfect(x_in, c_noise):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return target

    denoised = edm.denoise(perfect, x, sigma, prediction=prediction)
    # Either way the network sees unit-variance inputs scaled by c_in and the log-sigma noise input.
    torch.testing.assert_close(seen["x_in"], x / torch.sqrt(1 + sigma**2).reshape(-1, 1, 1, 1, 1))
    torch.testing.assert_close(seen["c_noise"], 0.25 * sigma.log())
    return clean, noise, perfect, denoised


def test_denoise_is_exact_for_a_perfect_v_network():
    sigma = torch.tensor([0.01, 1.3, 300.0], dtype=torch.float64)
    clean, noise, perfect, denoised = _through_a_perfect_network("v", sigma, seed=0)
    torch.testing.assert_close(denoised, clean)
    # So the perfect network has zero loss and a wrong one has loss = its MSE against the v target.
    assert edm.edm_loss(perfect, clean, sigma, noise).item() < 1e-20
    zero = edm.edm_loss(lambda x_in, c: torch.zeros_like(x_in), clean, sigma, noise, reduce=False)
    torch.testing.assert_close(zero, edm.v_target(clean, noise, sigma).pow(2).flatten(1).mean(1))


def test_karras_sigmas_endpoints_and_monotonicity():
    s = edm.karras_sigmas(50)
    assert s.shape == (51,)
    assert s[0].item() == pytest.approx(700.0)
    assert s[-2].item() == pytest.approx(0.002)
    assert s[-1].item() == 0.0
    assert torch.all(s[1:] < s[:-1])
    # EDM eq. 5: sigma^(1/rho) is linear in i.
    r = s[:-1] ** (1 / 7.0)
    torch.testing.assert_close(
        r[1:] - r[:-1], torch.full((49,), (r[-1] - r[0]).item() / 49, dtype=torch.float64)
    )
    one = edm.karras_sigmas(1, sigma_max=80.0)
    assert one.tolist() == pytest.approx([80.0, 0.0])
    with pytest.raises(ValueError):
        edm.karras_sigmas(0)


@pytest.mark.parametrize("p_mean,p_std", [(0.7, 1.6), (1.0, 1.6), (-1.2, 1.2)])
def test_training_sigma_distribution(p_mean, p_std):
    g = torch.Generator().manual_seed(1)
    s = edm.sample_training_sigmas((200_000,), p_mean, p_std, generator=g)
    assert torch.all(s > 0)
    ls = s.log()
    assert ls.mean().item() == pytest.approx(p_mean, abs=0.02)
    assert ls.std().item() == pytest.approx(p_std, rel=0.01)
    assert s.median().item() == pytest.approx(math.exp(p_mean), rel=0.03)
    # Seeded: the same generator state gives the same draws.
    a = edm.sample_training_sigmas(5, generator=torch.Generator().manual_seed(3))
    b = edm.sample_training_sigmas(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_cond_aug_distribution():
    g = torch.Generator().manual_seed(2)
    s = edm.sample_cond_aug((200_000,), generator=g)
    m, v = edm.log_normal_moments(-3.0, 0.5)
    assert s.mean().item() == pytest.approx(m, rel=0.01)
    assert s.var().item() == pytest.approx(v, rel=0.03)
    assert s.log().mean().item() == pytest.approx(-3.0, abs=0.01)


def test_edm_loss_weighting_matches_definition():
    g = torch.Generator().manual_seed(4)
    clean = torch.randn(2, 3, 4, 4, 4, generator=g)
    noise = torch.randn(clean.shape, generator=g)
    sigma = torch.tensor([0.5, 4.0])

    def net(x_in, c_noise):
        return 0.3 * x_in

    x = clean + noise * sigma.reshape(-1, 1, 1, 1, 1)
    d = edm.denoise(net, x, sigma)
    expected = ((1 + sigma**2) / sigma**2 * (d - clean).pow(2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(edm.edm_loss(net, clean, sigma, noise), expected)


def test_x0_prediction_is_the_network_output_on_unit_variance_inputs():
    """[EDM] Table 1 with c_skip = 0, c_out = 1 (the shipped model's parameterisation): D is the network's
    output itself, and the network sees x / sqrt(sigma^2 + 1) (unit variance for unit-variance data)."""
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    clean, _, _, denoised = _through_a_perfect_network("x0", sigma, seed=5)
    torch.testing.assert_close(denoised, clean)
    # unit variance at every noise level: Var(y + sigma n) = 1 + sigma^2 for unit-variance y and n
    g = torch.Generator().manual_seed(5)
    seen = {}
    big = torch.randn(3, 200_000, generator=g, dtype=torch.float64)
    noisy = big + sigma[:, None] * torch.randn(big.shape, generator=g, dtype=torch.float64)
    edm.denoise(lambda x_in, c: seen.update(x_in=x_in) or x_in, noisy, sigma, prediction="x0")
    torch.testing.assert_close(seen["x_in"].var(dim=1), torch.ones(3, dtype=torch.float64), rtol=0.02, atol=0)


def test_x0_loss_is_the_plain_mse_of_the_denoised_estimate():
    """With x0 prediction lambda(sigma) = 1 / c_out^2 = 1: the loss is || D - y ||^2 unweighted, whatever sigma."""
    g = torch.Generator().manual_seed(6)
    clean = torch.randn(3, 2, 4, 4, 4, generator=g)
    noise = torch.randn(clean.shape, generator=g)
    sigma = torch.tensor([0.1, 1.0, 20.0])
    guess = torch.randn(clean.shape, generator=g)
    per = edm.edm_loss(lambda x_in, c: guess, clean, sigma, noise, reduce=False, prediction="x0")
    torch.testing.assert_close(per, (guess - clean).pow(2).flatten(1).mean(1))
