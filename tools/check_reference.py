"""Check the weight conversion against Stability's reference implementation (not part of the test suite).

Given a local checkout of Stability-AI/generative-models (``--sgm-root``), this builds small random
networks with the reference classes (sgm ``VideoUNet``, the LDM ``Encoder``/``Decoder``, the temporal
``VideoDecoder``), converts their state dicts with ``video_prior.convert`` and compares outputs of the
converted mv3d/diffusers networks with the reference networks on the same inputs. It prints the max
absolute difference per network and exits non-zero if any exceeds ``--tol``.

The reference code is imported from the checkout, never copied into mv3d. Only the modules the networks
need are imported (``sgm/__init__.py`` pulls training dependencies), so einops and fsspec suffice.

    python -m tools.check_reference --sgm-root /path/to/generative-models
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import types
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sgm-root", type=Path, required=True, help="checkout of Stability-AI/generative-models")
    ap.add_argument("--tol", type=float, default=1e-5, help="largest relative max-abs difference accepted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--float64", action="store_true", help="compute in float64 (separates mapping errors from rounding)"
    )
    args = ap.parse_args()
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
