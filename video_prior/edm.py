"""EDM preconditioning, noise schedules and the training loss of SVD / SV3D, as small pure functions.

References:
    [EDM]  Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
           Models", NeurIPS 2022 (arXiv 2206.00364). Table 1, eq. 2, 5, 7, 8.
    [SVD]  Blattmann et al., "Stable Video Diffusion", arXiv 2311.15127, appendix D (v-prediction with
           EDM noise input, log-normal training sigmas, conditioning-frame noise augmentation).

Conventions: the noisy sample is x = y + sigma * n with y the clean (scaled) latent and n ~ N(0, I);
sigma_data = 1 (SVD's latents are scaled by 0.18215 to about unit variance). The network F is a
v-predictor (Salimans & Ho 2022) called on c_in * x with noise input c_noise, and the denoiser is
D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) ([EDM] eq. 7).

`sigma` arguments are tensors of shape (B,) (one per sample); they broadcast over the trailing
(frames, channels, height, width) dimensions of x with `append_dims`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

#: network_fn(x_in (B, F, C, h, w), c_noise (B,)) -> F(x_in) (B, F, C, h, w): the v-prediction. The caller
#: closes over the conditioning (concatenates the image latent channel-wise, passes the CLIP embedding
#: and the camera ids to the UNet).
NetworkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dimensions to `t` until it has `ndim` dimensions: (B,) -> (B, 1, 1, 1, 1)."""
    if t.ndim > ndim:
        raise ValueError(f"tensor of {t.ndim} dims cannot broadcast to {ndim} dims")
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def vpred_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioning of a v-prediction network with EDM noise input (SVD, SV3D; sigma_data = 1).

    [EDM] Table 1 gives c_skip = s_d^2 / (s^2 + s_d^2) and c_in = 1 / sqrt(s^2 + s_d^2), and c_noise =
    ln(s) / 4. With v-prediction the output scale changes sign relative to EDM's F-prediction:
    c_out = -s s_d / sqrt(s^2 + s_d^2), so that the ideal network output is the velocity
    v = (n - s y) / sqrt(1 + s^2) for x = y + s n (see `v_target`).

    Args:
        sigma: (B,) noise levels, > 0.
    Returns:
        c_skip, c_out, c_in, c_noise, each (B,) like `sigma`.
    """
    s2 = sigma**2 + 1.0
    c_skip = 1.0 / s2
    c_out = -sigma / s2.sqrt()
    c_in = 1.0 / s2.sqrt()
    c_noise = 0.25 * sigma.log()
    return c_skip, c_out, c_in, c_noise


def x0pred_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Preconditioning of a network that predicts the clean sample directly (c_skip = 0, c_out = 1).

    D(x; sigma) = F(c_in x; c_noise) with [EDM] Table 1's c_in = 1 / sqrt(s^2 + s_d^2) and c_noise =
    ln(s) / 4 (sigma_data = 1). Unlike the v / EDM parameterisations, D does not pass x through, so a
    network whose output layer is zero denoises everything to 0: with residual targets (frame latent minus
    the conditioning latent) the untrained model is exactly the "copy the input view" baseline.

    Returns:
        c_skip, c_out, c_in, c_noise, each (B,) like `sigma`.
    """
    c_in = 1.0 / (sigma**2 + 1.0).sqrt()
    return torch.zeros_like(sigma), torch.ones_like(sigma), c_in, 0.25 * sigma.log()


#: prediction name -> its scalings (see `video_prior.components.PREDICTIONS`).
SCALINGS = {"v": vpred_scalings, "x0": x0pred_scalings}


