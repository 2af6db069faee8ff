"""Conditioning of the multi-view UNet: CLIP image embedding, VAE image latent, camera/vector ids, VAE coding.

SV3D conditions on the input view three ways (SV3D, arXiv 2403.12008, and Stability's generative-models code):

* cross-attention on a CLIP image embedding, (B, 1, D);
* the VAE latent of the input view (posterior mode, NOT multiplied by the latent scale factor) concatenated
  channel-wise to every frame's noisy latent; the image is noised by ``cond_aug`` before encoding;
* a "vector" of raw scalars embedded by sinusoids inside the UNet: per frame (cond_aug, polar, azimuth)
  for SV3D_p, (cond_aug) for SV3D_u, (fps id, motion bucket id, cond_aug) for SVD.

Images are float tensors in [-1, 1], shaped (B, 3, H, W) or (B, F, 3, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder

from video_prior.image_encoders import EfficientNetLite0Encoder

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CONDITIONING_KINDS",
    "ConditioningKind",
    "camera_time_ids",
    "clip_embed",
    "condition_latent",
    "conditioning_kind",
    "decode_latents",
    "encode_frames",
    "reference_resize",
]

#: Normalisation of (Open)CLIP image inputs in [0, 1]; OpenCLIP ViT-H/14 uses OpenAI's statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ConditioningKind:
    """The vector conditioning of one model family.

    Attributes:
        scalars: names of the raw scalars in `added_time_ids`, in order.
        widths: sinusoid width of each scalar in the reference models.
        per_frame: whether there is one vector per frame (else one per video).
        uses_camera: whether polar/azimuth angles enter the network.
    """

    scalars: tuple[str, ...]
    widths: tuple[int, ...]
    per_frame: bool
    uses_camera: bool


#: name -> conditioning; the UNet config of each is ``addition_time_embed_dims`` (any widths) and
#: ``per_frame_conditioning``.
CONDITIONING_KINDS: dict[str, ConditioningKind] = {
    "sv3d_p": ConditioningKind(("cond_aug", "polar_rad", "azimuth_rad"), (256, 512, 512), True, True),
    "sv3d_u": ConditioningKind(("cond_aug",), (256,), False, False),
    "svd": ConditioningKind(("fps_id", "motion_bucket_id", "cond_aug"), (256, 256, 256), False, False),
}


def conditioning_kind(kind_or_unet_config) -> str:
    """The conditioning kind ("sv3d_p", "sv3d_u", "svd") of a kind name or a MultiViewUNet config.

    A UNet config is recognised from its number of scalars and ``per_frame_conditioning``; widths may
    differ from the reference ones (tiny test models use narrower sinusoids).
    """
    if isinstance(kind_or_unet_config, str):
        if kind_or_unet_config not in CONDITIONING_KINDS:
            raise ValueError(
                f"conditioning '{kind_or_unet_config}': expected one of {sorted(CONDITIONING_KINDS)}"
            )
        return kind_or_unet_config
    cfg = kind_or_unet_config
    if not isinstance(cfg, Mapping):
        cfg = getattr(cfg, "config", cfg)
    dims = cfg.get("addition_time_embed_dims")
    if dims is None:
        dims = [cfg["addition_time_embed_dim"]] * (
            cfg["projection_class_embeddings_input_dim"] // cfg["addition_time_embed_dim"]
        )
    per_frame = bool(cfg.get("per_frame_conditioning", False))
    for name, kind in CONDITIONING_KINDS.items():
        if kind.per_frame == per_frame and len(kind.scalars) == len(dims):
            return name
    raise ValueError(
        f"UNet config with {len(dims)} scalars (per frame: {per_frame}) matches no conditioning kind"
    )


def camera_time_ids(
    kind_or_unet_config,
    cond_aug: torch.Tensor,
    polar_rad: torch.Tensor | None = None,
    azimuth_rad: torch.Tensor | None = None,
    fps_id: float = 5.0,
    motion_bucket_id: float = 127.0,
) -> torch.Tensor:
    """Raw conditioning scalars for the UNet's ``added_time_ids``.

    Args:
        kind_or_unet_config: a conditioning kind name (a key of `CONDITIONING_KINDS`) or a
            MultiViewUNet config.
        cond_aug: (B,) the noise level added to the conditioning image.
        polar_rad: (B, F) polar angles (90 deg - elevation) in radians; needed for SV3D_p.
        azimuth_rad: (B, F) azimuths in radians relative to the input view; needed for SV3D_p.
        fps_id, motion_bucket_id: SVD's micro-conditioning (ignored for SV3D).

    Returns:
        (B, F, 3) [cond_aug, polar, azimuth] per frame for SV3D_p; (B, 1) [cond_aug] for SV3D_u;
        (B, 3) [fps_id, motion_bucket_id, cond_aug] for SVD. float32.
    """
    kind = conditioning_kind(kind_or_unet_config)
    cond_aug = torch.as_tensor(cond_aug, dtype=torch.float32).reshape(-1)
    if kind == "sv3d_p":
        if polar_rad is None or azimuth_rad is None:
            raise ValueError("SV3D_p conditioning needs polar_rad and azimuth_rad, each (B, F)")
        polar = torch.as_tensor(polar_rad, dtype=torch.float32, device=cond_aug.device)
        azimuth = torch.as_tensor(azimuth_rad, dtype=torch.float32, device=cond_aug.device)
        if polar.ndim != 2 or polar.shape != azimuth.shape or polar.shape[0] != cond_aug.shape[0]:
            raise ValueError(
                f"polar {tuple(polar.shape)} and azimuth {tuple(azimuth.shape)}: expected both (B, F) with "
                f"B = {cond_aug.shape[0]}"
            )
        return torch.stack([cond_aug[:, None].expand_as(polar), polar, azimuth], dim=-1)
    if kind == "sv3d_u":
        return cond_aug[:, None]
    ones = torch.ones_like(cond_aug)
    return torch.stack([ones * float(fps_id), ones * float(motion_bucket_id), cond_aug], dim=-1)


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    """(size,) normalised Gaussian taps centred on the middle tap (size odd)."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def reference_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize as the reference's CLIP preprocessing does: ``kornia.geometry.resize(x, size, "bicubic",
    align_corners=True, antialias=True)`` (Stability's generative-models, FrozenOpenCLIPImageEmbedder),
    in plain torch.

    Kornia's antialiasing is not torch's (``F.interpolate(..., antialias=True)`` widens the bicubic
    kernel): it blurs with a Gaussian first, and only when the image shrinks, then resamples with plain
    bicubic. Its rule, per axis with shrink factor ``s = in / out``: blur only if ``max(s) > 1``; then
    ``sigma = max((s - 1) / 2, 0.001)``, kernel size ``max(int(4 sigma), 3)`` made odd, taps
    ``exp(-x^2 / (2 sigma^2))`` normalised, the border reflected (without repeating the edge pixel).

    Args:
        images: (B, C, H, W) float.
        size: (height, width) of the output.

    Returns:
        (B, C, height, width), same dtype.
    """
    h, w = images.shape[-2:]
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return images
    factors = (h / out_h, w / out_w)
    x = images
    if max(factors) > 1.0:
        for axis, factor, length in ((-2, factors[0], h), (-1, factors[1], w)):
            sigma = max((factor - 1.0) / 2.0, 0.001)
            ks = max(int(4.0 * sigma), 3)
            ks = ks if ks % 2 else ks + 1
            if length == 1:  # nothing to smooth along a singleton axis
                continue
            taps = _gaussian_kernel1d(ks, sigma, torch.float64, x.device).to(x.dtype)
            pad = ks // 2
            c = x.shape[1]
            if axis == -2:
                x = F.pad(x, (0, 0, pad, pad), mode="reflect")
                x = F.conv2d(x, taps.view(1, 1, ks, 1).expand(c, 1, ks, 1), groups=c)
            else:
                x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
                x = F.conv2d(x, taps.view(1, 1, 1, ks).expand(c, 1, 1, ks), groups=c)
    return F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=True)


def _encoder_image_size(image_encoder) -> int:
    size = image_encoder.config.image_size
    return int(size if isinstance(size, int) else size[0])


def clip_embed(image_encoder, images: torch.Tensor) -> torch.Tensor:
    """CLIP image embedding for cross-attention.

    Resizes to the encoder's input size exactly as the reference does (`reference_resize`: kornia's
    Gaussian-then-bicubic, not torch's antialiased bicubic, whose CLIP inputs differ by up to 1.1 in
    [-1, 1] units from 576 px), maps [-1, 1] to [0, 1] and normalises with CLIP's mean and std, all in
    torch (no image processor, so it runs on the model's device and dtype and is differentiable).

    Args:
        image_encoder: a transformers ``CLIPVisionModelWithProjection``.
        images: (B, 3, H, W) in [-1, 1].

    Returns:
        (B, 1, D) projected image embeddings, D = ``image_encoder.config.projection_dim``; for an
        encoder of `video_prior.image_encoders` (which brings its own preprocessing), its (B, T, D) tokens.
    """
    if isinstance(image_encoder, EfficientNetLite0Encoder):
        return image_encoder.embed(images)
    param = next(image_encoder.parameters())
    # at least float32: a half-precision encoder still gets a float32 resize and normalisation
    x = images.to(device=param.device, dtype=torch.promote_types(param.dtype, torch.float32))
    size = _encoder_image_size(image_encoder)
    if x.shape[-2:] != (size, size):
        x = reference_resize(x, (size, size))
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = ((x - mean) / std).to(param.dtype)
    return image_encoder(pixel_values=x).image_embeds[:, None, :]


def condition_latent(
    vae,
    images: torch.Tensor,
    cond_aug: torch.Tensor,
    generator: torch.Generator | None = None,
    mirror: bool = False,
) -> torch.Tensor:
    """VAE latent of the noise-augmented conditioning image, concatenated to every frame by the caller.

    SV3D encodes ``image + cond_aug * noise`` and uses the posterior MODE, not scaled by the latent scale
    factor (Stability's generative-models code for SV3D).

    Args:
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder``.
        images: (B, 3, H, W) in [-1, 1].
        cond_aug: (B,) noise standard deviation per image (0 for no augmentation).
        generator: draws the augmentation noise (on its own device), for reproducible sampling.
        mirror: also encode the (augmented) image mirrored left-right and append its latent along
            channels (`ModelInfo.mirror_conditioning`).

    Returns:
        (B, C_latent, H / f, W / f) unscaled latents in the VAE's dtype; (B, 2 C_latent, H / f, W / f)
        with `mirror`, the input view's latent first.
    """
    param = next(vae.parameters())
    x = images.to(device=param.device, dtype=torch.promote_types(param.dtype, torch.float32))
    cond_aug = torch.as_tensor(cond_aug, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    if torch.any(cond_aug != 0):
        gen_device = generator.device if generator is not None else x.device
        # drawn in float32 whatever the VAE's dtype, so that a seed gives the same noise in every dtype
        noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=torch.float32).to(x)
        x = x + cond_aug * noise
    if mirror:
        both = vae.encode(torch.cat([x, x.flip(-1)]).to(param.dtype)).latent_dist.mode()
        return torch.cat(both.chunk(2), dim=1)
    return vae.encode(x.to(param.dtype)).latent_dist.mode()


def residual_offset(image_latent: torch.Tensor, latent_channels: int, scaling_factor: float) -> torch.Tensor:
    """What a residual model (`ModelInfo.residual`) diffuses relative to: the input view's scaled latent.

    Training subtracts it from every frame's latent; sampling adds it back. A mirror-conditioned image
    latent holds the mirror image's latent after the input view's; only the first `latent_channels`
    (the input view) count.

    Args:
        image_latent: (B, C_image, h, w) unscaled conditioning latents (`condition_latent`).
        latent_channels: C, the diffused latent's channel count (the VAE's).
        scaling_factor: the VAE's latent scaling.
    Returns:
        (B, 1, C, h, w), broadcastable over frames.
    """
    return scaling_factor * image_latent[:, None, :latent_channels]


def encode_frames(
    vae,
    frames: torch.Tensor,
    chunk_size: int = 16,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scaled VAE latents of video frames: the diffusion targets for training.

    Args:
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder`` (both encode frame by frame).
        frames: (B, F, 3, H, W) in [-1, 1].
        chunk_size: frames encoded per VAE call, to bound memory.
        sample: draw from the posterior (as the reference's first stage does in training) instead of
            taking its mode (deterministic, suited to precomputed latents).
        generator: for ``sample=True``.

    Returns:
        (B, F, C_latent, h, w) latents multiplied by ``vae.config.scaling_factor``.
    """
    b, f = frames.shape[:2]
    param = next(vae.parameters())
    flat = frames.flatten(0, 1).to(device=param.device, dtype=param.dtype)
    out = []
    for start in range(0, flat.shape[0], max(1, int(chunk_size))):
        dist = vae.encode(flat[start : start + chunk_size]).latent_dist
        out.append(dist.sample(generator) if sample else dist.mode())
    latents = torch.cat(out) * vae.config.scaling_factor
    return latents.reshape(b, f, *latents.shape[1:])


def decode_latents(vae, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
    """Decode scaled latents to images, a chunk of frames at a time.

    A temporal decoder (``AutoencoderKLTemporalDecoder``) mixes the frames within each chunk, as the
    reference decodes ``decoding_t`` frames at a time; an image decoder treats frames independently.

    Args:
        vae: ``AutoencoderKL`` or ``AutoencoderKLTemporalDecoder``.
        latents: (B, F, C_latent, h, w), scaled by ``vae.config.scaling_factor``.
        chunk_size: frames per decoder call; bounds memory.

    Returns:
        (B, F, 3, H, W) images clamped to [-1, 1], float32 (float64 for a float64 VAE).
    """
    b, f = latents.shape[:2]
    param = next(vae.parameters())
    out_dtype = torch.promote_types(param.dtype, torch.float32)
    chunk_size = max(1, int(chunk_size))
    temporal = isinstance(vae, AutoencoderKLTemporalDecoder)
    videos = []
    for i in range(b):
        z = (latents[i] / vae.config.scaling_factor).to(device=param.device, dtype=param.dtype)
        chunks = []
        for start in range(0, f, chunk_size):
            part = z[start : start + chunk_size]
            kwargs = {"num_frames": part.shape[0]} if temporal else {}
            chunks.append(vae.decode(part, **kwargs).sample.to(out_dtype))
        videos.append(torch.cat(chunks))
    return torch.stack(videos).clamp(-1.0, 1.0)
