"""`ModelLimits`: what a model supports and was trained on, read from its folder without its weights.

A command checks its settings against these before the slow load (`mv3d generate`: an impossible
setting fails in a second, one outside the training range warns). No weights are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from render.common import InputError

__all__ = ["INFO_FILE", "ModelLimits", "latent_grid"]

#: The model info file of a model folder (`video_prior.components.INFO_FILE`).
INFO_FILE = "mv3d_model.json"


def latent_grid(path: str | Path) -> int:
    """The pixel multiple a model folder's view size must be, from its configs alone (no weights): the
    VAE's downsampling (2 ** (levels - 1)) times the UNet's (one per up block but the last), the same
    number as ``MultiViewPipeline``'s ``vae_scale_factor * 2 ** unet.num_upsamplers``."""
    path = Path(path)
    try:
        vae = json.loads((path / "vae" / "config.json").read_text())
        unet = json.loads((path / "unet" / "config.json").read_text())
        return 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["up_block_types"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"model folder {path}: unreadable vae/unet config.json ({exc})") from exc


@dataclass(frozen=True)
class ModelLimits:
    """What a model supports and was trained on: what a caller checks its settings against before the
    weights load (`video_prior.components.read_model_limits` reads two JSON files and no weights).

    Attributes:
        resolution: the view side (pixels) the model was trained at; `fixed_resolution`: the only one
            that works.
        grid: view sides must be multiples of this (the latent grid).
        num_frames: the fixed number of views, or None (any).
        default_steps, default_ensemble, default_mirror_average: what sampling uses when the caller
            gives none.
        trained_steps: the step count the model was trained for, or None (any works).
        trained_elevation_deg: (low, high) input-view elevations seen in training, or None (unknown).
        default_mesh_method: the reconstruction its views mesh with when the caller names none, or None
            (the library's default).
        guided: the model has an unconditional branch (its info's `cfg`); False: guidance settings
            change nothing.
    """

    resolution: int
    fixed_resolution: bool
    grid: int
    num_frames: int | None
    default_steps: int
    default_ensemble: int
    trained_steps: int | None
    trained_elevation_deg: tuple[float, float] | None
    default_mesh_method: str | None = None
    default_mirror_average: bool = False
    guided: bool = True

    @classmethod
    def of(cls, info: Any, grid: int) -> ModelLimits:
        """The limits of a model with this `video_prior.components.ModelInfo` and latent grid."""
        elev = info.trained_elevation_deg
        return cls(
            resolution=int(info.resolution),
            fixed_resolution=bool(info.fixed_resolution),
            grid=int(grid),
            num_frames=None if info.num_frames is None else int(info.num_frames),
            default_steps=int(info.default_steps),
            default_ensemble=int(info.default_ensemble),
            trained_steps=None if info.trained_steps is None else int(info.trained_steps),
            trained_elevation_deg=None if elev is None else (float(elev[0]), float(elev[1])),
            default_mesh_method=info.default_mesh_method,
            default_mirror_average=bool(info.default_mirror_average),
            guided=bool(info.cfg),
        )
