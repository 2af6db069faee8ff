"""Check the weight conversion against Stability's reference implementation (not part of the test suite).

Given a local checkout of Stability-AI/generative-models (``--sgm-root``), this builds small random
networks with the reference classes (sgm ``VideoUNet``, the LDM ``Encoder``/``Decoder``, the temporal
``VideoDecoder``), converts their state dicts with ``video_prior.convert`` and compares outputs of the
converted mv3d/diffusers networks with the reference networks on the same inputs. It prints the max
absolute difference per network and exits non-zero if any exceeds ``--tol``.

The reference code is imported from the checkout, never copied into mv3d. Only the modules the networks
need are imported (``sgm/__init__.py`` pulls training dependencies), so einops and fsspec suffice.

    python -m tools.check_reference --sgm-root /path/to/generative-models

``--end-to-end`` instead samples tiny SV3D_p, SV3D_u and SVD models with the reference's own code (its
inference YAMLs with the networks shrunk, its sampling script's helpers, its conditioner, denoiser,
sampler, guider and decoder) and with mv3d's pipeline on the converted weights, from the same input and
noise, and prints the relative difference of the final frames; ``--fixture PATH`` also writes what
``tests/test_reference_sampling.py`` needs to redo mv3d's side alone. With ``--float64`` both sides
sample in float64 (the same weights and noise, drawn in float32), which tells a systematic difference
from float32 rounding. It imports the whole ``sgm`` package, so it needs kornia, omegaconf, einops and
pytorch_lightning (``pip install -c constraints.txt kornia omegaconf pytorch_lightning``); what the script
imports for steps it does not run here (background removal, watermarking, the NSFW filter) and OpenCLIP
(it imports torchvision) are stood in (`_reference_stand_ins`).

    python -m tools.check_reference --sgm-root /path/to/generative-models --end-to-end \
        --fixture tests/fixtures/reference_sampling.safetensors
    python -m tools.check_reference --sgm-root /path/to/generative-models --end-to-end --float64
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from video_prior.convert import (
    convert_unet_state_dict,
    convert_vae_state_dict,
    unet_config_from_reference_params,
    vae_config_from_reference,
)


def _import_sgm(root: Path) -> None:
    """Make ``sgm.modules.*`` importable from ``root`` without running sgm's package ``__init__`` files."""
    for pkg in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules", "sgm.modules.autoencoding"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root.joinpath(*pkg.split(".")))]
        sys.modules[pkg] = mod


def _sinusoids_in_default_dtype() -> None:
    """sgm computes its sinusoids in float32 whatever the model dtype; follow the default dtype instead."""
    util = importlib.import_module("sgm.modules.diffusionmodules.util")
    original = util.timestep_embedding

    def embedding(*args, **kwargs):
        return original(*args, **kwargs).to(torch.get_default_dtype())

    # GroupNorm32 normalises in float32 (for fp16 training); in float64 mode keep float64.
    util.GroupNorm32.forward = torch.nn.GroupNorm.forward
    for name in ("util", "openaimodel", "video_model"):
        importlib.import_module(f"sgm.modules.diffusionmodules.{name}").timestep_embedding = embedding
    for name in ("sgm.modules.video_attention", "sgm.modules.autoencoding.temporal_ae"):
        importlib.import_module(name).timestep_embedding = embedding


