"""Components: building from configs, save/load round trip, conditioning helpers, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

from render.common import InputError
from video_prior.components import (
    ModelInfo,
    build_components,
    load_components,
    model_info_from_config,
    save_components,
    sv3d_config,
    tiny_config,
)
from video_prior.conditioning import (
    camera_time_ids,
    clip_embed,
    condition_latent,
    conditioning_kind,
    decode_latents,
    encode_frames,
    reference_resize,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = tiny_config(num_frames=4, sample_size=16, conditioning="sv3d_p")
    return cfg, build_components(cfg)


def test_tiny_components_are_small_and_typed(tiny):
    cfg, comps = tiny
    assert set(comps) == {"unet", "vae", "image_encoder"}
    assert isinstance(comps["vae"], AutoencoderKL)
    assert comps["vae"].config.use_post_quant_conv is False
    total = sum(p.numel() for m in comps.values() for p in m.parameters())
    assert total < 3_000_000
    info = model_info_from_config(cfg)
    assert info.conditioning == "sv3d_p" and info.vae_type == "image" and info.resolution == 16


def test_temporal_vae_by_type():
    comps = build_components(tiny_config(conditioning="svd"))
    assert isinstance(comps["vae"], AutoencoderKLTemporalDecoder)
    assert conditioning_kind(comps["unet"].config) == "svd"


def test_no_class_names_in_configs():
    for cfg in (tiny_config(), sv3d_config("sv3d_p"), sv3d_config("svd")):
        text = json.dumps(cfg)
        for name in ("AutoencoderKL", "MultiViewUNet", "CLIPVision", "UNetSpatioTemporal"):
            assert name not in text


def test_sv3d_config_infos():
    p, svd = model_info_from_config(sv3d_config("sv3d_p")), model_info_from_config(sv3d_config("svd"))
    assert (p.frame_order, p.num_frames, p.resolution, p.default_cond_aug) == ("sv3d", 21, 576, 1e-5)
    assert p.overwrite_input_frame and not svd.overwrite_input_frame
    assert (svd.vae_type, svd.default_cond_aug, svd.default_steps) == ("temporal", 0.02, 25)


def test_sv3d_config_matches_reference_size():
    # Count parameters on the meta device: no memory is allocated for the 1.5 B weights.
    from video_prior.unet import MultiViewUNet

    with torch.device("meta"):
        unet = MultiViewUNet(**sv3d_config("sv3d_p")["unet"])
    n = sum(p.numel() for p in unet.parameters())
    assert 1.50e9 < n < 1.54e9
    assert unet.add_embedding.linear_1.in_features == 1280


def test_bad_configs_raise_input_error():
    cfg = tiny_config()
    with pytest.raises(InputError, match="vae type 'fancy'"):
        build_components({**cfg, "vae": {**cfg["vae"], "type": "fancy"}})
    with pytest.raises(InputError, match="missing sections"):
        build_components({"unet": cfg["unet"]})
    with pytest.raises(InputError, match="16-wide tokens"):
        build_components({**cfg, "image_encoder": {**cfg["image_encoder"], "projection_dim": 16}})
    with pytest.raises(InputError, match="frame_order"):
        ModelInfo(frame_order="backwards")
    # Sizes are bounded before anything is allocated: each of these asked for terabytes, or built for
    # hours, before it failed.
    unet = cfg["unet"]
    levels = len(unet["block_out_channels"])
    with pytest.raises(InputError, match=r"^model config unet block_out_channels 1000000: expected at most"):
        build_components({**cfg, "unet": {**unet, "block_out_channels": [10**6] * levels}})
    with pytest.raises(InputError, match=r"^model config unet layers_per_block 100000: expected at most 256"):
        build_components({**cfg, "unet": {**unet, "layers_per_block": 100000}})
    with pytest.raises(InputError, match=r"^model config: [\d,]+ parameters: expected at most 8,000,000,000"):
        build_components({**cfg, "unet": {**unet, "block_out_channels": [60000] * levels}})


def test_save_load_round_trip(tiny, tmp_path):
    cfg, comps = tiny
    info = model_info_from_config(cfg)
    save_components(comps, info, tmp_path / "model")
    assert (tmp_path / "model" / "mv3d_model.json").is_file()
    loaded, info2 = load_components(tmp_path / "model")
    assert info2 == info
    for name in comps:
        a, b = comps[name].state_dict(), loaded[name].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in loaded["unet"].parameters())
    # a loaded model saved again does not record the folder it was loaded from (diffusers' _name_or_path)
    save_components(loaded, info2, tmp_path / "again")
    for part in comps:
        config = json.loads((tmp_path / "again" / part / "config.json").read_text())
        assert "_name_or_path" not in config, part


def test_load_errors_are_one_line(tmp_path, tiny):
    with pytest.raises(InputError, match="does not exist"):
        load_components(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="mv3d_model.json"):
        load_components(tmp_path / "empty")
    cfg, comps = tiny
    save_components(comps, model_info_from_config(cfg), tmp_path / "m")
    info = json.loads((tmp_path / "m" / "mv3d_model.json").read_text())
    (tmp_path / "m" / "mv3d_model.json").write_text(json.dumps({**info, "vae_type": "temporal"}))
    with pytest.raises(InputError, match="vae_type"):
        load_components(tmp_path / "m")
    (tmp_path / "m" / "mv3d_model.json").write_text(json.dumps(info))
    weights = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated file
    with pytest.raises(InputError, match="cannot load weights"):
        load_components(tmp_path / "m")


def test_camera_time_ids_layouts():
    cond_aug = torch.tensor([0.02, 0.05])
    polar = torch.rand(2, 5)
    azimuth = torch.rand(2, 5)
    ids = camera_time_ids("sv3d_p", cond_aug, polar, azimuth)
    assert ids.shape == (2, 5, 3)
    assert torch.equal(ids[..., 0], cond_aug[:, None].expand(2, 5))
    assert torch.equal(ids[..., 1], polar) and torch.equal(ids[..., 2], azimuth)
    assert camera_time_ids("sv3d_u", cond_aug).shape == (2, 1)
    svd = camera_time_ids("svd", cond_aug, fps_id=6, motion_bucket_id=100)
    assert torch.equal(svd, torch.tensor([[6.0, 100.0, 0.02], [6.0, 100.0, 0.05]]))
    # a UNet config works as well as a kind name
    assert camera_time_ids(tiny_config()["unet"], cond_aug, polar, azimuth).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="polar"):
        camera_time_ids("sv3d_p", cond_aug)


def test_clip_embed_resizes_and_normalises(tiny):
    _, comps = tiny
    enc = comps["image_encoder"]
    img = torch.rand(2, 3, 40, 40) * 2 - 1
    emb = clip_embed(enc, img)
    assert emb.shape == (2, 1, 32)
    # the same image at the encoder's size gives the same embedding as its resized version
    small = reference_resize(img, (16, 16))
    torch.testing.assert_close(clip_embed(enc, small), emb)
    assert not torch.allclose(clip_embed(enc, -img), emb)
    # and not torch's antialiased bicubic, which the reference does not use
    torch_aa = torch.nn.functional.interpolate(
        img, size=(16, 16), mode="bicubic", align_corners=True, antialias=True
    )
    assert (clip_embed(enc, torch_aa) - emb).abs().max() > 1e-3


def test_reference_resize_is_gaussian_then_bicubic_by_hand():
    """Halving (factor 2): sigma = (2 - 1) / 2 = 0.5, kernel size max(int(4 * 0.5), 3) = 3, taps
    (e^-2, 1, e^-2) / (1 + 2 e^-2), the border reflected; then plain bicubic with aligned corners."""
    x = torch.rand(1, 2, 12, 10, generator=torch.Generator().manual_seed(1))
    t = torch.exp(torch.tensor(-2.0))
    taps = torch.stack([t, torch.tensor(1.0), t]) / (1 + 2 * t)
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")  # reflect: row -1 is row 1
    rows = taps[0] * pad[..., :-2, :] + taps[1] * pad[..., 1:-1, :] + taps[2] * pad[..., 2:, :]
    blurred = taps[0] * rows[..., :-2] + taps[1] * rows[..., 1:-1] + taps[2] * rows[..., 2:]
    expected = torch.nn.functional.interpolate(blurred, size=(6, 5), mode="bicubic", align_corners=True)
    torch.testing.assert_close(reference_resize(x, (6, 5)), expected)
    # enlarging never blurs: plain bicubic (whose kernel differs from torch's antialiased one)
    up = torch.nn.functional.interpolate(x, size=(24, 20), mode="bicubic", align_corners=True)
    torch.testing.assert_close(reference_resize(x, (24, 20)), up)
    assert reference_resize(x, (12, 10)) is x


@pytest.mark.parametrize(
    "shape,size",
    [((576, 576), (224, 224)), ((40, 40), (16, 16)), ((97, 131), (31, 40)), ((16, 24), (32, 12))],
)
def test_reference_resize_equals_kornia(shape, size):
    """The reference calls kornia.geometry.resize(x, (224, 224), "bicubic", align_corners=True,
    antialias=True); mv3d must give the same pixels without depending on kornia."""
    kornia = pytest.importorskip("kornia")
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected = kornia.geometry.resize(x, size, interpolation="bicubic", align_corners=True, antialias=True)
    torch.testing.assert_close(reference_resize(x, size), expected, atol=1e-6, rtol=0)


def test_condition_latent_is_unscaled_posterior_mode(tiny):
    _, comps = tiny
    vae = comps["vae"]
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        lat = condition_latent(vae, img, torch.zeros(2))
        torch.testing.assert_close(lat, vae.encode(img).latent_dist.mode())
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        a = condition_latent(vae, img, torch.full((2,), 0.5), generator=g1)
        b = condition_latent(vae, img, torch.full((2,), 0.5), generator=g2)
    assert lat.shape == (2, 4, 8, 8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, lat)


@pytest.mark.parametrize("conditioning", ["sv3d_p", "svd"])
def test_encode_decode_chunking(conditioning):
    torch.manual_seed(0)
    vae = build_components(tiny_config(conditioning=conditioning))["vae"]
    frames = torch.rand(1, 5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        lat = encode_frames(vae, frames, chunk_size=2)
        assert lat.shape == (1, 5, 4, 8, 8)
        torch.testing.assert_close(lat[0, 3], vae.encode(frames[0, 3:4]).latent_dist.mode()[0] * 0.18215)
        out = decode_latents(vae, lat, chunk_size=5)
        assert out.shape == (1, 5, 3, 16, 16) and out.abs().max() <= 1.0
        # scaled latents decode as the decoder's image of the posterior mode, the scale divided out
        kwargs = {"num_frames": 5} if conditioning == "svd" else {}
        direct = vae.decode(vae.encode(frames[0]).latent_dist.mode(), **kwargs).sample.clamp(-1.0, 1.0)
        torch.testing.assert_close(out[0], direct, rtol=1e-4, atol=1e-5)
        if conditioning == "sv3d_p":
            # an image decoder treats frames independently: chunking does not change the result
            torch.testing.assert_close(decode_latents(vae, lat, chunk_size=2), out, rtol=1e-5, atol=1e-5)


class _Opens:
    def __reduce__(self):
        return (open, (str(_Opens.target), "w"))


def test_a_pickle_as_a_weight_file_is_refused_in_one_line(tmp_path, tiny):
    """image_encoder/pytorch_model.bin holding a pickle with code: one mv3d line, nothing run, and not
    torch's suggestion to retry with weights_only=False."""
    import pickle

    cfg, comps = tiny
    save_components(comps, model_info_from_config(cfg), tmp_path / "m")
    folder = tmp_path / "m" / "image_encoder"
    for f in folder.glob("*.safetensors"):
        f.unlink()
    _Opens.target = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Opens()}))
    with pytest.raises(InputError) as info:
        load_components(tmp_path / "m")
    message = str(info.value)
    assert "refused" in message and "weights_only" not in message and "\n" not in message
    assert not _Opens.target.exists()


def test_every_torch_load_in_mv3d_is_weights_only():
    """No code from data: each torch.load call in the packages passes weights_only=True."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    calls = []
    for folder in ("mv3d", "render", "video_prior", "eval", "recipes", "bench", "tools"):
        for path in (root / folder).rglob("*.py"):
            text = path.read_text()
            for m in re.finditer(r"torch\.load\(", text):
                depth, end = 0, m.end() - 1
                for end in range(m.end() - 1, len(text)):
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    if depth == 0:
                        break
                calls.append((path.name, text[m.start() : end + 1]))
    assert calls, "expected torch.load calls to check"
    assert all("weights_only=True" in call for _, call in calls), [
        c for c in calls if "weights_only=True" not in c[1]
    ]