def v_target(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The ideal v-network output for x = clean + sigma * noise: (noise - sigma * clean) / sqrt(1 + sigma^2).

    Solves D = c_skip x + c_out F = clean for F ([EDM] eq. 8's effective target with the scalings of
    `vpred_scalings`). Shapes as `clean`; `sigma` (B,).
    """
    s = append_dims(sigma, clean.ndim)
    return (noise - s * clean) / (1.0 + s**2).sqrt()


def denoise(
    network_fn: NetworkFn, x: torch.Tensor, sigma: torch.Tensor, prediction: str = "v"
) -> torch.Tensor:
    """The preconditioned denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) ([EDM] eq. 7).

    Args:
        network_fn: the raw network, `network_fn(x_in, c_noise)` with x_in like `x` and c_noise (B,).
        x: (B, F, C, h, w) noisy latents at noise level `sigma`.
        sigma: (B,) noise levels.
        prediction: "v" (`vpred_scalings`, SVD / SV3D) or "x0" (`x0pred_scalings`).
    Returns:
        (B, F, C, h, w) the estimate of the clean latents.
    """
    c_skip, c_out, c_in, c_noise = SCALINGS[prediction](sigma.to(x.dtype))
    out = network_fn(x * append_dims(c_in, x.ndim), c_noise)
    return x * append_dims(c_skip, x.ndim) + out * append_dims(c_out, x.ndim)


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0, device=None
) -> torch.Tensor:
    """The EDM sampling schedule ([EDM] eq. 5) with a final 0 appended: (n + 1,) float64, decreasing.

    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
    i = 0..n-1, and sigma_n = 0. SV3D samples with sigma_min 0.002, sigma_max 700, rho 7 and n = 50.
    Float64 so that the step sizes of samplers are exact; samplers cast to the latents' dtype.
    """
    if n < 1:
        raise ValueError(f"number of sampling steps {n}: expected at least 1")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"sigma_min {sigma_min}, sigma_max {sigma_max}: expected 0 < sigma_min <= sigma_max")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)


def sample_training_sigmas(
    shape: Sequence[int] | int,
    p_mean: float = 0.7,
    p_std: float = 1.6,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Training noise levels with ln sigma ~ N(P_mean, P_std^2) ([EDM] Table 1 "training", [SVD] app. D).

    SVD trains with P_mean 0.7 (1.0 for the high-resolution finetune) and P_std 1.6; the median sigma is
    exp(P_mean) and E[ln sigma] = P_mean, Var[ln sigma] = P_std^2.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    z = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    return (p_mean + p_std * z).exp()


def loss_weighting(sigma: torch.Tensor) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2 with s_d = 1 ([EDM] Table 1), on the denoised output.

    It equals 1 / c_out^2, so the weighted denoiser loss is the plain MSE of the network output against
    `v_target` ([EDM] eq. 8).
    """
    return (1.0 + sigma**2) / sigma**2


def sample_cond_aug(
    shape: Sequence[int] | int,
    mean: float = -3.0,
    std: float = 0.5,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Noise level of the conditioning-frame augmentation: ln sigma ~ N(mean, std^2) ([SVD] app. D: -3, 0.5).

    The conditioning image is encoded as VAE(image + cond_aug * n); cond_aug is also passed to the
    network as a vector conditioning scalar. At sampling SV3D uses a fixed cond_aug of 1e-5.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    z = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
    return (mean + std * z).exp()


def edm_loss(
    network_fn: NetworkFn,
    clean: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    reduce: bool = True,
    prediction: str = "v",
    channel_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The SVD training loss: lambda(sigma) || D(clean + sigma n; sigma) - clean ||^2 ([EDM] eq. 2 and 8).

    With ``prediction="x0"`` the weight is lambda = 1 / c_out^2 = 1, as for "v" (where lambda = 1 / c_out^2
    too): in both cases the loss is the plain MSE of the network output against its ideal value.

    Args:
        network_fn: the raw v-network (see `denoise`).
        clean: (B, F, C, h, w) clean latents y.
        sigma: (B,) training noise levels (one per video: all frames share it, as SVD).
        noise: (B, F, C, h, w) standard normal noise n.
        reduce: mean over everything (scalar) if True, else the (B,) per-sample losses.
        prediction: "v" or "x0" (see `denoise`).
        channel_weight: (C,) weight of each latent channel's squared error (None: all 1), applied as given
            (not renormalised), e.g. to weight the channels that carry an alpha matte.
    """
    noisy = clean + noise * append_dims(sigma, clean.ndim)
    denoised = denoise(network_fn, noisy, sigma, prediction)
    weight = loss_weighting(sigma) if prediction == "v" else torch.ones_like(sigma)
    w = append_dims(weight, clean.ndim)
    # Reduce in at least float32: bf16 squared errors summed over a 21-frame video lose digits.
    dtype = torch.promote_types(denoised.dtype, torch.float32)
    err = (denoised.to(dtype) - clean.to(dtype)) ** 2
    if channel_weight is not None:
        err = err * channel_weight.to(err).view(-1, 1, 1)  # (C,) over (B, F, C, h, w)
    per = (w.to(dtype) * err).flatten(1).mean(1)
    return per.mean() if reduce else per


def log_normal_moments(mean: float, std: float) -> tuple[float, float]:
    """Mean and variance of exp(N(mean, std^2)), for checking the sampled noise levels."""
    m = math.exp(mean + 0.5 * std**2)
    v = (math.exp(std**2) - 1.0) * math.exp(2.0 * mean + std**2)
    return m, v