def _randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random values for every parameter, zero-initialised output convs and mix factors included.

    Weights get a fan-in scaled normal (a well-conditioned network, so float32 rounding is not
    amplified layer after layer), norms' scales 1 + noise, biases and mix factors noise.
    """
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif p.numel() > 1 and bool((p == 1).all()):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise if p.numel() > 1 else noise)


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    from sgm.modules.diffusionmodules.util import timestep_embedding

    return timestep_embedding(t, dim)


def _reference_groupnorm_eps(unet: torch.nn.Module) -> None:
    """Give every res-block GroupNorm the reference epsilon (1e-5).

    diffusers builds the res blocks of its cross-attention down blocks and of all up blocks with
    eps 1e-6, sgm's ``normalization()`` uses 1e-5 everywhere: a ~1e-5 relative difference that is the
    architecture's, not the weight mapping's. Measuring both separates the two.
    """
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and "res_block" in name:
            module.eps = 1e-5


def _reference_unet(widths: list[int], generator: torch.Generator):
    """A random sgm VideoUNet: 3 levels, attention at the first two (as SVD's last level has none)."""
    from sgm.modules.diffusionmodules.video_model import VideoUNet

    params = {
        "adm_in_channels": sum(widths),
        "num_classes": "sequential",
        "use_checkpoint": False,
        "in_channels": 8,
        "out_channels": 4,
        "model_channels": 32,
        "attention_resolutions": [2, 1],
        "num_res_blocks": 2,
        "channel_mult": [1, 2, 2],
        "num_head_channels": 16,
        "use_linear_in_transformer": True,
        "transformer_depth": 1,
        "context_dim": 24,
        "spatial_transformer_attn_type": "softmax",
        "extra_ff_mix_layer": True,
        "use_spatial_context": True,
        "merge_strategy": "learned_with_images",
        "video_kernel_size": [3, 1, 1],
    }
    ref = VideoUNet(**params).eval()
    _randomize(ref, generator)
    return ref, params


def _compare_unet(ref, unet, widths: list[int], generator: torch.Generator) -> tuple[float, float]:
    """Relative max difference of the outputs, with the reference GroupNorm eps and with diffusers'."""
    b, f, h = 2, 5, 12
    x = torch.randn(b, f, 8, h, h, generator=generator)
    c_noise = torch.randn(b, generator=generator)
    context = torch.randn(b, 1, 24, generator=generator)
    per_frame = unet.config.per_frame_conditioning
    scalars = torch.rand((b, f, len(widths)) if per_frame else (b, len(widths)), generator=generator) * 3
    # Reference inputs: frames folded into the batch, context and vector repeated per frame, the vector
    # already embedded (the conditioner's ConcatTimestepEmbedderND: one sinusoid per scalar).
    flat = scalars.reshape(-1, len(widths)) if per_frame else scalars.repeat_interleave(f, 0)
    y = torch.cat([_timestep_embedding(flat[:, k], w) for k, w in enumerate(widths)], dim=-1)
    with torch.no_grad():
        out_ref = ref(
            x.flatten(0, 1),
            c_noise.repeat_interleave(f),
            context=context.repeat_interleave(f, 0),
            y=y,
            num_video_frames=f,
            image_only_indicator=torch.zeros(b, f),
        ).reshape(b, f, 4, h, h)
        out = unet(x, c_noise, context, scalars).sample
        _reference_groupnorm_eps(unet)
        out_eps = unet(x, c_noise, context, scalars).sample
    scale = float(out_ref.abs().max())
    return float((out_eps - out_ref).abs().max()) / scale, float((out - out_ref).abs().max()) / scale


def check_unet(kind: str, widths: list[int], generator: torch.Generator) -> tuple[float, float]:
    """Reference VideoUNet state dict -> `convert_unet_state_dict` -> MultiViewUNet: same outputs."""
    from video_prior.unet import MultiViewUNet

    ref, params = _reference_unet(widths, generator)
    config, _ = unet_config_from_reference_params(params, kind=kind, widths=widths, sample_size=8)
    unet = MultiViewUNet(**config).eval()
    missing, unexpected = unet.load_state_dict(convert_unet_state_dict(ref.state_dict(), config), strict=True)
    assert not missing and not unexpected
    return _compare_unet(ref, unet, widths, generator)


def check_file(generator: torch.Generator, workdir: Path) -> tuple[float, float]:
    """The whole path: reference networks saved under SV3D_p's key prefixes with a YAML in the
    reference layout -> `convert_checkpoint` -> `load_components` -> same UNet and VAE outputs."""
    import yaml
    from safetensors.torch import save_file
    from sgm.modules.diffusionmodules.model import Decoder, Encoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from video_prior.components import load_components
    from video_prior.convert import clip_state_dict_to_reference, convert_checkpoint

    widths = [256, 512, 512]
    ref, params = _reference_unet(widths, generator)
    dd = dict(_VAE_DDCONFIG, num_res_blocks=1)
    enc, quant, dec = Encoder(**dd).eval(), torch.nn.Conv2d(8, 8, 1), Decoder(**dd).eval()
    for m in (enc, quant, dec):
        _randomize(m, generator)
    clip_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 1, "num_hidden_layers": 2}
    clip_cfg.update({"patch_size": 4, "image_size": 16, "projection_dim": 24, "hidden_act": "gelu"})
    clip = _randomize_ret(CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)), generator)
    sd = {f"model.diffusion_model.{k}": v for k, v in ref.state_dict().items()}
    clip_ref = clip_state_dict_to_reference(clip.state_dict(), clip_cfg)
    sd.update({f"conditioner.embedders.0.open_clip.model.visual.{k}": v for k, v in clip_ref.items()})
    sd.update({f"conditioner.embedders.1.encoder.encoder.{k}": v for k, v in enc.state_dict().items()})
    sd.update({f"conditioner.embedders.1.encoder.quant_conv.{k}": v for k, v in quant.state_dict().items()})
    sd.update({f"first_stage_model.decoder.{k}": v for k, v in dec.state_dict().items()})
    ckpt = workdir / "tiny_sv3d_p.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt))
    scalars = [("cond_aug", 256), ("polars_rad", 512), ("azimuths_rad", 512)]
    doc = {
        "model": {
            "params": {
                "network_config": {"params": params},
                "conditioner_config": {
                    "params": {
                        "emb_models": [
                            {"target": "sgm.modules.encoders.modules.FrozenOpenCLIPImagePredictionEmbedder"},
                            {"target": "sgm.modules.encoders.modules.VideoPredictionEmbedderWithEncoder"},
                        ]
                        + [
                            {
                                "input_key": key,
                                "target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND",
                                "params": {"outdim": width},
                            }
                            for key, width in scalars
                        ]
                    }
                },
            }
        }
    }
    yml = workdir / "tiny_sv3d_p.yaml"
    yml.write_text(yaml.safe_dump(doc))
    report = convert_checkpoint(ckpt, workdir / "converted", config_yaml=yml, resolution=32, clip_num_heads=1)
    print(report.summary())
    components, info = load_components(workdir / "converted", dtype=torch.get_default_dtype())
    assert info.conditioning == "sv3d_p"
    unet_err = _compare_unet(ref, components["unet"], widths, generator)
    img = torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        moments_ref = quant(enc(img))
        z = moments_ref[:, :4]
        vae = components["vae"]
        e1 = (vae.encode(img).latent_dist.parameters - moments_ref).abs().max() / moments_ref.abs().max()
        e2 = (vae.decode(z).sample - dec(z)).abs().max() / dec(z).abs().max()
    return max(unet_err[0], float(e1), float(e2)), max(unet_err[1], float(e1), float(e2))


