"""Test-only model helpers: a tiny model of the default model's design, and mv3d networks laid out as a
Stability checkpoint (the inverse of `video_prior.convert.convert_checkpoint`) with its sgm YAML.

They lived in the product modules though only tests use them; tests import them as `from model_helpers
import ...` (pytest puts tests/ on the path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from video_prior.conditioning import CONDITIONING_KINDS
from video_prior.convert import (
    _CLIP_VISUAL,
    _COND_VAE,
    FIRST_STAGE_PREFIX,
    UNET_PREFIX,
    clip_state_dict_to_reference,
    unet_state_dict_to_reference,
    vae_state_dict_to_reference,
)


def tiny_patch_config(num_frames: int | None = None, alpha: bool = False, mirror: bool = False) -> dict:
    """A 16 px model of the embedded default model's design, for fast tests.

    Patch first stage (2 x 2 patches -> 8 x 8 latents of 12 channels, 16 with alpha), x0 prediction on
    residual latents, no unconditional branch, SV3D_p conditioning with narrow sinusoids.

    Args:
        num_frames: the UNet's default frame count (5) and the model's fixed count (None: any).
        alpha: generate RGBA (4 image channels) instead of RGB.
        mirror: condition on the input view and its mirror image (`ModelInfo.mirror_conditioning`).
    """
    channels = 4 if alpha else 3
    latent = channels * 4
    unet = {
        "sample_size": 8,
        "in_channels": (3 if mirror else 2) * latent,
        "out_channels": latent,
        "down_block_types": ["DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"],
        "up_block_types": ["CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": 16,
        "num_attention_heads": [2, 4],
        "num_frames": num_frames or 5,
        "addition_time_embed_dims": [8, 16, 16],
        "per_frame_conditioning": True,
    }
    image_encoder = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "patch_size": 4,
        "image_size": 16,
        "projection_dim": 16,
    }
    info = {
        "resolution": 16,
        "num_frames": num_frames,
        "vae_type": "patch",
        "prediction": "x0",
        "residual": True,
        "cfg": False,
        "default_steps": 3,
        "default_cond_aug": 0.0,
        "alpha": alpha,
        "sigma_max": 20.0,
        "mirror_conditioning": mirror,
    }
    vae = {"type": "patch", "in_channels": channels, "patch_size": 2, "sample_size": 16}
    return {"unet": unet, "vae": vae, "image_encoder": image_encoder, "info": info}


def to_reference_checkpoint(components: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Lay mv3d networks out as a Stability single-file checkpoint (the inverse of `convert_checkpoint`).

    UNet -> ``model.diffusion_model.*``; CLIP -> ``conditioner.embedders.0.open_clip.model.visual.*``;
    VAE encoder + quant_conv -> ``conditioner.embedders.1.encoder.*`` (the conditioning VAE); decoder
    (+ post_quant_conv) -> ``first_stage_model.*``. The tests check the mapping with it.
    """
    unet, vae, clip = components["unet"], components["vae"], components["image_encoder"]
    vae_type = "temporal" if "decoder.time_conv_out.weight" in vae.state_dict() else "image"
    out = {
        UNET_PREFIX + k: v for k, v in unet_state_dict_to_reference(unet.state_dict(), unet.config).items()
    }
    clip_ref = clip_state_dict_to_reference(clip.state_dict(), clip.config.to_dict())
    out.update({f"conditioner.embedders.0.{_CLIP_VISUAL}{k}": v for k, v in clip_ref.items()})
    for key, value in vae_state_dict_to_reference(vae.state_dict(), vae_type, vae.config).items():
        if key.startswith(("encoder.", "quant_conv.")):
            out[f"conditioner.embedders.1.{_COND_VAE}{key}"] = value
        else:
            out[FIRST_STAGE_PREFIX + key] = value
    return {k: v.detach().contiguous() for k, v in out.items()}


_REFERENCE_SCALAR_KEYS = {"polar_rad": "polars_rad", "azimuth_rad": "azimuths_rad"}


def reference_yaml(unet_config: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """An sgm inference-YAML document (as a dict) describing a MultiViewUNet config: the inverse of
    `read_reference_yaml` + `unet_config_from_reference_params`, for the tests."""
    channels = list(unet_config["block_out_channels"])
    mc = channels[0]
    heads = unet_config["num_attention_heads"]
    heads = [heads] * len(channels) if isinstance(heads, int) else list(heads)
    head_ch = {c // h for c, h in zip(channels, heads, strict=True)}
    if len(head_ch) != 1:
        raise ValueError(f"heads {heads} for channels {channels}: the reference needs one head width")
    depth = unet_config.get("transformer_layers_per_block", 1)
    network = {
        "adm_in_channels": int(sum(unet_config["addition_time_embed_dims"])),
        "num_classes": "sequential",
        "in_channels": int(unet_config["in_channels"]),
        "out_channels": int(unet_config["out_channels"]),
        "model_channels": mc,
        "attention_resolutions": [
            2**i for i, t in enumerate(unet_config["down_block_types"]) if t.startswith("CrossAttn")
        ],
        "num_res_blocks": int(unet_config["layers_per_block"]),
        "channel_mult": [c // mc for c in channels],
        "num_head_channels": head_ch.pop(),
        "use_linear_in_transformer": True,
        "transformer_depth": depth if isinstance(depth, int) else list(depth),
        "context_dim": int(unet_config["cross_attention_dim"]),
        "extra_ff_mix_layer": True,
        "use_spatial_context": True,
        "merge_strategy": "learned_with_images",
        "video_kernel_size": [3, 1, 1],
    }
    scalars = CONDITIONING_KINDS[kind].scalars
    emb_models = [
        {
            "input_key": _REFERENCE_SCALAR_KEYS.get(name, name),
            "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
            "params": {"outdim": int(width)},
        }
        for name, width in zip(scalars, unet_config["addition_time_embed_dims"], strict=True)
    ]
    return {
        "model": {
            "params": {
                "network_config": {
                    "target": "sgm.modules.diffusionmodules.video_model.VideoUNet",
                    "params": network,
                },
                "conditioner_config": {"params": {"emb_models": emb_models}},
            }
        }
    }
