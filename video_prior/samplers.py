"""Samplers of the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma ([EDM] eq. 4 with sigma(t) = t).

All share one signature (k-diffusion's):

    sample_X(denoiser, x, sigmas, cond=None, callback=None, **options) -> x0

* `denoiser(x, sigma, cond)`: x (B, F, C, h, w), sigma (B,) -> the denoised estimate, like x. The caller
  wraps the network, the preconditioning (`video_prior.edm.denoise`) and classifier-free guidance in it.
* `x`: the starting sample at noise level sigmas[0]: unit normal noise times sqrt(1 + sigmas[0]^2) in
  the pipeline, as SV3D's reference scales it (the marginal std of unit-variance data at that level;
  `noise * sigmas[0]` is the same to 1e-6 relative at sigma_max 700).
* `sigmas`: (N + 1,) decreasing noise levels ending in 0 (`video_prior.edm.karras_sigmas`).
* `callback(info)`: called after each step with {"i", "sigma", "sigma_next", "x", "denoised"}.

References:
    [EDM] Karras et al. 2022, arXiv 2206.00364: Algorithm 1 (deterministic Heun), Algorithm 2 (stochastic
          churn), eq. 4 (ODE).
    [DPM++] Lu et al. 2022, "DPM-Solver++", arXiv 2211.01095: Algorithm 2 (multistep second order, 2M).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from render.common import InputError

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
Callback = Callable[[dict], None]


def _sigma_batch(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar sigma as a (B,) tensor in x's dtype and device."""
    return sigma.to(device=x.device, dtype=x.dtype).expand(x.shape[0])


def _ode_derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dsigma = (x - D(x; sigma)) / sigma ([EDM] eq. 4 with sigma(t) = t, s(t) = 1)."""
    return (x - denoised) / sigma.to(x.dtype)


def _churn(
    x: torch.Tensor,
    sigma: torch.Tensor,
    n_steps: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[EDM] Algorithm 2 lines 4-6: raise the noise level to sigma_hat = (1 + gamma) sigma by adding noise."""
    gamma = min(s_churn / n_steps, math.sqrt(2.0) - 1.0) if s_tmin <= float(sigma) <= s_tmax else 0.0
    if gamma <= 0.0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) * s_noise
    x = x + eps * (sigma_hat**2 - sigma**2).sqrt().to(x.dtype)
    return x, sigma_hat


def _check(sigmas: torch.Tensor) -> None:
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas of shape {tuple(sigmas.shape)}: expected (N + 1,) with N >= 1")


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond: Any = None,
    callback: Callback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """First-order Euler steps x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i ([EDM] Alg. 2 without line 7-8).

    SV3D's default sampler (50 steps, no churn). With s_churn > 0 each step first adds noise as in
    [EDM] Alg. 2 (stochastic); `generator` seeds that noise.
    """
    _check(sigmas)
    n = sigmas.numel() - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x, sigma_hat = _churn(x, sigma, n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = denoiser(x, _sigma_batch(sigma_hat, x), cond)
        d = _ode_derivative(x, denoised, sigma_hat)
        x = x + d * (sigma_next - sigma_hat).to(x.dtype)
        if callback is not None:
            callback({"i": i, "sigma": sigma_hat, "sigma_next": sigma_next, "x": x, "denoised": denoised})
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond: Any = None,
    callback: Callback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Heun's second-order method ([EDM] Algorithm 1; Algorithm 2 when s_churn > 0).

    Each step takes an Euler step to sigma_{i+1}, evaluates the slope there and averages the two
    slopes (trapezoidal rule, lines 5-8 of Alg. 1). The last step to sigma = 0 stays Euler (the slope
    at 0 is undefined), so N steps cost 2N - 1 denoiser calls.
    """
    _check(sigmas)
    n = sigmas.numel() - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x, sigma_hat = _churn(x, sigma, n, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = denoiser(x, _sigma_batch(sigma_hat, x), cond)
        d = _ode_derivative(x, denoised, sigma_hat)
        dt = (sigma_next - sigma_hat).to(x.dtype)
        x_euler = x + d * dt
        if float(sigma_next) == 0.0:
            x = x_euler
        else:
            denoised_next = denoiser(x_euler, _sigma_batch(sigma_next, x), cond)
            d_next = _ode_derivative(x_euler, denoised_next, sigma_next)
            x = x + 0.5 * (d + d_next) * dt
        if callback is not None:
            callback({"i": i, "sigma": sigma_hat, "sigma_next": sigma_next, "x": x, "denoised": denoised})
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    cond: Any = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) ([DPM++] Algorithm 2) in EDM's parametrisation (alpha_t = 1, sigma_t = sigma).

    With lambda = -ln sigma and h_i = lambda_{i+1} - lambda_i the data-prediction update is
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i, where D_i is the denoised estimate
    corrected by the previous one: D_i = (1 + 1/(2 r_i)) D(x_i) - 1/(2 r_i) D(x_{i-1}), r_i = h_{i-1} / h_i
    (first step and the final step to sigma = 0 use the first-order update). One denoiser call per step.
    """
    _check(sigmas)
    n = sigmas.numel() - 1
    old_denoised: torch.Tensor | None = None
    h_last: torch.Tensor | None = None
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, _sigma_batch(sigma, x), cond)
        if float(sigma_next) == 0.0:
            # lambda_{N} = +inf: the exact limit of the update is x = D.
            x = denoised
        else:
            h = sigma.log() - sigma_next.log()
            if old_denoised is None or h_last is None:
                d_hat = denoised
            else:
                r = h_last / h
                d_hat = (1.0 + 1.0 / (2.0 * r)).to(x.dtype) * denoised - (1.0 / (2.0 * r)).to(
                    x.dtype
                ) * old_denoised
            x = (sigma_next / sigma).to(x.dtype) * x - torch.expm1(-h).to(x.dtype) * d_hat
            h_last = h
        old_denoised = denoised
        if callback is not None:
            callback({"i": i, "sigma": sigma, "sigma_next": sigma_next, "x": x, "denoised": denoised})
    return x


#: name -> sampler; the CLI and the pipeline pick from this table.
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp2m": sample_dpmpp_2m,
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler called `name`; `InputError` listing the known names otherwise."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise InputError(f"sampler '{name}': expected one of {', '.join(sorted(SAMPLERS))}") from None