def _randomize_ret(module: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    _randomize(module, generator)
    return module.eval()


_VAE_DDCONFIG = {
    "attn_type": "vanilla",
    "double_z": True,
    "z_channels": 4,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def check_vae(temporal: bool, generator: torch.Generator) -> float:
    from sgm.modules.diffusionmodules.model import Decoder, Encoder

    from video_prior.components import VAE_TYPES

    # diffusers' temporal decoder ties its mid-block depth to num_res_blocks; the reference models use 2.
    dd = dict(_VAE_DDCONFIG, num_res_blocks=2 if temporal else 1)
    enc = Encoder(**dd).eval()
    quant = torch.nn.Conv2d(8, 8, 1)
    if temporal:
        from sgm.modules.autoencoding.temporal_ae import VideoDecoder

        dec = VideoDecoder(**dd, video_kernel_size=[3, 1, 1]).eval()
    else:
        dec = Decoder(**dd).eval()
    for m in (enc, quant, dec):
        _randomize(m, generator)
    ref_sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    ref_sd.update({f"quant_conv.{k}": v for k, v in quant.state_dict().items()})
    ref_sd.update({f"decoder.{k}": v for k, v in dec.state_dict().items()})
    vae_type, config = vae_config_from_reference(ref_sd, sample_size=32)
    vae = VAE_TYPES[vae_type](**config).eval()
    vae.load_state_dict(convert_vae_state_dict(ref_sd, vae_type, config), strict=True)

    frames = 3
    img = torch.rand(frames, 3, 32, 32, generator=generator) * 2 - 1
    with torch.no_grad():
        moments_ref = quant(enc(img))
        moments = vae.encode(img).latent_dist.parameters
        z = moments_ref[:, :4]
        if temporal:
            dec_ref = dec(z, timesteps=frames)
            dec_out = vae.decode(z, num_frames=frames).sample
        else:
            dec_ref = dec(z)
            dec_out = vae.decode(z).sample
    e1 = float((moments - moments_ref).abs().max()) / float(moments_ref.abs().max())
    e2 = float((dec_out - dec_ref).abs().max()) / float(dec_ref.abs().max())
    return max(e1, e2)


# ------------------------------------------------------------------------------------------------
# End to end: the reference's sampling run against mv3d's pipeline on the converted weights
# ------------------------------------------------------------------------------------------------

#: The end-to-end runs: frames, sampling steps, the guidance schedule (mv3d name, min, max) of the
#: reference YAML, cond_aug of the reference script, and the script's SVD micro-conditioning.
#: Three steps (sigma 700 -> 15.6 -> 0.002 -> 0), not two: a single Euler step from 700 to 0.002
#: computes x + dt * d with |x| and |dt * d| near 3100 for a result near 6, and float32 numbers near
#: 3100 are 2.4e-4 apart, 4e-5 of that result (the reference's own step is 5.6e-5 off exact arithmetic
#: on its own inputs), so any last-bit difference upstream showed up at that size, and in the frames at
#: 1.3e-4 to 1.9e-4. SV3D's 50 steps never take such a step (the first goes from 700 to 620).
E2E_RUNS: dict[str, dict[str, Any]] = {
    "sv3d_p": {"frames": 21, "steps": 3, "guidance": ("triangle", 1.0, 2.5), "cond_aug": 1e-5},
    "sv3d_u": {"frames": 21, "steps": 3, "guidance": ("triangle", 1.0, 2.5), "cond_aug": 1e-5},
    "svd": {"frames": 14, "steps": 3, "guidance": ("linear", 1.0, 2.5), "cond_aug": 0.02},
}
#: Input side in pixels: above CLIP's 224, so the reference's resize blurs before resampling, as at 576.
E2E_SIZE = 256
E2E_SEED = 23  # the reference script's default seed
E2E_FPS_ID, E2E_MOTION_BUCKET_ID, E2E_ELEVATION_DEG = 6, 127, 10.0  # the script's defaults
#: Largest relative max difference of the final frames accepted (the CI test's too). Measured with
#: three steps: 1.5e-5 to 3.4e-5 in float32, 3e-14 in float64; a semantic mismatch is far above (torch's
#: antialiased bicubic for CLIP instead of kornia's resize: 3e-2 on SV3D_p at 576 px).
E2E_TOLERANCE, E2E_TOLERANCE_FLOAT64 = 1e-4, 1e-11
#: The fixture keeps frames mean-pooled by this factor, and a full-resolution central crop of this side.
E2E_POOL, E2E_CROP = 16, 16
#: Tiny networks in the reference layout (GroupNorm needs multiples of 32 channels).
E2E_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "image_size": 224,  # the reference resizes to 224 whatever the tower
    "projection_dim": 32,
    "hidden_act": "gelu",
}


def e2e_input_image(size: int = E2E_SIZE) -> np.ndarray:
    """(size, size, 3) uint8: a smooth, asymmetric test picture (colour ramps and an off-centre disc)."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1.0)
    disc = ((x - 0.35) ** 2 + (y - 0.6) ** 2) < 0.08
    rgb = np.stack([0.2 + 0.7 * x, 0.9 - 0.6 * y, 0.5 + 0.4 * np.sin(6.0 * x * y)], axis=-1)
    rgb[disc] = (0.85, 0.25, 0.1)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def e2e_reference_yaml(kind: str, sgm_root: Path) -> dict:
    """The reference's own inference YAML for `kind` with tiny networks (nothing else changed but the
    checkpoint path, the sampler's device, and the attention kernel and gradient checkpointing, which
    need xformers or training)."""
    from omegaconf import OmegaConf

    name = {"sv3d_p": "sv3d_p", "sv3d_u": "sv3d_u", "svd": "svd"}[kind]
    cfg = OmegaConf.to_container(OmegaConf.load(sgm_root / "scripts/sampling/configs" / f"{name}.yaml"))
    params = cfg["model"]["params"]
    params.pop("ckpt_path", None)
    params["sampler_config"]["params"]["device"] = "cpu"
    net = params["network_config"]["params"]
    net.update(
        {
            "use_checkpoint": False,
            "model_channels": 32,
            "channel_mult": [1, 2],
            "attention_resolutions": [1],
            "num_head_channels": 16,
            "context_dim": E2E_CLIP["projection_dim"],
            "spatial_transformer_attn_type": "softmax",
        }
    )
    tiny_ae = {"ch": 32, "ch_mult": [1, 1, 1, 1], "attn_type": "vanilla"}
    first = params["first_stage_config"]["params"]
    temporal = first["decoder_config"]["target"].endswith("VideoDecoder")
    for emb in params["conditioner_config"]["params"]["emb_models"]:
        enc = emb.get("params", {}).get("encoder_config")
        if enc is not None:  # one VAE in diffusers: the encoder's depth follows the decoder's
            enc["params"]["ddconfig"].update(tiny_ae, num_res_blocks=2 if temporal else 1)
    # diffusers' temporal decoder ties its mid-block depth to num_res_blocks: keep the reference's 2
    first["decoder_config"]["params"].update(tiny_ae, num_res_blocks=2 if temporal else 1)
    if "params" in first.get("encoder_config", {}):
        first["encoder_config"]["params"].update(tiny_ae, num_res_blocks=2 if temporal else 1)
    return cfg


def e2e_random_weights(manifest: list, seed: int) -> dict:
    """Random weights of a reference model from its manifest [(key, shape, rule)], the same on every
    machine: one CPU generator drawn in manifest order; rule "w" (a matrix or kernel): normal / sqrt(fan
    in); "1" (a norm's scale): 1 + 0.1 normal; "b" (bias, mix factor): 0.1 normal (a lone scalar: normal).
    Float32 whatever the default dtype, so that a float64 run samples the same networks.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, rule in manifest:
        noise = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
        if rule == "w":
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[key] = noise / fan_in**0.5
        elif rule == "1":
            out[key] = 1 + 0.1 * noise
        else:
            out[key] = 0.1 * noise if noise.numel() > 1 else noise
    return out


_CLIP_STANDIN = "conditioner.embedders.0.open_clip.model.visual.clip."


def e2e_checkpoint(weights: dict) -> dict:
    """The reference model's state (`e2e_random_weights`) as a Stability single-file checkpoint: the
    CLIP stand-in's transformers tensors laid out as OpenCLIP's visual tower (`clip_state_dict_to_reference`)."""
    from video_prior.convert import clip_state_dict_to_reference

    clip = {k[len(_CLIP_STANDIN) :]: v for k, v in weights.items() if k.startswith(_CLIP_STANDIN)}
    out = {k: v.contiguous() for k, v in weights.items() if not k.startswith(_CLIP_STANDIN)}
    prefix = _CLIP_STANDIN[: -len("clip.")]
    out.update({prefix + k: v.contiguous() for k, v in clip_state_dict_to_reference(clip, E2E_CLIP).items()})
    return out


def e2e_mv3d_frames(
    kind: str,
    weights: dict,
    reference_yaml: dict,
    workdir: Path,
    reference_eps: bool = False,
    dtype: torch.dtype = torch.float32,
):
    """mv3d's side: convert the checkpoint, sample with the reference's noise and settings.

    `reference_eps`: give the UNet's res-block GroupNorms the reference's epsilon (1e-5; diffusers builds
    some with 1e-6), which separates the architecture's difference from everything else.
    `dtype`: the pipeline's (float64 for `--float64`; the noise is drawn in float32 either way).

    Returns (frames (F, 3, H, W) in [0, 1] in `dtype`, in the reference's frame order, conversion report).
    """
    import dataclasses

    import numpy as np
    import torch
    import yaml
    from safetensors.torch import save_file

    from render.cameras import from_sv3d_order, static_orbit, to_sv3d
    from video_prior.convert import convert_checkpoint
    from video_prior.pipeline import MultiViewPipeline

    run = E2E_RUNS[kind]
    n = run["frames"]
    ckpt, yml = workdir / f"{kind}.safetensors", workdir / f"{kind}.yaml"
    save_file(e2e_checkpoint(weights), str(ckpt))
    yml.write_text(yaml.safe_dump(reference_yaml))
    heads = E2E_CLIP["num_attention_heads"]
    report = convert_checkpoint(
        ckpt, workdir / kind, config_yaml=yml, resolution=E2E_SIZE, clip_num_heads=heads
    )
    pipe = MultiViewPipeline.from_pretrained(workdir / kind, dtype=dtype)
    pipe.info = dataclasses.replace(pipe.info, fps_id=E2E_FPS_ID, motion_bucket_id=E2E_MOTION_BUCKET_ID)
    if reference_eps:
        _reference_groupnorm_eps(pipe.unet)
    orbit = static_orbit(n, elevation_deg=E2E_ELEVATION_DEG)
    # the reference's initial noise: the generator's second draw, after the conditioning noise
    g = torch.Generator().manual_seed(E2E_SEED)
    torch.randn((1, 3, E2E_SIZE, E2E_SIZE), generator=g, dtype=torch.float32)
    f = pipe.vae_scale_factor
    shape = (n, pipe.vae.config.latent_channels, E2E_SIZE // f, E2E_SIZE // f)
    noise = torch.randn(shape, generator=g, dtype=torch.float32)
    sv3d = pipe.info.frame_order == "sv3d"
    order = to_sv3d(orbit, direction=pipe.info.sv3d_azimuth_direction).order if sv3d else np.arange(n)
    latents = from_sv3d_order(noise, order)[None] if sv3d else noise[None]  # mv3d's (orbit) order
    schedule, lo, hi = run["guidance"]
    out = pipe(
        e2e_input_image(),
        orbit,
        num_inference_steps=run["steps"],
        guidance=schedule,
        min_guidance=lo,
        max_guidance=hi,
        cond_aug=run["cond_aug"],
        generator=torch.Generator().manual_seed(E2E_SEED),
        latents=latents,
        ensemble=1,
        mirror_average=False,
        decode_chunk_size=14,  # the script's decoding_t
        output_type="pt",
    ).frames
    return (out[torch.as_tensor(order)] if sv3d else out), report


def e2e_summary(frames) -> dict:
    """What the fixture keeps of (F, 3, H, W) frames: "pooled" (mean over E2E_POOL^2 blocks) and
    "crop" (the central E2E_CROP^2 pixels at full resolution)."""
    import torch.nn.functional as F

    h = frames.shape[-1]
    lo = (h - E2E_CROP) // 2
    return {
        "pooled": F.avg_pool2d(frames.float(), E2E_POOL).contiguous(),
        "crop": frames[..., lo : lo + E2E_CROP, lo : lo + E2E_CROP].float().contiguous(),
    }


def _reference_stand_ins() -> None:
    """Modules the sampling script imports for steps this check does not run (background removal,
    watermarking, the NSFW filter, the CLI) or that need torchvision (OpenCLIP), as stand-ins.

    OpenCLIP's ViT cannot be installed here (it imports torchvision): its stand-in is transformers'
    CLIP vision tower with the same weights (`e2e_checkpoint` writes them in OpenCLIP's layout, the
    converter reads them back); the reference's own embedder code (kornia resize, normalisation,
    conditioning) runs around it.
    """
    import importlib.machinery

    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    class Visual(torch.nn.Module):
        output_tokens = False

        def __init__(self):
            super().__init__()
            self.clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**E2E_CLIP))

        def forward(self, img):
            return self.clip(pixel_values=img).image_embeds

    class OpenCLIPModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual, self.transformer = Visual(), torch.nn.Identity()

    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class Unused:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, x, *args, **kwargs):
            return x

        def set_watermark(self, *args, **kwargs):
            pass

    module("open_clip", create_model_and_transforms=lambda *a, **k: (OpenCLIPModel(), None, None))
    module("cv2")
    module("rembg", remove=Unused())
    module("fire", Fire=Unused())
    module("imwatermark", WatermarkEncoder=Unused)
    module("scripts.util.detection.nsfw_and_watermark_dectection", DeepFloydDataFiltering=Unused)


