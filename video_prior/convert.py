"""Stability single-file checkpoints (SVD, SVD-XT, SV3D_u, SV3D_p) -> a diffusers-layout model folder.

The whole key mapping lives in this one module. A Stability file (``*.safetensors``) holds, under fixed
prefixes, the parts of sgm's ``DiffusionEngine``:

=====================================================  ===========================================
reference prefix                                        converted into
=====================================================  ===========================================
``model.diffusion_model.*`` (sgm ``VideoUNet``)          ``unet``: ``video_prior.unet.MultiViewUNet``
``conditioner.embedders.<k>.open_clip.model.visual.*``   ``image_encoder``: transformers
(OpenCLIP ViT-H/14 visual tower)                        ``CLIPVisionModelWithProjection``
``conditioner.embedders.<k>.encoder.*`` (conditioning   encoder half of ``vae`` (diffusers
VAE: sgm ``AutoencoderKLModeOnly``)                     ``AutoencoderKL`` / ``AutoencoderKLTemporalDecoder``)
``first_stage_model.decoder.*`` (image ``Decoder`` for  decoder half of ``vae``
SV3D, ``VideoDecoder`` for SVD)
=====================================================  ===========================================

Every mapping is a bijection between names built from a small *layout* (number of levels, res blocks per
level, which levels have attention) so that it can be run in both directions: the reverse direction is
what the tests (and ``tools/check_reference.py``) use to lay a random mv3d network out with the
reference key names. Nothing here unpickles: checkpoints are read with ``safetensors`` only.

The mapping follows the module structure of Stability-AI/generative-models
(``sgm/modules/diffusionmodules/video_model.py``, ``video_attention.py``, ``openaimodel.py``,
``model.py``, ``autoencoding/temporal_ae.py``) and of diffusers' ``UNetSpatioTemporalConditionModel``.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from render.common import InputError
from video_prior.conditioning import CONDITIONING_KINDS

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
_EMBEDDER_RE = re.compile(r"^conditioner\.embedders\.(\d+)\.")
_CLIP_VISUAL = "open_clip.model.visual."
_COND_VAE = "encoder."

# Conditioning kind from the width of the vector conditioning (label_emb input) (Stability's SV3D inference configs).
ADM_WIDTH_TO_KIND = {768: "svd", 256: "sv3d_u", 1280: "sv3d_p"}
KIND_NUM_FRAMES = {"svd": 14, "sv3d_u": 21, "sv3d_p": 21}
LATENT_SCALE = 0.18215


# ----------------------------------------------------------------------------------------------------
# A generic two-way renaming engine
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One module: every key ``<ref>.<leaf>`` becomes ``<target>.<leaf'>``.

    ``leaves`` renames the part after the prefix by its longest matching leading component(s); a
    remainder matched by no leaf rename is an error unless ``passthrough`` (same names on both sides).
    """

    ref: str
    target: str
    leaves: tuple[tuple[str, str], ...] = ()
    passthrough: bool = False

    def inverted(self) -> _Rule:
        return _Rule(self.target, self.ref, tuple((b, a) for a, b in self.leaves), self.passthrough)


def _match_prefix(name: str, prefix: str) -> str | None:
    """The rest of ``name`` after the dotted prefix ``prefix`` (``""`` when equal), else None."""
    if prefix == "":
        return name
    if name == prefix:
        return ""
    if name.startswith(prefix + "."):
        return name[len(prefix) + 1 :]
    return None


def _rename(keys: Iterable[str], rules: list[_Rule]) -> tuple[dict[str, str], list[str]]:
    """Map every key through the rule with the longest matching prefix. Returns (mapping, unmatched)."""
    by_len = sorted(rules, key=lambda r: len(r.ref), reverse=True)
    out: dict[str, str] = {}
    unmatched: list[str] = []
    for key in keys:
        new = None
        for rule in by_len:
            rest = _match_prefix(key, rule.ref)
            if rest is None:
                continue
            leaf = None
            for a, b in sorted(rule.leaves, key=lambda ab: len(ab[0]), reverse=True):
                tail = _match_prefix(rest, a)
                if tail is not None:
                    leaf = ".".join(p for p in (b, tail) if p)
                    break
            if leaf is None and rule.passthrough:
                leaf = rest
            if leaf is not None:
                new = ".".join(p for p in (rule.target, leaf) if p)
            break
        if new is None:
            unmatched.append(key)
        else:
            out[key] = new
    return out, unmatched


# ----------------------------------------------------------------------------------------------------
# UNet: sgm VideoUNet <-> diffusers UNetSpatioTemporalConditionModel / MultiViewUNet
# ----------------------------------------------------------------------------------------------------

# openaimodel.ResBlock (+ VideoResBlock's time_stack / time_mixer) -> SpatioTemporalResBlock.
_UNET_RESBLOCK_LEAVES = (
    ("in_layers.0", "spatial_res_block.norm1"),
    ("in_layers.2", "spatial_res_block.conv1"),
    ("emb_layers.1", "spatial_res_block.time_emb_proj"),
    ("out_layers.0", "spatial_res_block.norm2"),
    ("out_layers.3", "spatial_res_block.conv2"),
    ("skip_connection", "spatial_res_block.conv_shortcut"),
    ("time_stack.in_layers.0", "temporal_res_block.norm1"),
    ("time_stack.in_layers.2", "temporal_res_block.conv1"),
    ("time_stack.emb_layers.1", "temporal_res_block.time_emb_proj"),
    ("time_stack.out_layers.0", "temporal_res_block.norm2"),
    ("time_stack.out_layers.3", "temporal_res_block.conv2"),
    ("time_mixer.mix_factor", "time_mixer.mix_factor"),
)
# SpatialVideoTransformer -> TransformerSpatioTemporalModel: the spatial part (norm, proj_in,
# transformer_blocks.*, proj_out) and the temporal blocks' inner names are the same on both sides.
_UNET_TRANSFORMER_LEAVES = (
    ("time_stack", "temporal_transformer_blocks"),
    ("time_pos_embed.0", "time_pos_embed.linear_1"),
    ("time_pos_embed.2", "time_pos_embed.linear_2"),
)


@dataclass(frozen=True)
class UNetLayout:
    """What the key mapping needs to know about a UNet: levels, res blocks per level, attention."""

    num_levels: int
    layers_per_block: int
    down_attention: tuple[bool, ...]  # per level, outermost first
    up_attention: tuple[bool, ...]  # per up block, innermost first (diffusers' up_blocks order)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UNetLayout:
        down = tuple(t.startswith("CrossAttn") for t in config["down_block_types"])
        up = tuple(t.startswith("CrossAttn") for t in config["up_block_types"])
        lpb = config["layers_per_block"]
        if not isinstance(lpb, int):
            if len(set(lpb)) != 1:
                raise InputError(f"layers_per_block {lpb}: only one value for all levels is supported")
            lpb = lpb[0]
        return cls(len(down), int(lpb), down, up)


