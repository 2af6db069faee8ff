"""Derive a no-camera (SV3D_u) model from a camera-conditioned (SV3D_p) one, to finetune without cameras.

    python -m recipes.default_model.drop_camera MODEL_DIR OUT_DIR

The camera inputs are removed by `drop_camera_conditioning` (below); their contribution is
averaged over the cameras of mv3d's default training orbits (input elevations uniform in [-5, 30] degrees,
eight of them, times the 21 azimuths of a static orbit relative to the input view) and folded into the
embedding's bias. Every other weight is copied. The default model's sixth stage (tried, not shipped;
MODEL_CARD.md) continued its no-camera ablation this way from the shipped camera model, because the
ablation's own weights were not at hand; a later stage can do the same.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch

from render.common import InputError
from video_prior.components import ModelInfo, load_components, save_components
from video_prior.unet import MultiViewUNet

#: The training orbits' cameras the camera columns are averaged over (module docstring).
ELEVATIONS_DEG = tuple(-5.0 + 35.0 * i / 7 for i in range(8))
NUM_AZIMUTHS = 21


def training_cameras() -> tuple[torch.Tensor, torch.Tensor]:
    """(polar, azimuth) in radians, each (len(ELEVATIONS_DEG) * NUM_AZIMUTHS,)."""
    polar = torch.tensor([math.radians(90.0 - e) for e in ELEVATIONS_DEG])
    azimuth = torch.arange(NUM_AZIMUTHS, dtype=torch.float32) * (2 * math.pi / NUM_AZIMUTHS)
    grid_polar, grid_azimuth = torch.meshgrid(polar, azimuth, indexing="ij")
    return grid_polar.reshape(-1), grid_azimuth.reshape(-1)


def drop_camera_conditioning(
    components: dict[str, torch.nn.Module],
    info: ModelInfo,
    polar_rad: torch.Tensor,
    azimuth_rad: torch.Tensor,
) -> tuple[dict[str, torch.nn.Module], ModelInfo]:
    """The same SV3D_p network with its camera inputs removed: an SV3D_u network to finetune without cameras.

    An SV3D_p UNet embeds (cond_aug, polar, azimuth) per frame with sinusoids, concatenated, into the first
    linear layer of ``add_embedding``. The returned UNet keeps only cond_aug: that layer keeps cond_aug's
    columns, and the camera columns' contribution, averaged over the given cameras (the training
    distribution's), is folded into its bias, so the network starts where the SV3D_p one is on average
    rather than at an embedding it never saw. Every other weight is copied unchanged. The components passed
    in are not modified (the VAE and image encoder are shared with the result).

    This is how the no-camera ablation of a camera-conditioned model is continued when the ablation's own
    weights are not at hand: it starts from everything the camera model learned. After 4000 finetuning
    steps the default model's derived ablation was about as strong as the one trained from scratch
    (MODEL_CARD.md, stage 6).

    Args:
        components: a loaded model (`load_components`) with ``info.conditioning == "sv3d_p"``.
        info: its ModelInfo.
        polar_rad, azimuth_rad: (N,) cameras (radians; azimuth relative to the input view) to average the
            camera columns' contribution over.

    Returns:
        (components, info) of the SV3D_u model; its matte calibration is dropped (`ModelInfo.uncalibrated`:
        a calibration belongs to the weights it was chosen on).
    """
    if info.conditioning != "sv3d_p":
        raise InputError(f"drop_camera_conditioning: conditioning '{info.conditioning}', expected 'sv3d_p'")
    polar = torch.as_tensor(polar_rad, dtype=torch.float32).reshape(-1)
    azimuth = torch.as_tensor(azimuth_rad, dtype=torch.float32).reshape(-1)
    if polar.numel() == 0 or polar.shape != azimuth.shape:
        raise ValueError(
            f"polar {tuple(polar.shape)} and azimuth {tuple(azimuth.shape)}: expected the same N > 0 cameras"
        )
    unet = components["unet"]
    widths = list(unet.config.addition_time_embed_dims)
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    config.update(
        addition_time_embed_dims=widths[:1],
        projection_class_embeddings_input_dim=widths[0],
        per_frame_conditioning=False,
    )
    new_unet = MultiViewUNet.from_config(config)
    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    weight = state["add_embedding.linear_1.weight"]  # (C, sum(widths))
    ids = torch.stack([torch.zeros_like(polar), polar, azimuth], dim=-1)  # (N, 3) with cond_aug 0
    with torch.no_grad():
        sinusoids = unet.add_time_proj(ids.to(weight.device)).to(weight.dtype)  # (N, sum(widths))
        camera_mean = (sinusoids[:, widths[0] :] @ weight[:, widths[0] :].T).mean(dim=0)  # (C,)
    state["add_embedding.linear_1.weight"] = weight[:, : widths[0]].contiguous()
    state["add_embedding.linear_1.bias"] = state["add_embedding.linear_1.bias"] + camera_mean
    new_unet.load_state_dict(state)
    new_unet.to(device=weight.device, dtype=weight.dtype).eval().requires_grad_(False)
    new_info = copy.deepcopy(info).uncalibrated()
    new_info.conditioning = "sv3d_u"
    return {**components, "unet": new_unet}, new_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an SV3D_p model folder (mv3d_model.json, unet/, vae/, image_encoder/)")
    parser.add_argument("out", help="the SV3D_u model folder to write")
    args = parser.parse_args()
    try:
        components, info = load_components(args.model)
        polar, azimuth = training_cameras()
        components, info = drop_camera_conditioning(components, info, polar, azimuth)
    except InputError as exc:
        print(f"drop_camera: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    info.notes = f"no-camera ablation derived from {Path(args.model).name} by recipes/default_model/drop_camera.py; {info.notes}"
    save_components(components, info, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
