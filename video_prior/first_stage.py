"""A first stage that needs no training: exact space-to-depth ("pixel unshuffle") patches as latents.

The embedded default model (issue 7) is trained on a CPU in about an hour; a learned VAE would take most of
that budget and lose detail. A ``p x p`` patch of a C-channel image (RGB, or RGBA), flattened into ``C p^2`` channels, is a
lossless and deterministic "latent" of a 1/p-size grid:

    (B, C, H, W) in [-1, 1]  --encode-->  (B, C p^2, H / p, W / p)  --decode-->  (B, C, H, W)

``decode(encode(x)) == x`` exactly (pixel_unshuffle / pixel_shuffle are permutations). The class has the
interface the pipeline, the conditioning helpers and the trainer use on diffusers' ``AutoencoderKL``:
``encode(x).latent_dist.mode() / .sample()``, ``decode(z).sample``, ``config.scaling_factor``,
``config.latent_channels``, ``save_pretrained / from_pretrained`` (diffusers' ModelMixin), and
``config.block_out_channels`` whose length gives the down-sampling factor ``2 ** (len - 1) = p`` as
diffusers' VAEs do (so callers that derive the latent grid from it stay correct).

The only weights are a per-channel affine normalisation ``z = (patches - shift) * scale`` (identity by
default); they are frozen buffers-as-parameters so that ``next(vae.parameters())`` gives the device and
dtype, as callers expect of a VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

__all__ = ["DeterministicLatent", "PatchAutoencoder", "PatchDecoderOutput", "PatchEncoderOutput"]


class DeterministicLatent:
    """A posterior with zero variance: ``mode()`` and ``sample()`` both return the latent itself."""

    def __init__(self, latent: torch.Tensor):
        self.mean = latent

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # No noise to draw: the generator is accepted for interface parity with AutoencoderKL.
        return self.mean


@dataclass
class PatchEncoderOutput(BaseOutput):
    """``latent_dist``: a `DeterministicLatent` of shape (B, C_latent, H / p, W / p)."""

    latent_dist: DeterministicLatent


@dataclass
class PatchDecoderOutput(BaseOutput):
    """``sample``: (B, 3, H, W) images."""

    sample: torch.Tensor


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Space-to-depth first stage: ``p x p`` pixel patches as latent channels (lossless, deterministic).

    Args:
        in_channels: image channels: 3 (RGB), or 4 (RGBA, for a model that generates its alpha).
        patch_size: p, the side of a patch and the down-sampling factor; a power of two.
        scaling_factor: multiplies latents for diffusion (``encode_frames``), as in diffusers' VAEs.
        sample_size: the image side the model is used at (a record, as in diffusers' VAEs).
        latent_channels, out_channels, block_out_channels: derived (``in_channels * p^2``, ``in_channels``,
            ``log2(p) + 1`` entries); accepted so that a saved config.json loads back, and checked.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 4,
        scaling_factor: float = 1.0,
        sample_size: int = 64,
        latent_channels: int | None = None,
        out_channels: int | None = None,
        block_out_channels: tuple[int, ...] | None = None,
    ):
        super().__init__()
        p = int(patch_size)
        if p < 1 or p & (p - 1):
            raise ValueError(f"patch_size {patch_size}: expected a power of two (1, 2, 4, 8, ...)")
        want_latent = in_channels * p * p
        if latent_channels is not None and int(latent_channels) != want_latent:
            raise ValueError(f"latent_channels {latent_channels}: a {p}x{p} patch gives {want_latent}")
        if out_channels is not None and int(out_channels) != in_channels:
            raise ValueError(f"out_channels {out_channels}: expected in_channels ({in_channels})")
        levels = int(math.log2(p)) + 1
        if block_out_channels is not None and len(block_out_channels) != levels:
            raise ValueError(
                f"block_out_channels {list(block_out_channels)}: expected {levels} entries for patch {p}"
            )
        # Fill in the derived config values so that config.json is self-describing.
        self.register_to_config(
            latent_channels=want_latent,
            out_channels=in_channels,
            block_out_channels=[want_latent] * levels,
        )
        self.shift = torch.nn.Parameter(torch.zeros(want_latent), requires_grad=False)
        self.scale = torch.nn.Parameter(torch.ones(want_latent), requires_grad=False)

    def latent_channels_of(self, image_channel: int) -> slice:
        """The latent channels that hold image channel `image_channel` (e.g. 3, the alpha of RGBA).

        Space-to-depth puts the p^2 pixels of a patch of image channel c in latent channels
        c p^2 .. (c + 1) p^2 - 1 (row-major within the patch).
        """
        c, p2 = int(image_channel), self.config.patch_size**2
        if not 0 <= c < self.config.in_channels:
            raise ValueError(f"image channel {c}: expected 0 to {self.config.in_channels - 1}")
        return slice(c * p2, (c + 1) * p2)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """(B, C, H, W) -> latent_dist over (B, C p^2, H / p, W / p); H and W multiples of p."""
        p = self.config.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image of size {tuple(x.shape[-2:])}: expected multiples of the patch size {p}")
        z = F.pixel_unshuffle(x, p)
        z = (z - self.shift.view(1, -1, 1, 1).to(z.dtype)) * self.scale.view(1, -1, 1, 1).to(z.dtype)
        dist = DeterministicLatent(z)
        return PatchEncoderOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, return_dict: bool = True, **kwargs):
        """(B, C p^2, h, w) -> (B, C, h p, w p); the exact inverse of `encode`."""
        x = z / self.scale.view(1, -1, 1, 1).to(z.dtype) + self.shift.view(1, -1, 1, 1).to(z.dtype)
        x = F.pixel_shuffle(x, self.config.patch_size)
        return PatchDecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Encode then decode (the identity, up to floating point of the affine normalisation)."""
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)