def _import_sampling_script(sgm_root: Path):
    """scripts/sampling/simple_video_sample.py as a module (its helpers `get_batch`, `load_model`...)."""
    import importlib.util

    sys.path.insert(0, str(sgm_root))
    _reference_stand_ins()
    # transformers, torchmetrics and lightning probe for torchvision: import all sgm needs first
    for name in ("transformers", "torchmetrics", "pytorch_lightning", "sgm", "sgm.inference.helpers"):
        importlib.import_module(name)
    importlib.import_module("sgm.modules.encoders.modules")
    tv = types.ModuleType("torchvision")
    tv_t = types.ModuleType("torchvision.transforms")

    def to_tensor(pic):  # torchvision's ToTensor on an (H, W, 3) uint8 array
        import numpy as np

        return torch.from_numpy(np.ascontiguousarray(pic)).permute(2, 0, 1).contiguous().float().div(255)

    tv_t.ToTensor = lambda: to_tensor
    tv.transforms = tv_t
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv_t
    try:
        spec = importlib.util.spec_from_file_location(
            "simple_video_sample", sgm_root / "scripts/sampling/simple_video_sample.py"
        )
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
    finally:  # nothing else may see the stand-in
        del sys.modules["torchvision"], sys.modules["torchvision.transforms"]
    return script