def unet_rules(layout: UNetLayout) -> list[_Rule]:
    """The VideoUNet -> diffusers renaming rules for one layout (reference names on the left)."""
    n, levels = layout.layers_per_block, layout.num_levels
    rules = [
        _Rule("time_embed.0", "time_embedding.linear_1", passthrough=True),
        _Rule("time_embed.2", "time_embedding.linear_2", passthrough=True),
        _Rule("label_emb.0.0", "add_embedding.linear_1", passthrough=True),
        _Rule("label_emb.0.2", "add_embedding.linear_2", passthrough=True),
        _Rule("input_blocks.0.0", "conv_in", passthrough=True),
        _Rule("out.0", "conv_norm_out", passthrough=True),
        _Rule("out.2", "conv_out", passthrough=True),
        _Rule("middle_block.0", "mid_block.resnets.0", _UNET_RESBLOCK_LEAVES),
        _Rule("middle_block.1", "mid_block.attentions.0", _UNET_TRANSFORMER_LEAVES, passthrough=True),
        _Rule("middle_block.2", "mid_block.resnets.1", _UNET_RESBLOCK_LEAVES),
    ]
    # input_blocks: one conv, then per level n (resblock [, transformer]) and a downsampler but last.
    idx = 1
    for level in range(levels):
        for j in range(n):
            rules.append(
                _Rule(f"input_blocks.{idx}.0", f"down_blocks.{level}.resnets.{j}", _UNET_RESBLOCK_LEAVES)
            )
            if layout.down_attention[level]:
                rules.append(
                    _Rule(
                        f"input_blocks.{idx}.1",
                        f"down_blocks.{level}.attentions.{j}",
                        _UNET_TRANSFORMER_LEAVES,
                        passthrough=True,
                    )
                )
            idx += 1
        if level != levels - 1:
            rules.append(
                _Rule(
                    f"input_blocks.{idx}.0.op", f"down_blocks.{level}.downsamplers.0.conv", passthrough=True
                )
            )
            idx += 1
    # output_blocks: per up block (innermost first) n+1 resblocks [+ transformer], upsampler on the last.
    idx = 0
    for b in range(levels):
        attn = layout.up_attention[b]
        for k in range(n + 1):
            rules.append(_Rule(f"output_blocks.{idx}.0", f"up_blocks.{b}.resnets.{k}", _UNET_RESBLOCK_LEAVES))
            if attn:
                rules.append(
                    _Rule(
                        f"output_blocks.{idx}.1",
                        f"up_blocks.{b}.attentions.{k}",
                        _UNET_TRANSFORMER_LEAVES,
                        passthrough=True,
                    )
                )
            if k == n and b != levels - 1:
                up = 2 if attn else 1
                rules.append(
                    _Rule(
                        f"output_blocks.{idx}.{up}.conv", f"up_blocks.{b}.upsamplers.0.conv", passthrough=True
                    )
                )
            idx += 1
    return rules


def _apply_rules(
    state_dict: Mapping[str, torch.Tensor], rules: list[_Rule], what: str
) -> dict[str, torch.Tensor]:
    mapping, unmatched = _rename(state_dict.keys(), rules)
    if unmatched:
        raise InputError(
            f"{what}: {len(unmatched)} key(s) have no place in the converted model, e.g. '{unmatched[0]}'"
        )
    return {mapping[k]: v for k, v in state_dict.items()}


