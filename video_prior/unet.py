"""The camera-conditioned spatio-temporal UNet: diffusers' SVD UNet with SV3D's per-frame vector conditioning.

SVD, SV3D_u and SV3D_p share one network (SV3D, arXiv 2403.12008; Stability's generative-models VideoUNet): the only difference is the "vector"
conditioning that is embedded by sinusoids, projected by ``Linear -> SiLU -> Linear`` and added to the
timestep embedding:

* SVD: (fps id, motion bucket id, cond_aug), each a 256-wide sinusoid, one vector per video (768).
* SV3D_u: cond_aug only (256), one vector per video.
* SV3D_p: cond_aug (256), polar angle (512), azimuth (512), in radians, one vector PER FRAME (1280).

Stock diffusers embeds every conditioning scalar with the same width and one vector per video, so
SV3D_p needs this subclass. Module names stay diffusers' (``time_embedding``, ``add_embedding.linear_1``,
``down_blocks.*`` ...), so Stability checkpoints convert with diffusers' key mapping; the sinusoid
modules hold no weights, so their layout does not appear in the state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import Timesteps
from diffusers.models.unets.unet_spatio_temporal_condition import (
    UNetSpatioTemporalConditionModel,
    UNetSpatioTemporalConditionOutput,
)
from torch import nn

__all__ = ["MultiViewUNet", "MultiWidthSinusoids", "UNetSpatioTemporalConditionOutput"]


class MultiWidthSinusoids(nn.Module):
    """Embed K scalars, each with its own sinusoid width, and concatenate the embeddings.

    Each sinusoid is cos-first with max period 10000 and no frequency shift (diffusers
    ``Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)``), which is the ``timestep_embedding``
    of Stability's reference code used by its vector embedders.

    Args:
        widths: the embedding width of each scalar, e.g. ``[256, 512, 512]`` for SV3D_p.
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = [int(w) for w in widths]
        self.projs = nn.ModuleList(
            Timesteps(w, flip_sin_to_cos=True, downscale_freq_shift=0) for w in self.widths
        )

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """(N, K) scalars -> (N, sum(widths)) float32 embeddings."""
        if values.shape[-1] != len(self.widths):
            raise ValueError(
                f"expected {len(self.widths)} conditioning scalars per vector, got {values.shape[-1]}"
            )
        return torch.cat([proj(values[:, k]) for k, proj in enumerate(self.projs)], dim=-1)