def _manifest(model) -> list:
    """[(key, shape, rule)] of a model's parameters, the rules of `e2e_random_weights`."""
    out = []
    for key, p in sorted(model.state_dict(keep_vars=True).items()):
        if not isinstance(p, torch.nn.Parameter):
            continue
        rule = "w" if p.ndim >= 2 else "1" if p.numel() > 1 and bool((p == 1).all()) else "b"
        out.append((key, list(p.shape), rule))
    return out


def e2e_reference_frames(kind: str, sgm_root: Path, script, workdir: Path):
    """The reference's side: its tiny model from its YAML (`load_model`), random weights, and the
    sampling steps of `simple_video_sample.sample` (the conditioning batch from its `get_batch`, the
    model's conditioner, denoiser, sampler and decoder), in the default dtype (float32, or float64 for
    `--float64`: the input and the noise are made in float32 and converted) without autocast.

    Returns (frames (F, 3, H, W) in [0, 1] in the reference's order, manifest, yaml dict, initial noise).
    """
    import numpy as np
    import torch
    from einops import rearrange, repeat
    from omegaconf import OmegaConf

    run = E2E_RUNS[kind]
    n = run["frames"]
    cfg = e2e_reference_yaml(kind, sgm_root)
    yml = workdir / f"{kind}_reference.yaml"
    yml.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    model, _ = script.load_model(str(yml), "cpu", n, run["steps"])
    manifest = _manifest(model)
    weights = e2e_random_weights(manifest, E2E_SEED)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = {k for k, _, _ in manifest}
    assert not unexpected and not (set(missing) & params), (missing, unexpected)
    model.eval()

    # contiguous, as torchvision's ToTensor returns it: randn_like follows a tensor's memory layout
    image = torch.from_numpy(e2e_input_image()).permute(2, 0, 1).float().div(255).contiguous()[None] * 2 - 1
    torch.manual_seed(E2E_SEED)
    cond_noise = torch.randn_like(image)  # float32, as the script draws it
    dtype = torch.get_default_dtype()
    image = image.to(dtype)
    values = {
        "cond_frames_without_noise": image,
        "motion_bucket_id": E2E_MOTION_BUCKET_ID,
        "fps_id": E2E_FPS_ID,
        "cond_aug": run["cond_aug"],
        "cond_frames": image + run["cond_aug"] * cond_noise.to(dtype),
    }
    if kind == "sv3d_p":  # the script's default orbit: input view last, re-referenced to it
        azimuths = np.linspace(0, 360, n + 1)[1:] % 360
        values["polars_rad"] = [np.deg2rad(90 - E2E_ELEVATION_DEG)] * n
        values["azimuths_rad"] = [np.deg2rad((a - azimuths[-1]) % 360) for a in azimuths]
    with torch.no_grad():
        keys = script.get_unique_embedder_keys_from_conditioner(model.conditioner)
        batch, batch_uc = script.get_batch(keys, values, [1, n], T=n, device="cpu")
        c, uc = model.conditioner.get_unconditional_conditioning(
            batch, batch_uc=batch_uc, force_uc_zero_embeddings=["cond_frames", "cond_frames_without_noise"]
        )
        for k in ("crossattn", "concat"):
            uc[k] = rearrange(repeat(uc[k], "b ... -> b t ...", t=n), "b t ... -> (b t) ...", t=n)
            c[k] = rearrange(repeat(c[k], "b ... -> b t ...", t=n), "b t ... -> (b t) ...", t=n)
        randn = torch.randn((n, 4, E2E_SIZE // 8, E2E_SIZE // 8), dtype=torch.float32).to(dtype)
        extra = {"image_only_indicator": torch.zeros(2, n), "num_video_frames": batch["num_video_frames"]}

        def denoiser(x, sigma, cond):
            return model.denoiser(model.model, x, sigma, cond, **extra)

        z = model.sampler(denoiser, randn, cond=c, uc=uc)
        model.en_and_decode_n_samples_a_time = 14  # the script's decoding_t
        x = model.decode_first_stage(z)
        if kind != "svd":
            x[-1:] = values["cond_frames_without_noise"]
        frames = torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)
    return frames, manifest, cfg, randn


def check_end_to_end(sgm_root: Path, fixture: Path | None, float64: bool = False) -> dict[str, float]:
    """Sample each tiny model with the reference's code and with mv3d; relative max difference of the
    final frames per kind. With `fixture`, write what the CI test needs to redo mv3d's side alone.
    `float64`: both sides in float64 (the reference's models built in the default dtype, its float32
    GroupNorm and sinusoids as in `_sinusoids_in_default_dtype`); no fixture then."""
    import json

    import torch
    from safetensors.torch import save_file

    if float64 and fixture is not None:
        raise ValueError("the fixture holds float32 frames: --fixture without --float64")
    script = _import_sampling_script(sgm_root)
    dtype = torch.float64 if float64 else torch.float32
    if float64:
        _sinusoids_in_default_dtype()
    results, tensors, meta = {}, {}, {}
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in E2E_RUNS:
                work = Path(tmp) / kind
                work.mkdir()
                ref, manifest, cfg, _ = e2e_reference_frames(kind, sgm_root, script, work)
                weights = e2e_random_weights(manifest, E2E_SEED)
                ours, _ = e2e_mv3d_frames(kind, weights, cfg, work, dtype=dtype)
                err = float((ours - ref).abs().max() / ref.abs().max())
                results[kind] = err
                print(f"end to end {kind:7s} frames {tuple(ref.shape)}: max|diff| / max|ref| = {err:.3e}")
                for name, value in e2e_summary(ref).items():
                    tensors[f"{kind}.{name}"] = value
                meta[kind] = json.dumps({"manifest": manifest, "yaml": cfg, "relative_difference": err})
    finally:
        torch.set_default_dtype(default)
    if fixture is not None:
        meta["settings"] = json.dumps(
            {"size": E2E_SIZE, "seed": E2E_SEED, "runs": E2E_RUNS, "pool": E2E_POOL, "crop": E2E_CROP}
        )
        fixture.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.float32) for k, v in tensors.items()}, str(fixture), metadata=meta)
        print(f"fixture: {fixture} ({fixture.stat().st_size / 1e6:.2f} MB)")
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sgm-root", type=Path, required=True, help="checkout of Stability-AI/generative-models")
    ap.add_argument("--tol", type=float, default=1e-5, help="largest relative max-abs difference accepted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--float64", action="store_true", help="compute in float64 (separates mapping errors from rounding)"
    )
    ap.add_argument(
        "--end-to-end",
        action="store_true",
        help="instead: sample tiny SV3D_p, SV3D_u and SVD models with the reference's code and with mv3d",
    )
    ap.add_argument(
        "--fixture", type=Path, default=None, help="with --end-to-end: write the test fixture here"
    )
    args = ap.parse_args()
    if args.end_to_end:
        results = check_end_to_end(args.sgm_root.resolve(), args.fixture, float64=args.float64)
        worst = max(results.values())
        tol = E2E_TOLERANCE_FLOAT64 if args.float64 else E2E_TOLERANCE
        print("OK" if worst <= tol else f"FAIL: {worst:.3e} > {tol}")
        return 0 if worst <= tol else 1
    _import_sgm(args.sgm_root)
    importlib.import_module("sgm.modules.diffusionmodules.video_model")
    if args.float64:
        torch.set_default_dtype(torch.float64)
        _sinusoids_in_default_dtype()
    g = torch.Generator().manual_seed(args.seed)
    results = {
        "unet svd (3 x 256, per video)": check_unet("svd", [256, 256, 256], g),
        "unet sv3d_u (256)": check_unet("sv3d_u", [256], g),
        "unet sv3d_p (256+512+512, per frame)": check_unet("sv3d_p", [256, 512, 512], g),
        "vae image (encoder + decoder)": check_vae(False, g),
        "vae temporal (encoder + video decoder)": check_vae(True, g),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["file: convert_checkpoint, unet + vae"] = check_file(g, Path(tmp))
    worst = 0.0
    for name, err in results.items():
        if isinstance(err, tuple):
            err, stock = err
            print(f"{name:42s} max|diff| / max|ref| = {err:.3e}  (diffusers' GroupNorm eps: {stock:.3e})")
        else:
            print(f"{name:42s} max|diff| / max|ref| = {err:.3e}")
        worst = max(worst, err)
    print("OK" if worst <= args.tol else f"FAIL: {worst:.3e} > {args.tol}")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
