"""MultiViewUNet: shapes, per-frame camera conditioning, config round trip, equivalence with stock diffusers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from video_prior.components import tiny_config
from video_prior.unet import MultiViewUNet, MultiWidthSinusoids

B, F, H = 2, 4, 8


def _unet(conditioning: str = "sv3d_p", seed: int = 0) -> MultiViewUNet:
    torch.manual_seed(seed)
    return MultiViewUNet(**tiny_config(num_frames=F, conditioning=conditioning)["unet"]).eval()


def _inputs(k: int, per_frame: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(B, F, 8, H, H, generator=g)
    timestep = torch.tensor([0.3, -1.2])
    context = torch.randn(B, 1, 32, generator=g)
    ids = torch.rand((B, F, k) if per_frame else (B, k), generator=g) * 3.0
    return sample, timestep, context, ids


def _spatial_only(unet: MultiViewUNet) -> MultiViewUNet:
    """Force every learned_with_images blend to alpha = sigmoid(100) = 1.0 exactly: no temporal mixing."""
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(100.0)
    return unet


def test_sinusoids_are_cos_first_with_max_period_10000():
    emb = MultiWidthSinusoids([4, 8])(torch.tensor([[0.0, 2.0]]))
    assert emb.shape == (1, 12)
    # scalar 0 -> cos(0) = 1 then sin(0) = 0
    assert torch.equal(emb[0, :4], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    freqs = torch.tensor([10000.0 ** (-i / 4) for i in range(4)])
    expected = torch.cat([torch.cos(2.0 * freqs), torch.sin(2.0 * freqs)])
    torch.testing.assert_close(emb[0, 4:], expected)
    assert math.isclose(float(emb[0, 4]), math.cos(2.0), rel_tol=1e-6)


@pytest.mark.parametrize(
    "conditioning,k,per_frame", [("sv3d_p", 3, True), ("sv3d_u", 1, False), ("svd", 3, False)]
)
def test_forward_shapes(conditioning, k, per_frame):
    unet = _unet(conditioning)
    assert unet.config.per_frame_conditioning is per_frame
    assert unet.num_conditioning_scalars == k
    sample, t, ctx, ids = _inputs(k, per_frame)
    with torch.no_grad():
        out = unet(sample, t, ctx, ids).sample
    assert out.shape == (B, F, 4, H, H)
    assert torch.isfinite(out).all()
    # a non-multiple spatial size is handled by explicit upsample sizes
    with torch.no_grad():
        odd = unet(sample[..., :6, :6], t, ctx, ids, return_dict=False)[0]
    assert odd.shape == (B, F, 4, 6, 6)


def test_per_frame_ids_broadcast_and_shape_errors():
    unet = _unet("sv3d_p")
    sample, t, ctx, ids = _inputs(3, True)
    same = ids[:, :1].expand(B, F, 3).contiguous()
    with torch.no_grad():
        a = unet(sample, t, ctx, same).sample
        b = unet(sample, t, ctx, same[:, 0]).sample  # (B, K) means "the same vector for every frame"
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="added_time_ids"):
        unet(sample, t, ctx, ids[..., :2])
    with pytest.raises(ValueError, match="added_time_ids"):
        _unet("svd")(sample, t, ctx, ids)


def test_camera_of_frame_k_changes_only_embedding_k():
    unet = _unet("sv3d_p")
    _, t, _, ids = _inputs(3, True)
    k = 2
    moved = ids.clone()
    moved[:, k, 2] += 1.0  # turn the camera of frame k
    with torch.no_grad():
        e0 = unet.embed(t, ids, B, F, torch.float32).reshape(B, F, -1)
        e1 = unet.embed(t, moved, B, F, torch.float32).reshape(B, F, -1)
    changed = (e0 - e1).abs().amax(dim=(0, 2))
    assert changed[k] > 1e-4
    assert torch.all(changed[[i for i in range(F) if i != k]] == 0)


def test_camera_of_frame_k_changes_only_output_k_without_temporal_mixing():
    k = 1
    sample, t, ctx, ids = _inputs(3, True)
    moved = ids.clone()
    moved[:, k, 1] -= 0.5  # polar angle of frame k
    moved[:, k, 2] += 1.0  # azimuth of frame k

    # With temporal layers blended out, frames are processed independently: only frame k may change.
    unet = _spatial_only(_unet("sv3d_p"))
    with torch.no_grad():
        diff = (
            (unet(sample, t, ctx, ids).sample - unet(sample, t, ctx, moved).sample)
            .abs()
            .amax(dim=(0, 2, 3, 4))
        )
    assert diff[k] > 1e-5
    assert torch.all(diff[[i for i in range(F) if i != k]] == 0)

    # With the temporal layers on, the change reaches the other frames too (the test above is not vacuous).
    unet = _unet("sv3d_p")
    with torch.no_grad():
        diff = (
            (unet(sample, t, ctx, ids).sample - unet(sample, t, ctx, moved).sample)
            .abs()
            .amax(dim=(0, 2, 3, 4))
        )
    assert diff[k] > 1e-5
    assert diff[(k + 1) % F] > 0


def test_save_pretrained_round_trip(tmp_path):
    unet = _unet("sv3d_p")
    unet.save_pretrained(tmp_path / "unet")
    loaded = MultiViewUNet.from_pretrained(tmp_path / "unet").eval()
    for key in (
        "addition_time_embed_dims",
        "per_frame_conditioning",
        "projection_class_embeddings_input_dim",
    ):
        assert loaded.config[key] == unet.config[key]
    sample, t, ctx, ids = _inputs(3, True)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(sample, t, ctx, ids).sample, unet(sample, t, ctx, ids).sample, rtol=0, atol=0
        )


def test_equivalent_to_stock_diffusers_for_svd_configuration(tmp_path):
    cfg = tiny_config(num_frames=F, conditioning="svd")["unet"]
    width = cfg["addition_time_embed_dims"][0]
    stock_cfg = {
        k: v for k, v in cfg.items() if k not in ("addition_time_embed_dims", "per_frame_conditioning")
    }
    torch.manual_seed(3)
    stock = UNetSpatioTemporalConditionModel(
        **stock_cfg, addition_time_embed_dim=width, projection_class_embeddings_input_dim=3 * width
    ).eval()
    ours = MultiViewUNet(**cfg).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    sample, t, ctx, ids = _inputs(3, False)
    with torch.no_grad():
        expected = stock(sample, t, ctx, ids).sample
        torch.testing.assert_close(ours(sample, t, ctx, ids).sample, expected, rtol=0, atol=1e-6)

    # A stock diffusers folder loads into the subclass unchanged (its config has no per-scalar widths).
    stock.save_pretrained(tmp_path / "stock")
    loaded = MultiViewUNet.from_pretrained(tmp_path / "stock").eval()
    assert loaded.config.addition_time_embed_dims == [width] * 3
    assert loaded.config.per_frame_conditioning is False
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, t, ctx, ids).sample, expected, rtol=0, atol=1e-6)


def test_inconsistent_projection_width_is_rejected():
    cfg = tiny_config(conditioning="sv3d_p")["unet"]
    with pytest.raises(ValueError, match="projection_class_embeddings_input_dim"):
        MultiViewUNet(**cfg, projection_class_embeddings_input_dim=17)


def test_resnet_norm_eps_sets_every_res_block_groupnorm_and_round_trips(tmp_path):
    from torch import nn

    from video_prior.components import tiny_config
    from video_prior.unet import MultiViewUNet

    cfg = dict(tiny_config()["unet"], resnet_norm_eps=1e-5)
    unet = MultiViewUNet(**cfg)
    eps = {m.eps for n, m in unet.named_modules() if isinstance(m, nn.GroupNorm) and "res_block" in n}
    assert eps == {1e-5}
    stock = MultiViewUNet(**tiny_config()["unet"])
    stock_eps = {m.eps for n, m in stock.named_modules() if isinstance(m, nn.GroupNorm) and "res_block" in n}
    assert 1e-6 in stock_eps  # diffusers' own per-block values are kept by default
    unet.save_pretrained(tmp_path / "u")
    again = MultiViewUNet.from_pretrained(tmp_path / "u")
    assert {m.eps for n, m in again.named_modules() if isinstance(m, nn.GroupNorm) and "res_block" in n} == {
        1e-5
    }
