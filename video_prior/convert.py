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
what the tests (and ``bench/check_reference.py``) use to lay a random mv3d network out with the
reference key names. Nothing here unpickles: checkpoints are read with ``safetensors`` only.

The mapping follows the module structure of Stability-AI/generative-models
(``sgm/modules/diffusionmodules/video_model.py``, ``video_attention.py``, ``openaimodel.py``,
``model.py``, ``autoencoding/temporal_ae.py``) and of diffusers' ``UNetSpatioTemporalConditionModel``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from render.common import InputError
from video_prior.conditioning import CONDITIONING_KINDS

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
_EMBEDDER_RE = re.compile(r"^conditioner\.embedders\.(\d+)\.")
_CLIP_VISUAL = "open_clip.model.visual."
_COND_VAE = "encoder."

# Conditioning kind from the width of the vector conditioning (label_emb input); SV3D.md "Network".
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
        mc = int(params["model_channels"])
        mult = [int(m) for m in params["channel_mult"]]
        n_res = int(params["num_res_blocks"])
        attn_res = {int(a) for a in params.get("attention_resolutions", [])}
        adm = params.get("adm_in_channels")
        context = params["context_dim"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"network_config params lack or mistype a VideoUNet setting ({exc})") from exc
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
                "cannot be guessed; give the reference YAML with --config"
            )
    if kind not in CONDITIONING_KINDS:
        raise InputError(f"conditioning '{kind}': expected one of {sorted(CONDITIONING_KINDS)}")
    widths = list(CONDITIONING_KINDS[kind].widths if widths is None else widths)
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
                "give the reference YAML with --config"
            )
        heads = [c // head_ch for c in channels]
    elif n_heads > 0:
        heads = [n_heads] * len(channels)
    else:
        raise InputError("network_config: neither num_head_channels nor num_heads is set")
    depth = params.get("transformer_depth", 1)
    depth = [int(depth)] * len(channels) if isinstance(depth, int) else [int(d) for d in depth]
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
        "cross_attention_dim": int(context if isinstance(context, int) else context[0]),
        "transformer_layers_per_block": depth,
        "num_attention_heads": heads,
        "num_frames": int(num_frames),
        "projection_class_embeddings_input_dim": int(adm),
        "addition_time_embed_dims": widths,
        "per_frame_conditioning": CONDITIONING_KINDS[kind].per_frame,
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
