"""LPIPS without torchvision: loading the published weight layouts, and the metric's known properties."""

from __future__ import annotations

import numpy as np
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


def _reference_lpips(state, heads, taps, x, y):
    """LPIPS written out from the paper (eq. 1) with plain functional torch, independently of eval.lpips.

    `state`: a torchvision `features.N.weight/bias` state dict; `taps`: the feature indices whose ReLU
    outputs are compared, each given as the list of (kind, index) layers that lead to it from the previous
    tap. Inputs in [0, 1] go to [-1, 1], then through lpips' ScalingLayer.
    """
    import torch.nn.functional as F

    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def features(img):
        h = (img.double() * 2 - 1 - shift) / scale
        out = []
        for stage in taps:
            for kind, arg in stage:
                if kind == "conv":
                    idx, stride, pad = arg
                    w, b = state[f"features.{idx}.weight"].double(), state[f"features.{idx}.bias"].double()
                    h = F.relu(F.conv2d(h, w, b, stride=stride, padding=pad))
                else:
                    h = F.max_pool2d(h, *arg)
            out.append(h)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (fa, fb) in enumerate(zip(features(x), features(y), strict=True)):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += (w * (na - nb) ** 2).sum(1).mean(dim=(1, 2))
    return total


_ALEX_STAGES = [
    [("conv", (0, 4, 2))],
    [("pool", (3, 2)), ("conv", (3, 1, 2))],
    [("pool", (3, 2)), ("conv", (6, 1, 1))],
    [("conv", (8, 1, 1))],
    [("conv", (10, 1, 1))],
]
_VGG_STAGES = [
    [("conv", (0, 1, 1)), ("conv", (2, 1, 1))],
    [("pool", (2, 2)), ("conv", (5, 1, 1)), ("conv", (7, 1, 1))],
    [("pool", (2, 2)), ("conv", (10, 1, 1)), ("conv", (12, 1, 1)), ("conv", (14, 1, 1))],
    [("pool", (2, 2)), ("conv", (17, 1, 1)), ("conv", (19, 1, 1)), ("conv", (21, 1, 1))],
    [("pool", (2, 2)), ("conv", (24, 1, 1)), ("conv", (26, 1, 1)), ("conv", (28, 1, 1))],
]


@pytest.mark.parametrize("net, stages", [("alex", _ALEX_STAGES), ("vgg", _VGG_STAGES)])
def test_matches_an_independent_computation_on_photographs(weights_dir, net, stages):
    """Fixed (seeded) weights in the published layouts; real photographs; the formula computed separately."""
    data = pytest.importorskip("skimage.data")
    imgs = np.stack(
        [data.astronaut()[100:164, 150:214], data.chelsea()[40:104, 200:264], data.coffee()[100:164, 300:364]]
    )
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    y = x[[1, 2, 0]]
    state = torch.load(weights_dir / BACKBONE_FILES[net], weights_only=True)
    heads = torch.load(weights_dir / HEAD_FILES[net], weights_only=True)
    model = LPIPS.from_dir(net, weights_dir)
    ref = _reference_lpips(state, heads, stages, x, y)
    got = lpips(x, y, model)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-6)
    # Pairs of a photo with itself slightly darkened score far lower than pairs of different photos.
    near = _reference_lpips(state, heads, stages, x, x * 0.9)
    torch.testing.assert_close(lpips(x, x * 0.9, model).double(), near, rtol=1e-4, atol=1e-6)
    assert torch.all(near < ref)