class MultiViewUNet(UNetSpatioTemporalConditionModel):
    r"""diffusers' ``UNetSpatioTemporalConditionModel`` with per-scalar sinusoid widths and per-frame conditioning.

    Extra configuration (everything else is the parent's):
        addition_time_embed_dims: width of each conditioning scalar's sinusoid. ``[256, 512, 512]`` for
            SV3D_p (cond_aug, polar, azimuth), ``[256]`` for SV3D_u, ``[256, 256, 256]`` for SVD (fps id,
            motion bucket id, cond_aug). ``None`` keeps the stock behaviour: ``projection_class_embeddings_input_dim
            // addition_time_embed_dim`` scalars of ``addition_time_embed_dim`` each (a stock SVD config
            loads unchanged).
        per_frame_conditioning: ``True`` for SV3D_p: ``added_time_ids`` carries one vector per frame, whose
            embedding is added to that frame's time embedding only.
        projection_class_embeddings_input_dim: defaults to ``sum(addition_time_embed_dims)``; if given it
            must equal it.
        resnet_norm_eps: epsilon of every GroupNorm inside the spatial and temporal res blocks. ``None``
            keeps diffusers' per-block values (1e-6 in the cross-attention and up blocks, 1e-5
            elsewhere); Stability's VideoUNet uses 1e-5 everywhere, so converted SVD/SV3D checkpoints set
            1e-5 to match the reference to float32 precision (with 1e-6 they differ by ~2e-5 relative).

        encoder_hid_dim: the width of the image encoder's tokens when it differs from
            ``cross_attention_dim`` (e.g. 1280 for the frozen EfficientNet-Lite0 of
            `video_prior.image_encoders`): a trainable ``encoder_hid_proj`` Linear maps them to
            ``cross_attention_dim`` first, as diffusers' ``UNet2DConditionModel`` does. ``None``: no projection.

    With ``addition_time_embed_dims=[256, 256, 256]`` and ``per_frame_conditioning=False`` this class computes
    exactly what the stock class computes with the same weights.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        addition_time_embed_dim: int = 256,
        projection_class_embeddings_input_dim: int | None = None,
        layers_per_block: int | tuple[int] = 2,
        cross_attention_dim: int | tuple[int] = 1024,
        transformer_layers_per_block: int | tuple[int, tuple[tuple]] = 1,
        num_attention_heads: int | tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = 25,
        addition_time_embed_dims: list[int] | None = None,
        per_frame_conditioning: bool = False,
        resnet_norm_eps: float | None = None,
        encoder_hid_dim: int | None = None,
    ):
        if addition_time_embed_dims is None:
            total = (
                768
                if projection_class_embeddings_input_dim is None
                else projection_class_embeddings_input_dim
            )
            if total % addition_time_embed_dim != 0:
                raise ValueError(
                    f"projection_class_embeddings_input_dim {total} is not a multiple of addition_time_embed_dim "
                    f"{addition_time_embed_dim}: give addition_time_embed_dims explicitly"
                )
            addition_time_embed_dims = [addition_time_embed_dim] * (total // addition_time_embed_dim)
        addition_time_embed_dims = [int(w) for w in addition_time_embed_dims]
        if not addition_time_embed_dims or any(w <= 0 or w % 2 for w in addition_time_embed_dims):
            raise ValueError(
                f"addition_time_embed_dims {addition_time_embed_dims}: expected positive even widths"
            )
        total = sum(addition_time_embed_dims)
        if (
            projection_class_embeddings_input_dim is not None
            and projection_class_embeddings_input_dim != total
        ):
            raise ValueError(
                f"projection_class_embeddings_input_dim {projection_class_embeddings_input_dim} != "
                f"sum(addition_time_embed_dims) = {total}"
            )
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            addition_time_embed_dim=addition_time_embed_dims[0],
            projection_class_embeddings_input_dim=total,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=transformer_layers_per_block,
            num_attention_heads=num_attention_heads,
            num_frames=num_frames,
        )
        # The parent's single-width `add_time_proj` (no weights) is replaced by one sinusoid per scalar.
        self.add_time_proj = MultiWidthSinusoids(addition_time_embed_dims)
        if resnet_norm_eps is not None:
            for name, module in self.named_modules():
                if isinstance(module, nn.GroupNorm) and "res_block" in name:
                    module.eps = float(resnet_norm_eps)
        self.encoder_hid_proj: nn.Linear | None = None
        if encoder_hid_dim is not None:
            if not isinstance(cross_attention_dim, int):
                raise ValueError(
                    f"encoder_hid_dim {encoder_hid_dim} needs one cross_attention_dim, got {cross_attention_dim}"
                )
            self.encoder_hid_proj = nn.Linear(int(encoder_hid_dim), cross_attention_dim)
        # Record the resolved values, so that a saved config.json is explicit and reloads identically
        # (diffusers drops keys listed in `_use_default_values` when it loads a config).
        resolved = {
            "addition_time_embed_dim",
            "addition_time_embed_dims",
            "projection_class_embeddings_input_dim",
        }
        used_defaults = [k for k in self.config.get("_use_default_values", []) if k not in resolved]
        self.register_to_config(
            _use_default_values=used_defaults,
            addition_time_embed_dim=addition_time_embed_dims[0],
            addition_time_embed_dims=addition_time_embed_dims,
            projection_class_embeddings_input_dim=total,
            per_frame_conditioning=bool(per_frame_conditioning),
        )

    @property
    def num_conditioning_scalars(self) -> int:
        """K: how many raw scalars `added_time_ids` holds per vector."""
        return len(self.config.addition_time_embed_dims)

    def embed(
        self,
        timestep: torch.Tensor | float,
        added_time_ids: torch.Tensor,
        batch_size: int,
        num_frames: int,
        dtype,
    ) -> torch.Tensor:
        """Time + vector conditioning embedding, one row per frame: (B*F, 4 * block_out_channels[0]).

        Args:
            timestep: (B,) or scalar: the network's noise input (EDM c_noise).
            added_time_ids: (B, F, K) when ``per_frame_conditioning`` (a (B, K) tensor is broadcast to all
                frames), else (B, K).
        """
        device = self.conv_in.weight.device
        timesteps = torch.as_tensor(timestep, device=device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.to(torch.float32).expand(batch_size)
        # Sinusoids are computed in float32 (Timesteps always returns float32), then cast for the MLPs.
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype))  # (B, C)

        k = self.num_conditioning_scalars
        ids = added_time_ids.to(device)
        if self.config.per_frame_conditioning:
            if ids.ndim == 2:
                ids = ids[:, None, :].expand(batch_size, num_frames, ids.shape[-1])
            if ids.shape != (batch_size, num_frames, k):
                raise ValueError(
                    f"added_time_ids shape {tuple(added_time_ids.shape)}: expected ({batch_size}, {num_frames}, {k})"
                )
            aug = self.add_embedding(self.add_time_proj(ids.reshape(-1, k)).to(dtype))  # (B*F, C)
            return emb.repeat_interleave(num_frames, dim=0) + aug
        if ids.shape != (batch_size, k):
            raise ValueError(
                f"added_time_ids shape {tuple(added_time_ids.shape)}: expected ({batch_size}, {k})"
            )
        emb = emb + self.add_embedding(self.add_time_proj(ids).to(dtype))  # (B, C)
        return emb.repeat_interleave(num_frames, dim=0)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple:
        """Predict the network output for every frame.

        Args:
            sample: (B, F, C_in, H, W) noisy latents (already scaled by c_in) with the conditioning latent
                concatenated channel-wise.
            timestep: (B,) float, EDM c_noise (a scalar is broadcast).
            encoder_hidden_states: (B, T, D) cross-attention context (T = 1 for a CLIP image embedding),
                shared by all frames; D = ``encoder_hid_dim`` when set, else ``cross_attention_dim``.
            added_time_ids: raw conditioning scalars, (B, F, K) per frame or (B, K) per video.
            return_dict: return a `UNetSpatioTemporalConditionOutput` rather than a tuple.

        Returns:
            ``UNetSpatioTemporalConditionOutput(sample=(B, F, C_out, H, W))``.
        """
        batch_size, num_frames = sample.shape[:2]
        up_factor = 2**self.num_upsamplers
        # Sizes that are not a multiple of the total down-sampling factor need explicit upsample sizes.
        forward_upsample_size = any(s % up_factor != 0 for s in sample.shape[-2:])
        upsample_size = None

        # 1. time and vector conditioning, one embedding per frame
        emb = self.embed(timestep, added_time_ids, batch_size, num_frames, sample.dtype)

        # frames are folded into the batch; context is shared by all frames of a video
        if self.encoder_hid_proj is not None:
            encoder_hidden_states = self.encoder_hid_proj(
                encoder_hidden_states.to(self.encoder_hid_proj.weight.dtype)
            )
        sample = sample.flatten(0, 1)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)

        # 2. pre-process
        sample = self.conv_in(sample)
        # all-zero: every sample is a video, so temporal layers mix with their learned factor
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        # 3. down
        down_block_res_samples = (sample,)
        for block in self.down_blocks:
            kwargs = (
                {"encoder_hidden_states": encoder_hidden_states}
                if getattr(block, "has_cross_attention", False)
                else {}
            )
            sample, res_samples = block(
                hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator, **kwargs
            )
            down_block_res_samples += res_samples

        # 4. mid
        sample = self.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )

        # 5. up
        for i, block in enumerate(self.up_blocks):
            res_samples = down_block_res_samples[-len(block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if i < len(self.up_blocks) - 1 and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            kwargs = (
                {"encoder_hidden_states": encoder_hidden_states}
                if getattr(block, "has_cross_attention", False)
                else {}
            )
            sample = block(
                hidden_states=sample,
                temb=emb,
                res_hidden_states_tuple=res_samples,
                upsample_size=upsample_size,
                image_only_indicator=image_only_indicator,
                **kwargs,
            )

        # 6. post-process
        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))

        # 7. unfold frames
        sample = sample.reshape(batch_size, num_frames, *sample.shape[1:])
        if not return_dict:
            return (sample,)
        return UNetSpatioTemporalConditionOutput(sample=sample)
