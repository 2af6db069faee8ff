"""The frozen EfficientNet-Lite0 image encoder and the UNet's encoder_hid_proj."""

from __future__ import annotations

import copy

import pytest
import torch

from video_prior.components import build_components, load_components, save_components, tiny_config
from video_prior.conditioning import clip_embed
from video_prior.image_encoders import EfficientNetLite0Encoder, _SameConv2d


def test_same_padding_matches_tensorflow_output_sizes():
    conv = _SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 224, 224)
    y = conv(x)
    assert y.shape[-2:] == (112, 112)
    # TF "SAME" with an even input and stride 2 pads one pixel at the bottom / right only: the first
    # output sees a full 3x3 window (9), the last row and column see a padded one (6, 4 in the corner).
    assert y[0, 0, 0, 0] == 9 and y[0, 0, -1, 0] == 6 and y[0, 0, -1, -1] == 4
    assert _SameConv2d(1, 1, 5, stride=2)(torch.ones(1, 1, 7, 7)).shape[-2:] == (4, 4)


def test_tokens_shape_and_imagenet_state_dict_round_trip():
    torch.manual_seed(0)
    enc = EfficientNetLite0Encoder(image_size=64, token_grid=2).eval()
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    tokens = enc.embed(images)
    assert tokens.shape == (2, 5, 1280)
    # the first token is the global average of the feature map; the grid tokens average to it
    torch.testing.assert_close(tokens[:, 1:].mean(dim=1), tokens[:, 0], rtol=1e-5, atol=1e-5)
    # the published layout carries a classifier and step counters: both are dropped on loading
    published = {k: v.clone() for k, v in enc.state_dict().items()}
    published["_fc.weight"], published["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    again = EfficientNetLite0Encoder.from_imagenet_state_dict(published, image_size=64, token_grid=2)
    torch.testing.assert_close(again.embed(images), tokens)
    del published["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(ValueError, match="missing"):
        EfficientNetLite0Encoder.from_imagenet_state_dict(published)
    # clip_embed dispatches to the encoder's own preprocessing
    torch.testing.assert_close(clip_embed(enc, images), tokens)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_encoder_embeds_on_the_cpu(dtype):
    # `mv3d generate --dtype bfloat16` on a CPU stopped with a traceback: torch's antialiased bicubic
    # resize has no half-precision CPU kernel. The resize runs in float32, the network in `dtype`.
    torch.manual_seed(0)
    enc = EfficientNetLite0Encoder(image_size=64, token_grid=1).eval()
    images = torch.rand(1, 3, 40, 40) * 2 - 1
    reference = enc.embed(images)
    tokens = enc.to(dtype).embed(images)
    assert tokens.dtype == dtype and tokens.shape == reference.shape
    torch.testing.assert_close(tokens.float(), reference, rtol=0.1, atol=0.1)


def _efficientnet_config() -> dict:
    config = tiny_config(num_frames=3, sample_size=16)
    config = copy.deepcopy(config)
    config["unet"]["encoder_hid_dim"] = 1280
    config["image_encoder"] = {"type": "efficientnet_lite0", "image_size": 32, "token_grid": 1}
    return config


def test_components_with_efficientnet_encoder_save_and_load(tmp_path):
    torch.manual_seed(0)
    config = _efficientnet_config()
    components = build_components(config)
    assert isinstance(components["image_encoder"], EfficientNetLite0Encoder)
    unet = components["unet"]
    assert unet.encoder_hid_proj.in_features == 1280 and unet.encoder_hid_proj.out_features == 32
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    ctx = clip_embed(components["image_encoder"], images)  # (1, 2, 1280)
    sample = torch.randn(1, 3, 8, 8, 8)
    ids = torch.zeros(1, 3, 3)
    with torch.no_grad():
        out = unet(sample, torch.tensor([0.5]), ctx, ids).sample
    assert out.shape == (1, 3, 4, 8, 8)
    from video_prior.components import model_info_from_config

    path = save_components(components, model_info_from_config(config), tmp_path / "m")
    loaded, _ = load_components(path)
    assert isinstance(loaded["image_encoder"], EfficientNetLite0Encoder)
    with torch.no_grad():
        torch.testing.assert_close(loaded["unet"](sample, torch.tensor([0.5]), ctx, ids).sample, out)
        torch.testing.assert_close(clip_embed(loaded["image_encoder"], images), ctx)


def test_mismatched_encoder_width_is_one_clear_error():
    from render.common import InputError

    config = _efficientnet_config()
    del config["unet"]["encoder_hid_dim"]
    with pytest.raises(InputError, match="1280-wide tokens"):
        build_components(config)
    config = _efficientnet_config()
    config["image_encoder"]["type"] = "resnet"
    with pytest.raises(InputError, match="image_encoder type"):
        build_components(config)
