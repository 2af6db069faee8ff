"""Weight conversion: Stability single-file layout <-> mv3d/diffusers, on tiny random networks.

The key mapping is checked three ways: name pairs written out by hand from the reference module
structure (sgm VideoUNet, LDM autoencoder, OpenCLIP ViT), exact round trips with full key coverage, and
(for the image encoder) outputs against an independent OpenCLIP-style forward. The comparison of
outputs with the reference implementation itself lives in ``tools/check_reference.py`` (it needs a
checkout of Stability-AI/generative-models).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from model_helpers import reference_yaml, to_reference_checkpoint
from safetensors.torch import save_file

from render.common import InputError
from video_prior.components import build_components, load_components, tiny_config
from video_prior.convert import (
    Checkpoint,
    clip_config_from_reference,
    clip_state_dict_to_reference,
    convert_checkpoint,
    convert_clip_state_dict,
    convert_unet_state_dict,
    convert_vae_state_dict,
    read_reference_yaml,
    reference_params_from_shapes,
    unet_config_from_reference_params,
    unet_state_dict_to_reference,
    vae_config_from_reference,
    vae_state_dict_to_reference,
)
from video_prior.unet import MultiViewUNet


def _config(kind: str) -> dict:
    cfg = tiny_config(num_frames=3, sample_size=16, conditioning=kind)
    # OpenCLIP's activation is exact GELU; diffusers' temporal decoder needs 2 res blocks per level to
    # have the reference's two mid-block res blocks.
    cfg["image_encoder"]["hidden_act"] = "gelu"
    # The reference's res-block GroupNorms use eps 1e-5 (converted configs say so too).
    cfg["unet"]["resnet_norm_eps"] = 1e-5
    if cfg["vae"]["type"] == "temporal":
        cfg["vae"]["layers_per_block"] = 2
    return cfg


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (zero-initialised convs and mix factors too), so no mapping hides."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
    return module


@pytest.fixture(scope="module")
def tiny_sv3d_p() -> dict:
    comps = build_components(_config("sv3d_p"))
    for i, m in enumerate(comps.values()):
        _randomize(m, i)
    return comps


def _write_reference(
    tmp: Path, comps: dict, kind: str, cfg: dict, extra: dict | None = None
) -> tuple[Path, Path]:
    sd = to_reference_checkpoint(comps)
    sd.update(extra or {})
    ckpt, yml = tmp / "model.safetensors", tmp / "model.yaml"
    save_file(sd, str(ckpt))
    yml.write_text(yaml.safe_dump(reference_yaml(cfg["unet"], kind)))
    return ckpt, yml


# --------------------------------------------------------------------------------------- UNet


def _unet_config_three_levels() -> dict:
    """Three levels, two res blocks, attention at the first two (like SVD's last level without it)."""
    return {
        "sample_size": 8,
        "in_channels": 8,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 2 + ["DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 2,
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 2,
        "cross_attention_dim": 16,
        "num_attention_heads": [2, 4, 4],
        "transformer_layers_per_block": [1, 2, 1],
        "addition_time_embed_dims": [16, 32, 32],
        "per_frame_conditioning": True,
    }


# Reference names (sgm video_model.VideoUNet) and what they must become, read off the reference's
# constructor for the three-level config above: input_blocks = [conv, (res, attn) x2, down, (res, attn)
# x2, down, res x2]; output_blocks per up block = 3 x (res [, attn]) with the upsampler last.
UNET_PAIRS = {
    "time_embed.0.weight": "time_embedding.linear_1.weight",
    "time_embed.2.bias": "time_embedding.linear_2.bias",
    "label_emb.0.0.weight": "add_embedding.linear_1.weight",
    "label_emb.0.2.weight": "add_embedding.linear_2.weight",
    "input_blocks.0.0.weight": "conv_in.weight",
    "input_blocks.1.0.in_layers.0.weight": "down_blocks.0.resnets.0.spatial_res_block.norm1.weight",
    "input_blocks.1.0.in_layers.2.weight": "down_blocks.0.resnets.0.spatial_res_block.conv1.weight",
    "input_blocks.1.0.emb_layers.1.weight": "down_blocks.0.resnets.0.spatial_res_block.time_emb_proj.weight",
    "input_blocks.1.0.out_layers.0.bias": "down_blocks.0.resnets.0.spatial_res_block.norm2.bias",
    "input_blocks.1.0.out_layers.3.weight": "down_blocks.0.resnets.0.spatial_res_block.conv2.weight",
    "input_blocks.1.0.time_stack.in_layers.2.weight": "down_blocks.0.resnets.0.temporal_res_block.conv1.weight",
    "input_blocks.1.0.time_stack.emb_layers.1.bias": "down_blocks.0.resnets.0.temporal_res_block.time_emb_proj.bias",
    "input_blocks.1.0.time_stack.out_layers.3.bias": "down_blocks.0.resnets.0.temporal_res_block.conv2.bias",
    "input_blocks.1.0.time_mixer.mix_factor": "down_blocks.0.resnets.0.time_mixer.mix_factor",
    "input_blocks.1.1.norm.weight": "down_blocks.0.attentions.0.norm.weight",
    "input_blocks.1.1.proj_in.weight": "down_blocks.0.attentions.0.proj_in.weight",
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
    "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
    "input_blocks.1.1.time_stack.0.ff_in.net.2.weight": "down_blocks.0.attentions.0.temporal_transformer_blocks.0.ff_in.net.2.weight",
    "input_blocks.1.1.time_stack.0.norm_in.weight": "down_blocks.0.attentions.0.temporal_transformer_blocks.0.norm_in.weight",
    "input_blocks.1.1.time_stack.0.attn1.to_out.0.weight": "down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_out.0.weight",
    "input_blocks.1.1.time_pos_embed.0.weight": "down_blocks.0.attentions.0.time_pos_embed.linear_1.weight",
    "input_blocks.1.1.time_pos_embed.2.bias": "down_blocks.0.attentions.0.time_pos_embed.linear_2.bias",
    "input_blocks.1.1.time_mixer.mix_factor": "down_blocks.0.attentions.0.time_mixer.mix_factor",
    "input_blocks.1.1.proj_out.bias": "down_blocks.0.attentions.0.proj_out.bias",
    "input_blocks.2.1.norm.bias": "down_blocks.0.attentions.1.norm.bias",
    "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
    "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight",
    "input_blocks.5.1.transformer_blocks.1.norm3.weight": "down_blocks.1.attentions.1.transformer_blocks.1.norm3.weight",
    "input_blocks.5.1.time_stack.1.attn2.to_v.weight": "down_blocks.1.attentions.1.temporal_transformer_blocks.1.attn2.to_v.weight",
    "input_blocks.6.0.op.bias": "down_blocks.1.downsamplers.0.conv.bias",
    "input_blocks.8.0.in_layers.2.weight": "down_blocks.2.resnets.1.spatial_res_block.conv1.weight",
    "middle_block.0.time_stack.in_layers.0.weight": "mid_block.resnets.0.temporal_res_block.norm1.weight",
    "middle_block.1.proj_in.weight": "mid_block.attentions.0.proj_in.weight",
    "middle_block.2.time_mixer.mix_factor": "mid_block.resnets.1.time_mixer.mix_factor",
    "output_blocks.0.0.in_layers.2.weight": "up_blocks.0.resnets.0.spatial_res_block.conv1.weight",
    "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
    "output_blocks.3.0.skip_connection.bias": "up_blocks.1.resnets.0.spatial_res_block.conv_shortcut.bias",
    "output_blocks.3.1.time_stack.1.ff.net.2.bias": "up_blocks.1.attentions.0.temporal_transformer_blocks.1.ff.net.2.bias",
    "output_blocks.5.2.conv.bias": "up_blocks.1.upsamplers.0.conv.bias",
    "output_blocks.8.1.proj_out.weight": "up_blocks.2.attentions.2.proj_out.weight",
    "out.0.weight": "conv_norm_out.weight",
    "out.2.bias": "conv_out.bias",
}


def test_unet_mapping_names_round_trip_and_coverage():
    cfg = _unet_config_three_levels()
    unet = _randomize(MultiViewUNet(**cfg), 0)
    sd = unet.state_dict()
    ref = unet_state_dict_to_reference(sd, unet.config)
    # every target key has exactly one reference key, and the reference names are sgm's
    assert len(ref) == len(sd)
    assert all(
        k.split(".")[0] in {"time_embed", "label_emb", "input_blocks", "middle_block", "output_blocks", "out"}
        for k in ref
    )
    for ref_key, target_key in UNET_PAIRS.items():
        assert ref_key in ref, ref_key
        assert torch.equal(ref[ref_key], sd[target_key]), (ref_key, target_key)
    back = convert_unet_state_dict(ref, unet.config)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_unet_config_from_reference_params_and_shapes():
    cfg = _unet_config_three_levels()
    unet = MultiViewUNet(**cfg)
    ref_doc = reference_yaml(cfg, "sv3d_p")
    params = ref_doc["model"]["params"]["network_config"]["params"]
    assert params["attention_resolutions"] == [1, 2] and params["channel_mult"] == [1, 2, 2]
    back, kind = unet_config_from_reference_params(params, kind="sv3d_p", widths=[16, 32, 32], sample_size=8)
    assert kind == "sv3d_p"
    for key in ("block_out_channels", "down_block_types", "up_block_types", "num_attention_heads"):
        assert list(back[key]) == list(cfg[key]), key
    assert back["layers_per_block"] == 2
    assert back["transformer_layers_per_block"] == [1, 2, 1]
    assert back["per_frame_conditioning"] is True
    # shapes give everything but the head width (not visible in square q/k/v weights: 64 assumed)
    inferred = reference_params_from_shapes(unet_state_dict_to_reference(unet.state_dict(), unet.config))
    for key, value in params.items():
        if key != "num_head_channels":
            assert inferred[key] == value, key
    # the reference kinds are recognised from the vector width alone
    for adm, want in ((768, "svd"), (256, "sv3d_u"), (1280, "sv3d_p")):
        p = dict(params, adm_in_channels=adm, num_head_channels=16)
        assert unet_config_from_reference_params(p)[1] == want
    with pytest.raises(InputError, match="adm_in_channels 80"):
        unet_config_from_reference_params(dict(params, adm_in_channels=80))
    with pytest.raises(InputError, match="use_linear_in_transformer"):
        unet_config_from_reference_params(
            dict(params, use_linear_in_transformer=False), kind="sv3d_p", widths=[16, 32, 32]
        )


# --------------------------------------------------------------------------------------- VAE

VAE_IMAGE_PAIRS = {
    "encoder.conv_in.weight": "encoder.conv_in.weight",
    "encoder.down.0.block.0.norm1.weight": "encoder.down_blocks.0.resnets.0.norm1.weight",
    "encoder.down.0.downsample.conv.weight": "encoder.down_blocks.0.downsamplers.0.conv.weight",
    "encoder.down.1.block.0.nin_shortcut.weight": "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
    "encoder.mid.block_2.conv2.bias": "encoder.mid_block.resnets.1.conv2.bias",
    "encoder.mid.attn_1.norm.weight": "encoder.mid_block.attentions.0.group_norm.weight",
    "encoder.mid.attn_1.v.bias": "encoder.mid_block.attentions.0.to_v.bias",
    "encoder.norm_out.weight": "encoder.conv_norm_out.weight",
    "quant_conv.weight": "quant_conv.weight",
    "decoder.up.1.block.0.conv1.weight": "decoder.up_blocks.0.resnets.0.conv1.weight",  # LDM numbers by resolution
    "decoder.up.1.upsample.conv.weight": "decoder.up_blocks.0.upsamplers.0.conv.weight",
    "decoder.up.0.block.1.nin_shortcut.weight": None,  # absent: same width, no shortcut
    "decoder.up.0.block.0.nin_shortcut.weight": "decoder.up_blocks.1.resnets.0.conv_shortcut.weight",
    "decoder.norm_out.bias": "decoder.conv_norm_out.bias",
}


@pytest.mark.parametrize("kind", ["sv3d_p", "svd"])
def test_vae_mapping_round_trip(kind):
    cfg = _config(kind)
    vae = _randomize(build_components(cfg)["vae"], 1)
    vae_type = cfg["vae"]["type"]
    sd = vae.state_dict()
    ref = vae_state_dict_to_reference(sd, vae_type, vae.config)
    assert len(ref) == len(sd)
    # LDM attention holds 1x1 convs, diffusers linears
    assert ref["encoder.mid.attn_1.q.weight"].shape == (
        *sd["encoder.mid_block.attentions.0.to_q.weight"].shape,
        1,
        1,
    )
    if vae_type == "image":
        for ref_key, target_key in VAE_IMAGE_PAIRS.items():
            if target_key is None:
                assert ref_key not in ref
            else:
                assert torch.equal(ref[ref_key].flatten(), sd[target_key].flatten()), ref_key
    else:
        pairs = {
            "decoder.mid.block_1.norm1.weight": "decoder.mid_block.resnets.0.spatial_res_block.norm1.weight",
            "decoder.up.1.block.2.time_stack.in_layers.2.weight": "decoder.up_blocks.0.resnets.2.temporal_res_block.conv1.weight",
            "decoder.up.0.block.0.mix_factor": "decoder.up_blocks.1.resnets.0.time_mixer.mix_factor",
            "decoder.conv_out.time_mix_conv.weight": "decoder.time_conv_out.weight",
            "decoder.conv_out.weight": "decoder.conv_out.weight",
        }
        for ref_key, target_key in pairs.items():
            assert torch.equal(ref[ref_key], sd[target_key]), ref_key
    got_type, got_cfg = vae_config_from_reference(ref, sample_size=16)
    assert got_type == vae_type
    assert list(got_cfg["block_out_channels"]) == list(cfg["vae"]["block_out_channels"])
    back = convert_vae_state_dict(ref, vae_type, got_cfg)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


# --------------------------------------------------------------------------------------- CLIP


def _openclip_visual_forward(sd: dict, image: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenCLIP VisionTransformer.forward written from its definition (nn.MultiheadAttention's packed
    in_proj, pre-norm blocks, exact GELU, ln_post on the class token, then ``@ proj``)."""
    x = F.conv2d(image, sd["conv1.weight"], stride=sd["conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, N, W)
    cls = sd["class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["positional_embedding"]
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), sd["ln_pre.weight"], sd["ln_pre.bias"])
    i = 0
    while f"transformer.resblocks.{i}.ln_1.weight" in sd:
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"]).transpose(0, 1)
        h, _ = F.multi_head_attention_forward(
            h, h, h, width, heads, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"],
            None, None, False, 0.0, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"],
            need_weights=False,
        )  # fmt: skip
        x = x + h.transpose(0, 1)
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
        x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
        i += 1
    pooled = F.layer_norm(x[:, 0], (width,), sd["ln_post.weight"], sd["ln_post.bias"])
    return pooled @ sd["proj"]


def test_clip_mapping_matches_openclip_forward(tiny_sv3d_p):
    clip = tiny_sv3d_p["image_encoder"]
    cfg = clip.config.to_dict()
    ref = clip_state_dict_to_reference(clip.state_dict(), cfg)
    assert ref["transformer.resblocks.0.attn.in_proj_weight"].shape[0] == 3 * 32
    assert ref["proj"].shape == (32, cfg["projection_dim"])
    inferred = clip_config_from_reference(ref, num_heads=cfg["num_attention_heads"])
    for key, value in inferred.items():
        assert cfg[key] == value, key
    image = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = _openclip_visual_forward(ref, image, heads=cfg["num_attention_heads"])
        got = clip(pixel_values=image).image_embeds
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    back = convert_clip_state_dict(ref, cfg)
    sd = clip.state_dict()
    assert back.keys() == {k for k in sd if k != "vision_model.embeddings.position_ids"}
    assert all(torch.equal(back[k], sd[k]) for k in back)


# --------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("kind", ["sv3d_p", "svd", "sv3d_u"])
def test_convert_checkpoint_round_trip(tmp_path, kind, tiny_sv3d_p):
    cfg = _config(kind)
    if kind == "sv3d_p":
        comps = tiny_sv3d_p
    else:
        comps = build_components(cfg)
        for i, m in enumerate(comps.values()):
            _randomize(m, 10 + i)
    text_tower = {"conditioner.embedders.0.open_clip.model.logit_scale": torch.ones(())}
    ckpt, yml = _write_reference(tmp_path, comps, kind, cfg, text_tower)
    report = convert_checkpoint(ckpt, tmp_path / "out", config_yaml=yml, resolution=16, clip_num_heads=4)
    assert report.conditioning == kind
    assert set(report.parts) == {"unet", "image_encoder", "vae.encoder", "vae.decoder"}
    assert any("text-tower" in item for item in report.ignored)
    assert (tmp_path / "out" / "conversion_report.json").is_file()

    loaded, info = load_components(tmp_path / "out")
    assert info.conditioning == kind and info.vae_type == cfg["vae"]["type"]
    for part, module in comps.items():
        a, b = module.state_dict(), loaded[part].state_dict()
        assert a.keys() == b.keys(), part
        assert all(torch.equal(a[k], b[k]) for k in a), part
    # same network, same outputs
    unet = comps["unet"]
    per_frame = unet.config.per_frame_conditioning
    k = len(unet.config.addition_time_embed_dims)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 8, 8, generator=g)
    ids = torch.rand((1, 3, k) if per_frame else (1, k), generator=g)
    ctx = torch.randn(1, 1, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded["unet"](x, torch.tensor([0.3]), ctx, ids).sample,
            unet(x, torch.tensor([0.3]), ctx, ids).sample,
        )


def test_vae_encoder_from_another_source(tmp_path, tiny_sv3d_p):
    cfg = _config("sv3d_p")
    sd = to_reference_checkpoint(tiny_sv3d_p)
    without = {k: v for k, v in sd.items() if not k.startswith("conditioner.embedders.1.")}
    ckpt = tmp_path / "sv3d_no_encoder.safetensors"
    save_file(without, str(ckpt))
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump(reference_yaml(cfg["unet"], "sv3d_p")))
    with pytest.raises(InputError, match="give vae_from: an SVD/SV3D") as info:
        convert_checkpoint(ckpt, tmp_path / "o1", config_yaml=yml, resolution=16, clip_num_heads=4)
    from mv3d.cli import flag_message

    assert "give --vae-from: an SVD/SV3D" in flag_message(info.value)  # the flag on the command line
    # a diffusers VAE folder
    tiny_sv3d_p["vae"].save_pretrained(tmp_path / "vae")
    report = convert_checkpoint(
        ckpt, tmp_path / "o2", config_yaml=yml, vae_from=tmp_path / "vae", resolution=16, clip_num_heads=4
    )
    assert "diffusers VAE" in report.parts["vae.encoder"]
    loaded, _ = load_components(tmp_path / "o2")
    a, b = tiny_sv3d_p["vae"].state_dict(), loaded["vae"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another Stability file holding the conditioning VAE
    full = tmp_path / "full.safetensors"
    save_file(sd, str(full))
    report = convert_checkpoint(
        ckpt, tmp_path / "o3", config_yaml=yml, vae_from=full, resolution=16, clip_num_heads=4
    )
    assert "conditioner.embedders.1.encoder" in report.parts["vae.encoder"]


def test_convert_checkpoint_checks_the_resolution_as_the_cli_does(tmp_path):
    """`mv3d convert-weights --resolution 100` is refused; from Python any side went into the model's info
    (a model that fails when it samples). Refused before the checkpoint is read, naming the argument."""
    from mv3d.cli import flag_message

    for bad in (0, 100, 100000, 576.0):
        with pytest.raises(InputError, match=f"^resolution {bad}: expected") as info:
            convert_checkpoint(tmp_path / "absent.safetensors", tmp_path / "out", resolution=bad)
        assert info.value.field == "resolution"
        assert flag_message(info.value).startswith(f"--resolution {bad}: expected")
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_give_one_clear_error(tmp_path, tiny_sv3d_p):
    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    sd = to_reference_checkpoint(tiny_sv3d_p)

    def convert(path, **kw):
        return convert_checkpoint(
            path,
            tmp_path / "out",
            config_yaml=kw.pop("config_yaml", yml),
            resolution=16,
            clip_num_heads=4,
            **kw,
        )

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(InputError, match="garbage.safetensors: not a readable safetensors file"):
        convert(garbage)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:-1000])
    with pytest.raises(InputError, match="truncated.safetensors: truncated file"):
        convert(truncated)
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(InputError, match="pickle-based"):
        Checkpoint(pickle)
    with pytest.raises(InputError, match="no such checkpoint"):
        Checkpoint(tmp_path / "absent.safetensors")

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(InputError, match="not a Stability SVD/SV3D checkpoint"):
        convert(other)

    key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in sd.items() if k != key}, str(missing))
    with pytest.raises(
        InputError,
        match=r"missing.safetensors: UNet lacks 1 tensor.*down_blocks\.0\.resnets\.0\.spatial_res_block\.conv1\.weight",
    ):
        convert(missing)

    wrong = tmp_path / "wrong.safetensors"
    save_file({**sd, key: torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(
        InputError, match=r"wrong.safetensors: UNet tensor .* has shape \(3, 3\), the model expects"
    ):
        convert(wrong)

    extra = tmp_path / "extra.safetensors"
    save_file({**sd, "model.diffusion_model.input_blocks.1.0.bogus.weight": torch.zeros(1)}, str(extra))
    with pytest.raises(InputError, match="no place in the converted model"):
        convert(extra)

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {params: {}}\n")
    with pytest.raises(InputError, match="network_config"):
        read_reference_yaml(bad_yaml)
    with pytest.raises(InputError, match="network_config"):
        convert(ckpt, config_yaml=bad_yaml)
    assert not (tmp_path / "out").exists()  # nothing half-written


_NETWORK_EDITS = {
    # sizes that used to build for minutes, run out of memory or allocate 288 GB
    "num_res_blocks_huge": ("num_res_blocks", 100000, "num_res_blocks 100000: expected 1 to 16"),
    "levels_huge": ("channel_mult", [1] * 5000, "levels 5000: expected 1 to 8"),
    "depth_huge": ("transformer_depth", 10**6, "transformer_depth 1000000: expected 1 to 16"),
    "model_channels_huge": ("model_channels", 10**9, "model_channels 1000000000: expected 1 to 4096"),
    # types and shapes that used to be ValueError / TypeError / IndexError / ZeroDivisionError tracebacks
    "heads_string": ("num_head_channels", "x", "mistype"),
    "in_channels_string": ("in_channels", "x", "in_channels|mistype"),
    "adm_string": ("adm_in_channels", "abc", "mistype"),
    "kernel_not_a_list": ("video_kernel_size", 5, "mistype"),
    "no_levels": ("channel_mult", [], "levels 0"),
    "depth_per_level_short": ("transformer_depth", [1], "one per level"),
    "zero_mult": ("channel_mult", [0, 0], "channel_mult 0"),
}


@pytest.mark.parametrize("name", sorted(_NETWORK_EDITS) + ["emb_not_a_mapping", "outdim_string"])
def test_bad_reference_yaml_settings_give_one_line(name, tmp_path, tiny_sv3d_p):
    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    doc = yaml.safe_load(yml.read_text())
    embs = doc["model"]["params"]["conditioner_config"]["params"]["emb_models"]
    if name == "emb_not_a_mapping":
        embs[0], match = "x", "emb_models"
    elif name == "outdim_string":
        embs[0]["params"]["outdim"], match = "x", "emb_models"
    else:
        key, value, match = _NETWORK_EDITS[name]
        doc["model"]["params"]["network_config"]["params"][key] = value
    yml.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=match) as info:
        convert_checkpoint(ckpt, tmp_path / "out", config_yaml=yml, resolution=16, clip_num_heads=4)
    assert str(yml) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_convert_weights(tmp_path, tiny_sv3d_p, capsys):
    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(ckpt.read_bytes()[:-500])
    from mv3d.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["convert-weights", str(truncated), "--config", str(yml), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mv3d: error: ") and "truncated" in lines[0]
    assert "Traceback" not in err

    from typer.testing import CliRunner

    from mv3d.cli import app

    result = CliRunner().invoke(
        app,
        [
            "convert-weights",
            str(ckpt),
            "--config",
            str(yml),
            "--out",
            str(tmp_path / "ok"),
            "--resolution",
            "16",
        ],
    )
    # the CLI infers the head count of the image encoder (width 32 -> 1 head); it loads either way
    assert result.exit_code == 0, result.output
    assert "sv3d_p" in result.output and "unet" in result.output
    _, info = load_components(tmp_path / "ok")
    assert info.conditioning == "sv3d_p" and info.frame_order == "sv3d"


def test_converted_model_save_pretrained_round_trip_and_user_folders(tmp_path, tiny_sv3d_p):
    """Converted -> `MultiViewPipeline.from_pretrained` -> `save_pretrained` -> reload is exact; and
    `save_pretrained`, which replaces its folder whole, leaves a folder of the user's files alone."""
    from video_prior.pipeline import MultiViewPipeline

    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    convert_checkpoint(ckpt, tmp_path / "conv", config_yaml=yml, resolution=16, clip_num_heads=4)
    pipe = MultiViewPipeline.from_pretrained(tmp_path / "conv")
    pipe.save_pretrained(tmp_path / "again")
    again = MultiViewPipeline.from_pretrained(tmp_path / "again")
    assert again.info.to_dict() == pipe.info.to_dict()
    for part, module in pipe.components.items():
        a, b = module.state_dict(), again.components[part].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    pipe.save_pretrained(tmp_path / "again")  # a model folder is replaced

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    with pytest.raises(InputError, match="not an mv3d model folder"):
        pipe.save_pretrained(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    with pytest.raises(InputError, match="not a folder"):
        pipe.save_pretrained(mine / "thesis.txt")
    assert (mine / "thesis.txt").read_text() == "precious"
    pipe.save_pretrained(mine, overwrite=True)
    assert not (mine / "thesis.txt").exists() and (mine / "mv3d_model.json").is_file()


def test_cli_convert_weights_mistakes_are_one_line(tmp_path, tiny_sv3d_p, capsys):
    """Mistakes a user makes with the options: one line, exit code 2, nothing replaced or half-written.
    Each used to be a traceback (an --out file with --overwrite: after the whole conversion; a binary
    --config: UnicodeDecodeError) or to be told only after the checkpoint was read."""
    from mv3d.cli import main

    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    before = ckpt.read_bytes()
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    out = str(tmp_path / "o")
    cases = [
        (["--out", str(ckpt), "--overwrite"], "never replaces a file by a folder"),
        (["--config", str(binary), "--out", out], "binary.yaml: not a text file"),
        (["--config", str(big), "--out", out], "big.yaml: .* bytes: expected an sgm inference YAML"),
        (
            ["--num-frames", "100000", "--out", out],
            "--num-frames 100000: expected a frame count from 1 to 1024",
        ),
        (["--dtype", "float64", "--out", out], "--dtype 'float64': expected one of"),
    ]
    for args, match in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["convert-weights", str(ckpt), "--resolution", "16", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mv3d: error: "), err
        assert re.search(match, lines[0]), (match, lines[0])
    assert ckpt.read_bytes() == before
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "config_text, match",
    [
        ("[1, 2]", "config.json: a list: expected a diffusers VAE config"),
        ('{"block_out_channels": [32, 64]}', "config.json: lacks or mistypes a VAE setting"),
    ],
)
def test_vae_from_folder_with_a_bad_config_is_one_line(tmp_path, tiny_sv3d_p, config_text, match):
    """A --vae-from diffusers folder whose config.json is not a VAE config (was a TypeError / KeyError)."""
    cfg = _config("sv3d_p")
    ckpt, yml = _write_reference(tmp_path, tiny_sv3d_p, "sv3d_p", cfg)
    tiny_sv3d_p["vae"].save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text(config_text)
    with pytest.raises(InputError, match=match):
        convert_checkpoint(
            ckpt,
            tmp_path / "out",
            config_yaml=yml,
            vae_from=tmp_path / "vae",
            resolution=16,
            clip_num_heads=4,
        )
    assert not (tmp_path / "out").exists()