def convert_unet_state_dict(
    ref_state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """sgm VideoUNet state dict (keys without ``model.diffusion_model.``) -> diffusers UNet names.

    Pure renaming: the reference and diffusers modules hold the same tensors with the same shapes
    (linear ``proj_in``/``proj_out`` since SVD uses ``use_linear_in_transformer``; 3-D temporal convs).
    """
    return _apply_rules(ref_state_dict, unet_rules(UNetLayout.from_config(config)), "UNet")


def unet_state_dict_to_reference(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The inverse of `convert_unet_state_dict`: diffusers UNet names -> sgm VideoUNet names."""
    rules = [r.inverted() for r in unet_rules(UNetLayout.from_config(config))]
    return _apply_rules(state_dict, rules, "UNet (to reference)")


# ----------------------------------------------------------------------------------------------------
# UNet config: from the reference YAML (network_config.params) or from tensor shapes
# ----------------------------------------------------------------------------------------------------


def unet_config_from_reference_params(
    params: Mapping[str, Any],
    kind: str | None = None,
    widths: list[int] | None = None,
    num_frames: int | None = None,
    sample_size: int = 72,
) -> tuple[dict[str, Any], str]:
    """sgm ``VideoUNet`` constructor params (the YAML's ``network_config.params``) -> MultiViewUNet kwargs.

    ``attention_resolutions`` are downsampling factors (1 = the first level); ``num_head_channels``
    (SVD: 64) fixes the head count per level, diffusers' ``num_attention_heads`` wants the count.

    Args:
        params: the VideoUNet params.
        kind: conditioning kind ("svd", "sv3d_u", "sv3d_p"); None: from ``adm_in_channels`` (768, 256, 1280).
        widths: sinusoid width per conditioning scalar; None: the reference widths of ``kind``.
        num_frames: the UNet's default frame count; None: 14 for SVD, 21 for SV3D.
        sample_size: latent side recorded in the config (576 px / 8 for the reference models).

    Returns:
        (MultiViewUNet kwargs, conditioning kind).
    """
    try:
        return _unet_config_from_reference_params(params, kind, widths, num_frames, sample_size)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"network_config params lack or mistype a VideoUNet setting ({exc})") from None


#: Bounds of the VideoUNet settings a YAML or the tensor shapes may give (SV3D: 320 channels, mults
#: [1, 2, 4, 4], 2 res blocks, depth 1, context 1024, 64-channel heads); a network past them would take
#: hours to build or terabytes of memory.
_UNET_BOUNDS = {
    "model_channels": 4096,
    "channel_mult": 16,
    "levels": 8,
    "num_res_blocks": 16,
    "transformer_depth": 16,
    "in_channels": 256,
    "out_channels": 256,
    "context_dim": 16384,
    "adm_in_channels": 16384,
    "heads": 1024,
}


def _check_unet_bound(name: str, value: int) -> int:
    if isinstance(value, bool) or not 1 <= value <= _UNET_BOUNDS[name]:
        raise InputError(f"network_config {name} {value}: expected 1 to {_UNET_BOUNDS[name]}")
    return value


def _unet_config_from_reference_params(
    params: Mapping[str, Any],
    kind: str | None,
    widths: list[int] | None,
    num_frames: int | None,
    sample_size: int,
) -> tuple[dict[str, Any], str]:
    # a missing or mistyped setting raises KeyError / TypeError / ValueError: the caller says so in one line
    mc = _check_unet_bound("model_channels", int(params["model_channels"]))
    mult = [_check_unet_bound("channel_mult", int(m)) for m in params["channel_mult"]]
    _check_unet_bound("levels", len(mult))
    n_res = _check_unet_bound("num_res_blocks", int(params["num_res_blocks"]))
    attn_res = {int(a) for a in params.get("attention_resolutions", [])}
    adm = params.get("adm_in_channels")
    context = params["context_dim"]
    context = int(context if isinstance(context, int) else context[0])
    _check_unet_bound("context_dim", context)
    for key in ("in_channels", "out_channels"):
        _check_unet_bound(key, int(params[key]))
    if params.get("num_classes", "sequential") != "sequential" or adm is None:
        raise InputError("network_config: only num_classes 'sequential' with adm_in_channels is supported")
    for key in ("use_linear_in_transformer", "use_spatial_context"):
        if not bool(params.get(key, False)):
            raise InputError(f"network_config: {key} must be true to map onto diffusers' SVD UNet")
    if str(params.get("merge_strategy", "learned_with_images")) != "learned_with_images":
        raise InputError(f"network_config: merge_strategy {params.get('merge_strategy')!r} is not supported")
    if not bool(params.get("extra_ff_mix_layer", True)):
        raise InputError(
            "network_config: extra_ff_mix_layer must be true (diffusers' temporal blocks have ff_in)"
        )
    if list(params.get("video_kernel_size", [3, 1, 1])) != [3, 1, 1]:
        raise InputError(
            f"network_config: video_kernel_size {params.get('video_kernel_size')} is not [3, 1, 1]"
        )
    if kind is None:
        kind = ADM_WIDTH_TO_KIND.get(int(adm))
        if kind is None:
            raise InputError(
                f"adm_in_channels {adm} is none of SVD (768), SV3D_u (256), SV3D_p (1280): the conditioning "
                "cannot be guessed; give the reference YAML as config_yaml",
                mentions=("config_yaml",),
            )
    if kind not in CONDITIONING_KINDS:
        raise InputError(f"conditioning '{kind}': expected one of {sorted(CONDITIONING_KINDS)}")
    widths = list(CONDITIONING_KINDS[kind].widths if widths is None else widths)
    _check_unet_bound("adm_in_channels", int(adm))
    if sum(widths) != int(adm):
        raise InputError(f"embedding widths {widths} do not add up to adm_in_channels {adm}")
    if num_frames is None:
        num_frames = KIND_NUM_FRAMES[kind]
    channels = [mc * m for m in mult]
    head_ch = int(params.get("num_head_channels", -1))
    n_heads = int(params.get("num_heads", -1))
    if head_ch > 0:
        if any(c % head_ch for c in channels):
            raise InputError(
                f"network_config: channels {channels} are not multiples of num_head_channels {head_ch}; "
                "give the reference YAML as config_yaml",
                mentions=("config_yaml",),
            )
        heads = [c // head_ch for c in channels]
    elif n_heads > 0:
        heads = [n_heads] * len(channels)
    else:
        raise InputError("network_config: neither num_head_channels nor num_heads is set")
    for h in heads:
        _check_unet_bound("heads", h)
    depth = params.get("transformer_depth", 1)
    depth = [int(depth)] * len(channels) if isinstance(depth, int) else [int(d) for d in depth]
    if len(depth) != len(channels):
        raise InputError(
            f"network_config transformer_depth {depth}: expected one depth or one per level ({len(channels)})"
        )
    for d in depth:
        _check_unet_bound("transformer_depth", d)
    if params.get("transformer_depth_middle") not in (None, depth[-1]):
        raise InputError("network_config: transformer_depth_middle different from the last level's depth")
    down_attn = [2**level in attn_res for level in range(len(channels))]
    config = {
        "sample_size": sample_size,
        "in_channels": int(params["in_channels"]),
        "out_channels": int(params["out_channels"]),
        "down_block_types": [
            "CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in down_attn
        ],
        "up_block_types": [
            "CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(down_attn)
        ],
        "block_out_channels": channels,
        "layers_per_block": n_res,
        "cross_attention_dim": context,
        "transformer_layers_per_block": depth,
        "num_attention_heads": heads,
        "num_frames": int(num_frames),
        "projection_class_embeddings_input_dim": int(adm),
        "addition_time_embed_dims": widths,
        "per_frame_conditioning": CONDITIONING_KINDS[kind].per_frame,
        # sgm's `normalization()` GroupNorms use eps 1e-5 in every res block.
        "resnet_norm_eps": 1e-5,
    }
    return config, kind


def reference_params_from_shapes(ref_state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Recover the VideoUNet constructor params that matter for the mapping from tensor shapes.

    Head counts are not visible in the weights (q/k/v are square); like every SVD/SV3D network the
    result assumes 64-channel heads. Keys are without the ``model.diffusion_model.`` prefix.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in ref_state_dict:
            raise InputError(f"UNet: missing key 'model.diffusion_model.{key}' (needed to infer the config)")
        return tuple(ref_state_dict[key].shape)

    mc, in_ch = shape("input_blocks.0.0.weight")[:2]
    out_ch = shape("out.2.weight")[0]
    adm = shape("label_emb.0.0.weight")[1]
    blocks: dict[int, set[str]] = {}
    for key in ref_state_dict:
        m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(\w+)", key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(f"{m.group(2)}.{m.group(3)}")
    down_idx = sorted(i for i, names in blocks.items() if "0.op" in names)
    n_blocks = max(blocks) if blocks else 0  # excluding input_blocks.0
    levels = len(down_idx) + 1
    if n_blocks == 0 or (n_blocks - len(down_idx)) % levels:
        raise InputError("UNet: the input_blocks do not form levels of equal length")
    n_res = (n_blocks - len(down_idx)) // levels
    mult, attn_res, depth = [], [], []
    context = None
    for level in range(levels):
        first = 1 + level * (n_res + 1)
        mult.append(shape(f"input_blocks.{first}.0.out_layers.3.weight")[0] // mc)
        if "1.proj_in" in blocks.get(first, set()):
            attn_res.append(2**level)
            d = {
                int(m.group(1))
                for k in ref_state_dict
                if (m := re.match(rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.", k))
            }
            depth.append(len(d))
            context = shape(f"input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight")[1]
        else:
            depth.append(1)
    if context is None:
        context = shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1]
    return {
        "in_channels": in_ch,
        "out_channels": out_ch,
        "model_channels": mc,
        "channel_mult": mult,
        "num_res_blocks": n_res,
        "attention_resolutions": attn_res,
        "num_head_channels": 64,
        "transformer_depth": depth,
        "context_dim": context,
        "adm_in_channels": adm,
        "num_classes": "sequential",
        "use_linear_in_transformer": True,
        "use_spatial_context": True,
        "merge_strategy": "learned_with_images",
        "extra_ff_mix_layer": True,
        "video_kernel_size": [3, 1, 1],
    }


# ----------------------------------------------------------------------------------------------------
# VAE: LDM Encoder / Decoder / VideoDecoder (sgm) <-> diffusers AutoencoderKL / AutoencoderKLTemporalDecoder
# ----------------------------------------------------------------------------------------------------

_VAE_RESNET_LEAVES = (
    ("norm1", "norm1"),
    ("conv1", "conv1"),
    ("norm2", "norm2"),
    ("conv2", "conv2"),
    ("nin_shortcut", "conv_shortcut"),
)
# temporal_ae.VideoResBlock: the LDM ResnetBlock, a 3-D openaimodel.ResBlock (time_stack) and a learned
# mix factor -> diffusers SpatioTemporalResBlock.
_VAE_VIDEO_RESNET_LEAVES = tuple((a, f"spatial_res_block.{b}") for a, b in _VAE_RESNET_LEAVES) + (
    ("time_stack.in_layers.0", "temporal_res_block.norm1"),
    ("time_stack.in_layers.2", "temporal_res_block.conv1"),
    ("time_stack.out_layers.0", "temporal_res_block.norm2"),
    ("time_stack.out_layers.3", "temporal_res_block.conv2"),
    ("mix_factor", "time_mixer.mix_factor"),
)
# The LDM AttnBlock holds 1x1 convs; diffusers' Attention holds linears (same numbers, 2 dims fewer).
_VAE_ATTN_LEAVES = (
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
)
_VAE_ATTN_WEIGHT = re.compile(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def vae_rules(num_levels: int, layers_per_block: int, temporal: bool) -> list[_Rule]:
    """LDM autoencoder -> diffusers renaming rules (keys ``encoder.*``, ``decoder.*``, ``quant_conv.*``...)."""
    dec_res = _VAE_VIDEO_RESNET_LEAVES if temporal else _VAE_RESNET_LEAVES
    rules = [
        _Rule("quant_conv", "quant_conv", passthrough=True),
        _Rule("post_quant_conv", "post_quant_conv", passthrough=True),
    ]
    for side, res in (("encoder", _VAE_RESNET_LEAVES), ("decoder", dec_res)):
        rules += [
            _Rule(f"{side}.conv_in", f"{side}.conv_in", passthrough=True),
            _Rule(f"{side}.norm_out", f"{side}.conv_norm_out", passthrough=True),
            _Rule(f"{side}.conv_out", f"{side}.conv_out", passthrough=True),
            _Rule(f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", res),
            _Rule(f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", res),
            _Rule(f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0", _VAE_ATTN_LEAVES),
        ]
    if temporal:
        # AE3DConv: the 2-D output conv followed by a 3-D conv over time.
        rules.append(_Rule("decoder.conv_out.time_mix_conv", "decoder.time_conv_out", passthrough=True))
    for i in range(num_levels):
        for j in range(layers_per_block):
            rules.append(
                _Rule(
                    f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", _VAE_RESNET_LEAVES
                )
            )
        if i != num_levels - 1:
            rules.append(
                _Rule(
                    f"encoder.down.{i}.downsample.conv",
                    f"encoder.down_blocks.{i}.downsamplers.0.conv",
                    passthrough=True,
                )
            )
        # The LDM decoder numbers its levels by resolution (up.0 = full size); diffusers in execution order.
        level = num_levels - 1 - i
        for j in range(layers_per_block + 1):
            rules.append(
                _Rule(f"decoder.up.{level}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", dec_res)
            )
        if level != 0:
            rules.append(
                _Rule(
                    f"decoder.up.{level}.upsample.conv",
                    f"decoder.up_blocks.{i}.upsamplers.0.conv",
                    passthrough=True,
                )
            )
    return rules


def _vae_layout(config: Mapping[str, Any]) -> tuple[int, int]:
    return len(config["block_out_channels"]), int(config["layers_per_block"])


def convert_vae_state_dict(
    ref_state_dict: Mapping[str, torch.Tensor], vae_type: str, config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """LDM autoencoder state dict (``encoder.*``, ``quant_conv.*``, ``decoder.*``, ``post_quant_conv.*``)
    -> diffusers ``AutoencoderKL`` ("image") or ``AutoencoderKLTemporalDecoder`` ("temporal") names."""
    levels, n = _vae_layout(config)
    out = _apply_rules(ref_state_dict, vae_rules(levels, n, vae_type == "temporal"), "VAE")
    return {k: (v.reshape(v.shape[:2]) if _VAE_ATTN_WEIGHT.search(k) else v) for k, v in out.items()}


def vae_state_dict_to_reference(
    state_dict: Mapping[str, torch.Tensor], vae_type: str, config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The inverse of `convert_vae_state_dict` (attention linears back to 1x1 convs)."""
    levels, n = _vae_layout(config)
    sd = {k: (v.reshape(*v.shape, 1, 1) if _VAE_ATTN_WEIGHT.search(k) else v) for k, v in state_dict.items()}
    rules = [r.inverted() for r in vae_rules(levels, n, vae_type == "temporal")]
    return _apply_rules(sd, rules, "VAE (to reference)")


def vae_config_from_reference(
    ref_state_dict: Mapping[str, torch.Tensor], sample_size: int = 576, scaling_factor: float = LATENT_SCALE
) -> tuple[str, dict[str, Any]]:
    """(vae type, diffusers kwargs) of an LDM autoencoder state dict, from its tensor shapes.

    "temporal" when the decoder has SVD's time-mixing layers (``time_stack``, ``time_mix_conv``).
    """
    sd = ref_state_dict

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise InputError(f"VAE: missing key '{key}'")
        return tuple(sd[key].shape)

    ch = shape("decoder.conv_out.weight")[1]
    levels = len({int(m.group(1)) for k in sd if (m := re.match(r"decoder\.up\.(\d+)\.", k))})
    if levels == 0:
        raise InputError("VAE: the decoder has no up-sampling levels ('decoder.up.*')")
    n = len({int(m.group(1)) for k in sd if (m := re.match(r"decoder\.up\.0\.block\.(\d+)\.", k))}) - 1
    channels = [shape(f"decoder.up.{i}.block.0.conv2.weight")[0] for i in range(levels)]
    z = shape("decoder.conv_in.weight")[1]
    temporal = any(".time_stack." in k or "time_mix_conv" in k for k in sd if k.startswith("decoder."))
    config: dict[str, Any] = {
        "in_channels": shape("encoder.conv_in.weight")[1],
        "out_channels": shape("decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "block_out_channels": channels,
        "layers_per_block": n,
        "latent_channels": z,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
    }
    if ch != channels[0]:
        raise InputError(f"VAE: decoder output width {ch} differs from its first level's {channels[0]}")
    if temporal:
        if n != 2:
            # diffusers' TemporalDecoder gives its mid block `layers_per_block` resnets; the LDM has 2.
            raise InputError(f"VAE: a temporal decoder with {n} res blocks per level (diffusers needs 2)")
        return "temporal", config
    config["up_block_types"] = ["UpDecoderBlock2D"] * levels
    config["use_quant_conv"] = "quant_conv.weight" in sd
    config["use_post_quant_conv"] = "post_quant_conv.weight" in sd
    return "image", config


# ----------------------------------------------------------------------------------------------------
# Image encoder: OpenCLIP VisionTransformer <-> transformers CLIPVisionModelWithProjection
# ----------------------------------------------------------------------------------------------------

_CLIP_RULES = [
    _Rule("conv1", "vision_model.embeddings.patch_embedding", passthrough=True),
    _Rule("class_embedding", "vision_model.embeddings.class_embedding", passthrough=True),
    _Rule("positional_embedding", "vision_model.embeddings.position_embedding.weight", passthrough=True),
    _Rule("ln_pre", "vision_model.pre_layrnorm", passthrough=True),  # transformers' spelling
    _Rule("ln_post", "vision_model.post_layernorm", passthrough=True),
    _Rule("proj", "visual_projection.weight", passthrough=True),  # transposed: OpenCLIP computes x @ proj
]
_CLIP_LAYER_LEAVES = (
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("attn.out_proj", "self_attn.out_proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
)
_QKV = ("q_proj", "k_proj", "v_proj")


def _clip_rules(num_layers: int) -> list[_Rule]:
    return _CLIP_RULES + [
        _Rule(f"transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}", _CLIP_LAYER_LEAVES)
        for i in range(num_layers)
    ]


def clip_config_from_reference(
    ref_state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None
) -> dict:
    """``CLIPVisionConfig`` kwargs of an OpenCLIP visual tower, from its tensor shapes.

    The head count is not visible in the weights: OpenCLIP's ViT-H/14 (width 1280) has 80-channel heads
    (16 heads), its other ViTs 64-channel heads; ``num_heads`` overrides.
    """
    sd = ref_state_dict
    for key in ("conv1.weight", "positional_embedding", "proj", "transformer.resblocks.0.mlp.c_fc.weight"):
        if key not in sd:
            raise InputError(f"image encoder: missing key '{key}' of the OpenCLIP visual tower")
    width, _, patch, _ = sd["conv1.weight"].shape
    grid = round((sd["positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len({int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    if num_heads is None:
        num_heads = 16 if width == 1280 else max(1, width // 64)
    return {
        "hidden_size": int(width),
        "intermediate_size": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_attention_heads": int(num_heads),
        "num_hidden_layers": layers,
        "patch_size": int(patch),
        "image_size": int(patch * grid),
        "projection_dim": int(sd["proj"].shape[1]),
        "hidden_act": "gelu",  # OpenCLIP uses exact GELU (transformers' default is quick_gelu)
        "layer_norm_eps": 1e-5,
    }


def convert_clip_state_dict(ref_state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict:
    """OpenCLIP visual state dict (keys after ``...open_clip.model.visual.``) -> transformers names.

    ``attn.in_proj_weight`` / ``in_proj_bias`` (q, k, v stacked on dim 0, as ``nn.MultiheadAttention``)
    are split into ``q_proj`` / ``k_proj`` / ``v_proj``; ``proj`` (width, dim) is transposed.
    """
    sd = dict(ref_state_dict)
    out: dict[str, torch.Tensor] = {}
    for key in [k for k in sd if ".attn.in_proj_" in k]:
        m = re.match(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", key)
        if m is None:
            raise InputError(f"image encoder: unexpected key '{key}'")
        tensor = sd.pop(key)
        if tensor.shape[0] % 3:
            raise InputError(f"image encoder: '{key}' has {tensor.shape[0]} rows, expected 3 x width")
        for name, part in zip(_QKV, tensor.chunk(3, dim=0), strict=True):
            out[f"vision_model.encoder.layers.{m.group(1)}.self_attn.{name}.{m.group(2)}"] = part.contiguous()
    renamed = _apply_rules(sd, _clip_rules(int(config["num_hidden_layers"])), "image encoder")
    if "visual_projection.weight" in renamed:
        renamed["visual_projection.weight"] = renamed["visual_projection.weight"].t().contiguous()
    out.update(renamed)
    return out


def clip_state_dict_to_reference(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict:
    """The inverse of `convert_clip_state_dict` (q/k/v stacked back into ``in_proj``)."""
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for i in range(int(config["num_hidden_layers"])):
        for kind in ("weight", "bias"):
            names = [f"vision_model.encoder.layers.{i}.self_attn.{n}.{kind}" for n in _QKV]
            if all(n in sd for n in names):
                out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([sd.pop(n) for n in names])
    if "visual_projection.weight" in sd:
        sd["visual_projection.weight"] = sd["visual_projection.weight"].t().contiguous()
    out.update(
        _apply_rules(
            sd, [r.inverted() for r in _clip_rules(int(config["num_hidden_layers"]))], "image encoder"
        )
    )
    return out


# ----------------------------------------------------------------------------------------------------
# Reading checkpoints (safetensors only) and the reference YAML
# ----------------------------------------------------------------------------------------------------

_PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}


class Checkpoint:
    """A safetensors file opened lazily: key names at once, tensors on demand (a full SV3D file is 9 GB).

    Every problem is an `InputError` naming the file: missing, pickle-based, not safetensors, truncated.
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such checkpoint file")
        if self.path.suffix.lower() in _PICKLE_SUFFIXES:
            raise InputError(
                f"{self.path}: pickle-based checkpoints ({self.path.suffix}) are not loaded, as unpickling can run "
                "code; use the .safetensors release of the model"
            )
        self._check_size()
        try:
            self._file = safe_open(str(self.path), framework="pt", device="cpu")
            self.keys = list(self._file.keys())
        except Exception as exc:  # safetensors raises its own error types (SafetensorError, OSError...)
            raise InputError(f"{self.path}: not a readable safetensors file ({_first_line(exc)})") from exc

    def _check_size(self) -> None:
        """A truncated download: the header names byte ranges past the end of the file."""
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                if not 0 < header_len <= min(size - 8, 100_000_000):
                    raise ValueError(f"header length {header_len} does not fit a {size}-byte file")
                header = json.loads(fh.read(header_len))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise InputError(f"{self.path}: not a readable safetensors file ({_first_line(exc)})") from exc
        if 8 + header_len + end > size:
            raise InputError(
                f"{self.path}: truncated file ({size} bytes, its header describes {8 + header_len + end} bytes)"
            )

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._file.get_tensor(key)
        except Exception as exc:
            raise InputError(f"{self.path}: cannot read tensor '{key}' ({_first_line(exc)})") from exc

    def group(self, prefix: str, progress: bool = False) -> dict[str, torch.Tensor]:
        """All tensors under ``prefix``, with the prefix removed (a progress bar if ``progress``)."""
        from tqdm.auto import tqdm

        keys = [k for k in self.keys if k.startswith(prefix)]
        bar = tqdm(keys, desc=f"reading {prefix}*", unit="tensor", disable=not progress or len(keys) < 50)
        return {k[len(prefix) :]: self.get(k) for k in bar}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: Bound on a reference YAML's size (Stability's inference YAMLs are about 5 kB); a checkpoint given as
#: ``--config`` by mistake is refused from its size instead of being read into memory.
MAX_REFERENCE_YAML_BYTES = 1 << 20


def read_reference_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The parts of an sgm inference YAML the converter uses (configs/inference/sv3d_p.yaml layout).

    Returns:
        ``{"network": VideoUNet params, "kind": conditioning kind or None, "widths": [...] or None}``:
        the kind and the per-scalar widths come from the conditioner's ``ConcatTimestepEmbedderND``
        embedders (input keys and ``outdim``), in the order the conditioner concatenates them.
    """
    import yaml

    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REFERENCE_YAML_BYTES and path.is_file():
            raise InputError(
                f"{path}: {size} bytes: expected an sgm inference YAML (a few kB, at most "
                f"{MAX_REFERENCE_YAML_BYTES} bytes)"
            )
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the config ({_first_line(exc)})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not a text file ({_first_line(exc)}): expected an sgm inference YAML"
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({_first_line(exc)})") from exc
    try:
        model = doc["model"]["params"]
        network = dict(model["network_config"]["params"])
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: no model.params.network_config.params (expected an sgm inference YAML)"
        ) from exc
    scalars: list[tuple[str, int]] = []
    try:
        emb_models = ((model.get("conditioner_config") or {}).get("params") or {}).get("emb_models") or []
        for emb in emb_models:
            if str(emb.get("target", "")).endswith("ConcatTimestepEmbedderND"):
                outdim = int((emb.get("params") or {}).get("outdim", 256))
                scalars.append((str(emb.get("input_key")), _check_unet_bound("adm_in_channels", outdim)))
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise InputError(f"{path}: conditioner_config: {exc}") from None
        raise InputError(
            f"{path}: conditioner_config.params.emb_models: expected a list of embedders with "
            f"'target', 'input_key' and a numeric params.outdim ({exc})"
        ) from None
    kind = widths = None
    if scalars:
        keys = tuple(k for k, _ in scalars)
        for name, ck in CONDITIONING_KINDS.items():
            # the reference's names for the camera scalars are plural (polars_rad, azimuths_rad)
            if (
                tuple(
                    s.replace("polar_rad", "polars_rad").replace("azimuth_rad", "azimuths_rad")
                    for s in ck.scalars
                )
                == keys
            ):
                kind = name
        if kind is None:
            raise InputError(
                f"{path}: conditioning scalars {list(keys)} match none of {sorted(CONDITIONING_KINDS)}"
            )
        widths = [w for _, w in scalars]
    return {"network": network, "kind": kind, "widths": widths}


# ----------------------------------------------------------------------------------------------------
# The whole file -> a model folder
# ----------------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ConversionReport:
    """What a conversion took from where, what it left out and why (also written as JSON next to the model).

    Attributes:
        source: the checkpoint file.
        out_dir: the model folder written.
        conditioning: "svd", "sv3d_u" or "sv3d_p".
        config_from: "yaml: <path>" or "tensor shapes".
        parts: part ("unet", "image_encoder", "vae.encoder", "vae.decoder") -> where it came from.
        ignored: groups of checkpoint keys not converted, with the reason.
        notes: anything a user should know (substitutions, differences found).
    """

    source: str
    out_dir: str
    conditioning: str
    config_from: str
    parts: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        lines = [
            f"converted {self.source} ({self.conditioning}, config from {self.config_from}) -> {self.out_dir}"
        ]
        lines += [f"  {part:14s} <- {src}" for part, src in self.parts.items()]
        lines += [f"  ignored: {item}" for item in self.ignored]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _group_keys(keys: list[str]) -> dict[str, list[str]]:
    """Sort checkpoint keys by the part they belong to (prefix -> keys)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key.startswith(UNET_PREFIX):
            prefix = UNET_PREFIX
        elif key.startswith(FIRST_STAGE_PREFIX):
            prefix = FIRST_STAGE_PREFIX
        elif m := _EMBEDDER_RE.match(key):
            rest = key[m.end() :]
            if rest.startswith(_CLIP_VISUAL):
                prefix = m.group(0) + _CLIP_VISUAL
            elif rest.startswith(_COND_VAE):
                prefix = m.group(0) + _COND_VAE
            elif rest.startswith("open_clip.model."):
                prefix = m.group(0) + "open_clip.model."
            else:
                prefix = m.group(0)
        else:
            prefix = key.split(".", 1)[0] + "."
        groups.setdefault(prefix, []).append(key)
    return groups


def _load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """Assign converted tensors to a module built on the meta device; every key and shape is checked."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise InputError(
            f"{source}: {what} lacks {len(missing)} tensor(s) the model needs, e.g. '{missing[0]}'"
        )
    if unexpected:
        raise InputError(
            f"{source}: {what} has {len(unexpected)} tensor(s) with no place, e.g. '{unexpected[0]}'"
        )
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise InputError(
                f"{source}: {what} tensor '{key}' has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[key].shape)}"
            )
    # Popping while casting keeps one copy of each tensor alive at a time (a full UNet is 6 GB in fp32).
    weights = {k: state_dict.pop(k).to(torch.float32) for k in list(state_dict)}
    module.load_state_dict(weights, strict=True, assign=True)


def _build_empty(factory) -> torch.nn.Module:
    """Build a module with its parameters on the meta device (no memory, no random init: 1.5 B params)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def _vae_encoder_from(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """LDM-named ``encoder.*`` (+ ``quant_conv.*``) from another Stability file or a diffusers VAE folder."""
    if path.is_dir():
        cfg_file, weights = path / "config.json", path / "diffusion_pytorch_model.safetensors"
        if not cfg_file.is_file() or not weights.is_file():
            raise InputError(
                f"{path}: expected a diffusers VAE folder (config.json + diffusion_pytorch_model.safetensors)"
            )
        try:
            cfg = json.loads(cfg_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{cfg_file}: not valid JSON ({exc})") from exc
        if not isinstance(cfg, dict):
            raise InputError(
                f"{cfg_file}: a {type(cfg).__name__}: expected a diffusers VAE config (a JSON object)"
            )
        ckpt = Checkpoint(weights)
        sd = {k: ckpt.get(k) for k in ckpt.keys if k.startswith(("encoder.", "quant_conv."))}
        if not sd:
            raise InputError(f"{weights}: no VAE encoder tensors ('encoder.*')")
        try:
            ref = vae_state_dict_to_reference(sd, "image", cfg)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, InputError):
                raise InputError(f"{path}: {exc}") from None
            raise InputError(
                f"{cfg_file}: lacks or mistypes a VAE setting ({_first_line(exc)}): expected a diffusers "
                "AutoencoderKL config (block_out_channels, layers_per_block)"
            ) from None
        return ref, f"{path} (diffusers VAE encoder)"
    ckpt = Checkpoint(path)
    groups = _group_keys(ckpt.keys)
    for prefix in sorted(p for p in groups if p.endswith(_COND_VAE)) + [FIRST_STAGE_PREFIX]:
        sd = {k: v for k, v in ckpt.group(prefix).items() if k.startswith(("encoder.", "quant_conv."))}
        if "encoder.conv_in.weight" in sd:
            return sd, f"{path}: {prefix}encoder.*"
    raise InputError(
        f"{path}: holds no VAE encoder (no '*encoder.encoder.*' or 'first_stage_model.encoder.*' keys)"
    )


def convert_checkpoint(
    ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    config_yaml: str | os.PathLike | None = None,
    vae_from: str | os.PathLike | None = None,
    num_frames: int | None = None,
    resolution: int = 576,
    dtype: str = "float32",
    clip_num_heads: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert a Stability single-file checkpoint into a model folder `video_prior.components` loads.

    Args:
        ckpt: ``*.safetensors`` of SVD, SVD-XT, SV3D_u or SV3D_p (keys ``model.diffusion_model.*``,
            ``conditioner.embedders.*``, ``first_stage_model.*``).
        out_dir: the model folder to write (replaced atomically if it exists).
        config_yaml: the reference inference YAML (configs/inference/sv3d_p.yaml ...); None: the UNet
            config is inferred from tensor shapes (64-channel heads) and the conditioning kind from the
            vector width (768 SVD, 256 SV3D_u, 1280 SV3D_p).
        vae_from: where to take the VAE encoder from instead of the checkpoint: another Stability file
            (its conditioning VAE or first stage) or a diffusers VAE folder.
        num_frames: the UNet's default frame count (None: 21 for SV3D, 14 for SVD; an SVD-XT file has
            SVD's shapes, so give 25 for it).
        resolution: image side the model works at (576 for all reference models).
        dtype: "float32" (lossless for the fp16 releases), "float16" or "bfloat16" for the saved weights.
        clip_num_heads: attention heads of the image encoder (None: 16 for ViT-H/14, else width / 64).
        progress: show progress bars while tensors are read (a full file holds about 2300).
        overwrite: replace an existing `out_dir` that is not a converted model (mv3d otherwise replaces
            only its own output: `render.common.check_output`).

    Returns:
        a `ConversionReport` (also written to ``out_dir/conversion_report.json``).
    """
    from render.common import MAX_IMAGE_SIDE, MAX_VIEWS, atomic_write_json, check_output, check_range
    from video_prior.components import VAE_TYPES, ModelInfo, save_components, sv3d_config

    check_output(out_dir, "convert-weights", overwrite, field="out_dir")

    if dtype not in _DTYPES:
        raise InputError(f"dtype '{dtype}': expected one of {sorted(_DTYPES)}", field="dtype")
    if num_frames is not None:
        check_range("num_frames", num_frames, 1, MAX_VIEWS, "a frame count")
    # as `mv3d convert-weights --resolution`: from Python any side was written into the model's info
    check_range("resolution", resolution, 8, MAX_IMAGE_SIDE, "pixels")
    if not isinstance(resolution, numbers.Integral) or resolution % 8:
        raise InputError(f"resolution {resolution}: expected a positive multiple of 8", field="resolution")
    # the YAML first: a wrong one is told before gigabytes of tensors are read
    ref_cfg = read_reference_yaml(config_yaml) if config_yaml is not None else None
    source = Path(ckpt)
    ck = Checkpoint(source)
    groups = _group_keys(ck.keys)
    if UNET_PREFIX not in groups:
        raise InputError(
            f"{source}: not a Stability SVD/SV3D checkpoint (no '{UNET_PREFIX}*' keys among {len(ck.keys)} tensors)"
        )

    # 1. configs: UNet from the YAML or from shapes; conditioning kind and widths
    ref_unet = ck.group(UNET_PREFIX, progress)
    if ref_cfg is not None:
        params, kind, widths = ref_cfg["network"], ref_cfg["kind"], ref_cfg["widths"]
        config_from = f"yaml: {config_yaml}"
    else:
        params, kind, widths = reference_params_from_shapes(ref_unet), None, None
        config_from = "tensor shapes"
    clip_prefixes = sorted(p for p in groups if p.endswith(_CLIP_VISUAL))
    cond_vae_prefixes = sorted(p for p in groups if p.endswith(_COND_VAE))
    first_stage = ck.group(FIRST_STAGE_PREFIX, progress) if FIRST_STAGE_PREFIX in groups else {}

    # 2. VAE state dict in LDM names: decoder from the first stage, encoder from the conditioning VAE
    # (what the reference encodes the input view with), else the first stage, else --vae-from.
    report_parts: dict[str, str] = {}
    notes: list[str] = []
    decoder = {k: v for k, v in first_stage.items() if k.startswith(("decoder.", "post_quant_conv."))}
    if "decoder.conv_in.weight" not in decoder:
        raise InputError(
            f"{source}: no first-stage decoder ('{FIRST_STAGE_PREFIX}decoder.*'): frames cannot be decoded"
        )
    report_parts["vae.decoder"] = f"{FIRST_STAGE_PREFIX}decoder.*"
    encoder: dict[str, torch.Tensor] = {}
    if vae_from is not None:
        encoder, where = _vae_encoder_from(Path(vae_from))
        report_parts["vae.encoder"] = where
    else:
        for prefix in cond_vae_prefixes:
            sd = {k: v for k, v in ck.group(prefix).items() if k.startswith(("encoder.", "quant_conv."))}
            if "encoder.conv_in.weight" in sd:
                encoder = sd
                report_parts["vae.encoder"] = f"{prefix}encoder.* (the conditioning VAE)"
                break
        fs_encoder = {k: v for k, v in first_stage.items() if k.startswith(("encoder.", "quant_conv."))}
        if encoder and "encoder.conv_in.weight" in fs_encoder:
            same = all(
                k in encoder and torch.equal(encoder[k], v)
                for k, v in fs_encoder.items()
                if k.startswith("encoder.")
            )
            notes.append(
                "the first-stage encoder is "
                + ("identical to" if same else "DIFFERENT from")
                + " the conditioning VAE's encoder; the conditioning one is used (it encodes the input view)"
            )
        elif "encoder.conv_in.weight" in fs_encoder:
            encoder = fs_encoder
            report_parts["vae.encoder"] = f"{FIRST_STAGE_PREFIX}encoder.*"
    if not encoder:
        raise InputError(
            f"{source}: holds no VAE encoder (SV3D files keep it in 'conditioner.embedders.<k>.encoder.*'); "
            "give vae_from: an SVD/SV3D .safetensors file or a diffusers VAE folder",
            mentions=("vae_from",),
        )
    vae_ref = {**encoder, **decoder}
    vae_type, vae_kwargs = vae_config_from_reference(vae_ref, sample_size=resolution)
    if vae_type == "temporal" and "quant_conv.weight" not in vae_ref:
        # AutoencoderKLTemporalDecoder always applies quant_conv; the identity keeps the encoder's moments.
        z2 = vae_ref["encoder.conv_out.weight"].shape[0]
        vae_ref["quant_conv.weight"] = torch.eye(z2).reshape(z2, z2, 1, 1)
        vae_ref["quant_conv.bias"] = torch.zeros(z2)
        notes.append("the encoder has no quant_conv: an identity 1x1 conv stands in for it")
    if vae_type == "temporal" and "post_quant_conv.weight" in vae_ref:
        # diffusers' temporal-decoder VAE has no post_quant_conv (SVD's first stage has none either).
        raise InputError(f"{source}: a temporal (SVD) decoder with a post_quant_conv cannot be represented")
    vae_factor = 2 ** (len(vae_kwargs["block_out_channels"]) - 1)

    # 3. the three networks, built empty and filled with checked tensors
    try:
        unet_config, kind = unet_config_from_reference_params(
            params, kind=kind, widths=widths, num_frames=num_frames, sample_size=resolution // vae_factor
        )
    except InputError as exc:
        raise InputError(f"{config_yaml if config_yaml is not None else source}: {exc}") from None
    from video_prior.unet import MultiViewUNet

    unet = _build_empty(lambda: MultiViewUNet(**unet_config))
    try:
        unet_sd = convert_unet_state_dict(ref_unet, unet_config)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from exc
    report_parts["unet"] = f"{UNET_PREFIX}* ({len(ref_unet)} tensors)"
    del ref_unet  # the file's tensors are held once, by unet_sd, until they are in the model
    _load_into(unet, unet_sd, "UNet", source)
    del unet_sd

    if not clip_prefixes:
        raise InputError(
            f"{source}: no OpenCLIP image encoder ('conditioner.embedders.<k>.{_CLIP_VISUAL}*'); "
            "SVD/SV3D files hold one: is this a different model?"
        )
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    ref_clip = ck.group(clip_prefixes[0], progress)
    clip_kwargs = clip_config_from_reference(ref_clip, clip_num_heads)
    image_encoder = _build_empty(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_kwargs)))
    try:
        clip_sd = convert_clip_state_dict(ref_clip, clip_kwargs)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from exc
    report_parts["image_encoder"] = f"{clip_prefixes[0]}* ({len(ref_clip)} tensors)"
    del ref_clip
    _load_into(image_encoder, clip_sd, "image encoder", source)
    if clip_kwargs["projection_dim"] != unet_config["cross_attention_dim"]:
        raise InputError(
            f"{source}: image embedding width {clip_kwargs['projection_dim']} != UNet context width "
            f"{unet_config['cross_attention_dim']}"
        )

    vae = _build_empty(lambda: VAE_TYPES[vae_type](**vae_kwargs))
    hint = "" if vae_from is None else f" (its encoder from vae_from {vae_from})"
    try:
        vae_sd = convert_vae_state_dict(vae_ref, vae_type, vae_kwargs)
    except InputError as exc:
        raise InputError(f"{source}: {exc}{hint}") from exc
    _load_into(vae, vae_sd, f"VAE{hint}", source)

    # 4. what was left out
    used = {UNET_PREFIX, FIRST_STAGE_PREFIX, clip_prefixes[0], *cond_vae_prefixes}
    ignored = []
    for prefix, keys in sorted(groups.items()):
        if prefix in used:
            continue
        reason = "not part of the image-to-views model"
        if prefix.endswith("open_clip.model."):
            reason = "OpenCLIP text-tower leftovers (unused by an image encoder)"
        elif prefix.endswith(_CLIP_VISUAL):
            reason = "a second image encoder (the first one is used)"
        ignored.append(f"{prefix}* ({len(keys)} tensors): {reason}")
    cond_decoder = any(k.startswith(p + "decoder.") for p in cond_vae_prefixes for k in groups[p])
    if cond_decoder:
        ignored.append("the conditioning VAE's decoder: frames are decoded with the first-stage decoder")

    # 5. write the folder (diffusers layout + mv3d_model.json)
    info_fields = sv3d_config(kind)["info"]
    info_fields.update(
        {
            "conditioning": kind,
            "vae_type": vae_type,
            "resolution": resolution,
            "num_frames": unet_config["num_frames"],
            "notes": f"converted by mv3d convert-weights from {source.name}",
        }
    )
    info = ModelInfo.from_dict(info_fields, "converted model info")
    components = {"unet": unet, "vae": vae, "image_encoder": image_encoder}
    for module in components.values():
        module.eval()
        if _DTYPES[dtype] != torch.float32:
            module.to(_DTYPES[dtype])
    out = save_components(components, info, out_dir, command="convert-weights", overwrite=overwrite)
    report = ConversionReport(str(source), str(out), kind, config_from, report_parts, ignored, notes)
    atomic_write_json(Path(out) / "conversion_report.json", report.to_dict())
    return report
