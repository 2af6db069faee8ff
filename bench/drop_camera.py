"""Derive a no-camera (SV3D_u) model from a camera-conditioned (SV3D_p) one, to finetune without cameras.

    python bench/drop_camera.py MODEL_DIR OUT_DIR

The camera inputs are removed by `video_prior.components.drop_camera_conditioning`; their contribution is
averaged over the cameras of mv3d's default training orbits (input elevations uniform in [-5, 30] degrees,
eight of them, times the 21 azimuths of a static orbit relative to the input view) and folded into the
embedding's bias. Every other weight is copied. The default model's sixth stage (tried, not shipped;
MODEL_CARD.md) continued its no-camera ablation this way from the shipped camera model, because the
ablation's own weights were not at hand; a later stage can do the same.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from render.common import InputError  # noqa: E402
from video_prior.components import (  # noqa: E402
    drop_camera_conditioning,
    load_components,
    save_components,
)

#: The training orbits' cameras the camera columns are averaged over (module docstring).
ELEVATIONS_DEG = tuple(-5.0 + 35.0 * i / 7 for i in range(8))
NUM_AZIMUTHS = 21


def training_cameras() -> tuple[torch.Tensor, torch.Tensor]:
    """(polar, azimuth) in radians, each (len(ELEVATIONS_DEG) * NUM_AZIMUTHS,)."""
    polar = torch.tensor([math.radians(90.0 - e) for e in ELEVATIONS_DEG])
    azimuth = torch.arange(NUM_AZIMUTHS, dtype=torch.float32) * (2 * math.pi / NUM_AZIMUTHS)
    grid_polar, grid_azimuth = torch.meshgrid(polar, azimuth, indexing="ij")
    return grid_polar.reshape(-1), grid_azimuth.reshape(-1)


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
    info.notes = (
        f"no-camera ablation derived from {Path(args.model).name} by bench/drop_camera.py; {info.notes}"
    )
    save_components(components, info, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
