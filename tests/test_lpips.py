"""LPIPS without torchvision: loading the published weight layouts, and the metric's known properties."""

from __future__ import annotations

import pytest
import torch

from eval.lpips import BACKBONE_FILES, HEAD_FILES, LPIPS, lpips
from render.common import InputError

# torchvision's conv indices in `features` and their shapes (out, in, k, k).
ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
ALEX_HEADS = (64, 192, 384, 256, 256)
VGG_CHANNELS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG_HEADS = (64, 128, 256, 512, 512)


def _alex_state(gen):
    state = {}
    for idx, (cout, cin, k) in ALEX_CONVS.items():
        state[f"features.{idx}.weight"] = (
            torch.randn(cout, cin, k, k, generator=gen) * (2.0 / (cin * k * k)) ** 0.5
        )
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    state["classifier.1.weight"] = torch.zeros(4, 4)  # present in the real file, ignored
    return state


def _vgg_state(gen):
    state, idx, cin = {}, 0, 3
    for c in VGG_CHANNELS:
        if c == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(c, cin, 3, 3, generator=gen) * (2.0 / (cin * 9)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(c)
        cin, idx = c, idx + 2
    return state


def _heads(channels, gen):
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for k, c in enumerate(channels)}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    gen = torch.Generator().manual_seed(0)
    torch.save(_alex_state(gen), d / BACKBONE_FILES["alex"])
    torch.save(_heads(ALEX_HEADS, gen), d / HEAD_FILES["alex"])
    torch.save(_vgg_state(gen), d / BACKBONE_FILES["vgg"])
    torch.save(_heads(VGG_HEADS, gen), d / HEAD_FILES["vgg"])
    return d


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_loads_published_layouts_and_properties(weights_dir, net):
    model = LPIPS.from_dir(net, weights_dir)
    ref = torch.load(weights_dir / HEAD_FILES[net], weights_only=True)
    assert torch.equal(model.lins[0].weight, ref["lin0.model.1.weight"])
    bb = torch.load(weights_dir / BACKBONE_FILES[net], weights_only=True)
    assert torch.equal(model.net.features[0].weight, bb["features.0.weight"])

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    noise = torch.randn(2, 3, 64, 64, generator=gen)
    small = (x + 0.05 * noise).clamp(0, 1)
    large = (x + 0.3 * noise).clamp(0, 1)
    d_same = lpips(x, x, model)
    assert d_same.shape == (2,)
    assert torch.allclose(d_same, torch.zeros(2), atol=1e-6)
    assert torch.allclose(lpips(x, large, model), lpips(large, x, model), atol=1e-5)
    d_small, d_large = lpips(x, small, model), lpips(x, large, model)
    assert torch.all(d_small > 0) and torch.all(d_large > d_small)


def test_missing_files_name_path_and_source(tmp_path, weights_dir):
    with pytest.raises(InputError, match=r"alexnet-owt-7be5be79\.pth.*download\.pytorch\.org"):
        LPIPS.from_dir("alex", tmp_path)
    with pytest.raises(InputError, match=r"vgg\.pth.*PerceptualSimilarity"):
        LPIPS.from_files("vgg", weights_dir / BACKBONE_FILES["vgg"], tmp_path / "vgg.pth")
    with pytest.raises(InputError, match="expected one of"):
        LPIPS.from_dir("squeeze", weights_dir)


def test_wrong_layout_is_a_clear_error(tmp_path, weights_dir):
    bad = tmp_path / "bad.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, bad)
    with pytest.raises(InputError, match="not a torchvision alex checkpoint"):
        LPIPS.from_files("alex", bad, weights_dir / HEAD_FILES["alex"])
    with pytest.raises(InputError, match="missing key lin1"):
        LPIPS.from_files("alex", weights_dir / BACKBONE_FILES["alex"], bad)
    # vgg heads into the alex model: shapes differ.
    with pytest.raises(InputError, match="expected"):
        LPIPS.from_files("alex", weights_dir / BACKBONE_FILES["alex"], weights_dir / HEAD_FILES["vgg"])
