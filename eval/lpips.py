"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric")
in plain torch, without torchvision.

The `lpips` package imports torchvision for its backbones, and torchvision cannot be installed next to
mv3d's transformers. The metric itself is small, so it is written here and loads the SAME published
weight files from local paths:

* backbone: torchvision's ImageNet checkpoints in their state-dict layout (`features.0.weight`, ...),
  `alexnet-owt-7be5be79.pth` (https://download.pytorch.org/models/alexnet-owt-7be5be79.pth) or
  `vgg16-397923af.pth` (https://download.pytorch.org/models/vgg16-397923af.pth); `.safetensors` with
  the same keys also works.
* linear heads: the lpips project's v0.1 files `alex.pth` / `vgg.pth`
  (https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1), keys
  `lin{k}.model.1.weight` of shape (1, C_k, 1, 1).

The distance: inputs in [0, 1] are mapped to [-1, 1] and normalised with the lpips scaling layer
(shift (-0.030, -0.088, -0.188), scale (0.458, 0.448, 0.450)); five ReLU feature maps are taken from
the backbone; each is unit-normalised along channels (eps 1e-10); the squared difference is weighted
per channel by the non-negative linear head, averaged over space and summed over the five layers.
0 for identical images, symmetric, larger for larger perceptual differences; typical values 0 to ~0.8.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from render.common import InputError

#: File names the published weights carry; `LPIPS.from_dir` looks for these.
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
HEAD_FILES = {"alex": "alex.pth", "vgg": "vgg.pth"}
BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
HEAD_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"

# torchvision `features` layouts: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool",).
# Indices in the list are the indices of torchvision's nn.Sequential, so state-dict keys line up.
_ALEX = [
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool",),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool",),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",),
]  # fmt: skip
# LPIPS taps the ReLU outputs at these indices (relu1..relu5).
_ALEX_TAPS = (1, 4, 7, 9, 11)


def _vgg16_layers() -> list[tuple]:
    layers: list[tuple] = []
    cin = 3
    for block in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        if layers:
            layers.append(("pool",))
        for cout in block:
            layers += [("conv", cin, cout, 3, 1, 1), ("relu",)]
            cin = cout
    return layers


_VGG = _vgg16_layers()
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_TAPS = (3, 8, 15, 22, 29)
_NETS = {"alex": (_ALEX, _ALEX_TAPS), "vgg": (_VGG, _VGG_TAPS)}


class _Features(nn.Module):
    """torchvision-compatible `features` stack that returns the tapped ReLU outputs."""

    def __init__(self, layout: list[tuple], taps: tuple[int, ...]):
        super().__init__()
        mods: list[nn.Module] = []
        for spec in layout:
            if spec[0] == "conv":
                _, cin, cout, k, s, p = spec
                mods.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif spec[0] == "relu":
                mods.append(nn.ReLU(inplace=False))
            else:  # both backbones pool 3x3/2 (AlexNet) or 2x2/2 (VGG)
                mods.append(nn.MaxPool2d(3, 2) if layout is _ALEX else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        self.taps = taps
        self.channels = [self._out_channels(layout, t) for t in taps]

    @staticmethod
    def _out_channels(layout, tap: int) -> int:
        return [s[2] for s in layout[: tap + 1] if s[0] == "conv"][-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i == self.taps[-1]:
                break
        return out


class LPIPS(nn.Module):
    """LPIPS distance with an AlexNet ("alex") or VGG16 ("vgg") backbone.

    Build with `LPIPS.from_files(net, backbone_path, head_path)` or `LPIPS.from_dir(net, folder)`; a
    bare `LPIPS(net)` has random weights (for tests of shapes only).
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in _NETS:
            raise InputError(f"LPIPS backbone '{net}': expected one of {sorted(_NETS)}")
        self.net_name = net
        layout, taps = _NETS[net]
        self.net = _Features(layout, taps)
        # Heads: a 1x1 convolution without bias per tapped layer (lpips' `lin{k}.model.1`).
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.net.channels)
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    # -- loading -------------------------------------------------------------------------------

    @staticmethod
    def _load_state(path: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
        if not path.is_file():
            raise InputError(f"{path}: {what} weights file does not exist ({hint})")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(path))
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign files: one clear line, not a traceback
            raise InputError(f"{path}: cannot read {what} weights ({str(exc).splitlines()[0]})") from exc
        if not isinstance(state, dict):
            raise InputError(
                f"{path}: {what} weights file holds a {type(state).__name__}: expected a state dict"
            )
        return state

    @classmethod
    def from_files(cls, net: str, backbone_path: str | Path, head_path: str | Path) -> LPIPS:
        """Load torchvision backbone weights and lpips v0.1 linear heads from local files."""
        model = cls(net)
        backbone_path, head_path = Path(backbone_path), Path(head_path)
        bb = cls._load_state(backbone_path, f"LPIPS {net} backbone", f"download {BACKBONE_URLS[net]}")
        head = cls._load_state(head_path, f"LPIPS {net} linear head", f"download {HEAD_URL.format(net=net)}")
        feats = {k: v for k, v in bb.items() if k.startswith("features.")}
        expected = {f"features.{k}" for k in model.net.features.state_dict()}
        missing = sorted(expected - set(feats))
        if missing:
            raise InputError(
                f"{backbone_path}: not a torchvision {net} checkpoint (missing {missing[0]}; "
                f"expected keys features.N.weight/bias as in {BACKBONE_FILES[net]})"
            )
        try:
            model.net.features.load_state_dict(
                {k[len("features.") :]: v for k, v in feats.items()}, strict=False
            )
        except RuntimeError as exc:
            raise InputError(
                f"{backbone_path}: weight shapes do not match torchvision's {net}: {exc}"
            ) from exc
        for k, lin in enumerate(model.lins):
            key = f"lin{k}.model.1.weight"
            if key not in head:
                raise InputError(
                    f"{head_path}: missing key {key}: expected the lpips v0.1 {HEAD_FILES[net]} layout"
                )
            if tuple(head[key].shape) != tuple(lin.weight.shape):
                raise InputError(
                    f"{head_path}: {key} has shape {tuple(head[key].shape)}: expected {tuple(lin.weight.shape)}"
                )
            lin.weight.copy_(head[key])
        return model

    @classmethod
    def from_dir(cls, net: str, folder: str | Path) -> LPIPS:
        """Load from a folder holding the published file names (`BACKBONE_FILES`, `HEAD_FILES`)."""
        if net not in _NETS:
            raise InputError(f"LPIPS backbone '{net}': expected one of {sorted(_NETS)}")
        folder = Path(folder)
        return cls.from_files(net, folder / BACKBONE_FILES[net], folder / HEAD_FILES[net])

    # -- distance ------------------------------------------------------------------------------

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair, (B,), for images (B, 3, H, W) in [0, 1]."""
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise InputError(
                f"LPIPS got shapes {tuple(pred.shape)} and {tuple(target.shape)}: expected (B, 3, H, W)"
            )
        dev = self.shift.device
        x = (pred.float().to(dev) * 2 - 1 - self.shift) / self.scale
        y = (target.float().to(dev) * 2 - 1 - self.shift) / self.scale
        feats = self.net(torch.cat([x, y]))
        total = torch.zeros(pred.shape[0], device=dev)
        for f, lin in zip(feats, self.lins, strict=True):
            a, b = f.chunk(2)
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


@torch.no_grad()
def lpips(pred: torch.Tensor, target: torch.Tensor, model: LPIPS, batch_size: int = 8) -> torch.Tensor:
    """LPIPS per image pair, (B,), images (B, 3, H, W) in [0, 1], in batches of `batch_size`."""
    out = [
        model(pred[i : i + batch_size], target[i : i + batch_size]).cpu()
        for i in range(0, pred.shape[0], batch_size)
    ]
    return torch.cat(out)
