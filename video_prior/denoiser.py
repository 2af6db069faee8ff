"""The one owner of a multi-view model's semantics: a denoiser in k-diffusion's sense.

A `MultiViewDenoiser` wraps the three networks and their `ModelInfo` and is the only reader of what the
info says about sampling and training, besides its own module (`video_prior.components`); the other
readers take facts about the model, not its semantics (`video_prior.limits.ModelLimits`: what it supports
and was trained on; `default_mesh_method`, read by mv3d). It knows

* the model's frame order (mv3d's, frame 0 = the input view, or SV3D's, input view last) and the camera
  angles the network sees (`cameras`, `to_model_order`, `from_model_order`);
* the conditioning: CLIP embedding, (mirrored) image latent, the added time ids, their unconditional
  form and conditioning dropout (`Conditioning`, `encode_image`, `encode_vae_image`, `time_ids`);
* the parameterisation: EDM preconditioning with v or x0 prediction, residual latents (`denoise`,
  `loss`, `to_residual`, `from_residual`);
* classifier-free guidance with per-frame scales, off for a model without an unconditional branch
  (`guidance_scales`, `denoise`);
* the alpha channel: how many image channels the model generates, the background the input is
  composited on, and the calibration of its matte (`calibrate_matte`);
* its inference defaults (steps, ensemble, mirror averaging, cond_aug, sigma_max).

`video_prior.pipeline.MultiViewPipeline` (sampling) and `video_prior.train` (the loss and, through the
pipeline, the previews) both call it, so a new model flag is read here and nowhere else. A new
conditioning input (say a second image encoder) is a field of `Conditioning`, filled by `encode_image`
and passed to the network by `network_fn`: the pipeline and training pass `encode_image`'s dict on.

References: [EDM] Karras et al. 2022 (arXiv 2206.00364) eq. 7 (the preconditioned denoiser) and eq. 2 / 8
(the loss); [CFG] Ho & Salimans 2022 eq. 6; SV3D (arXiv 2403.12008) for the per-frame triangle scales.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from render.cameras import Orbit, from_sv3d_order, relative_camera_angles, to_sv3d
from video_prior import edm
from video_prior.components import ModelInfo
from video_prior.conditioning import camera_time_ids, clip_embed, condition_latent, residual_offset
from video_prior.guidance import apply_cfg
from video_prior.guidance import guidance_scales as schedule
from video_prior.limits import ModelLimits

__all__ = ["Conditioning", "MultiViewDenoiser", "calibrate_alpha"]


def calibrate_alpha(alpha: torch.Tensor, threshold: float, floor: float = 0.0) -> torch.Tensor:
    """Map a matte piecewise-linearly so that `threshold` lands on 0.5, then cut what stays under `floor`.

    Args:
        alpha: (...) matte in [0, 1].
        threshold: the raw level that separates object from background, in (0, 1).
        floor: mapped levels under it become 0, in [0, 0.5) (0: nothing cut).
    Returns:
        (...) matte in [0, 1], monotone in `alpha`: ``out > 0.5`` exactly where ``alpha > threshold``.

    The threshold moves only the matte: a view composited on the background is the same before and
    after, as ``video_prior.matte.unmix_background`` recovers straight colours for whichever alpha it
    is given. The floor changes the composite where it cuts: an average over draws is rarely exactly 0
    away from the object, and the faint matte left there composites as a grey haze around it, where a
    pixel cut to 0 is the background. Levels at or above the floor, and so every silhouette cut at 0.5,
    are untouched.
    """
    t = float(threshold)
    out = torch.where(alpha <= t, alpha * (0.5 / t), 0.5 + (alpha - t) * (0.5 / (1.0 - t)))
    if floor > 0:
        out = torch.where(out < float(floor), torch.zeros_like(out), out)
    return out


@dataclass
class Conditioning:
    """Everything the network is conditioned on for a batch of B videos, in the model's frame order.

    Attributes:
        context: (B, 1, D) CLIP image embedding (cross-attention).
        image_latent: (B, C_image, h, w) unscaled VAE latent of the noise-augmented input view (with
            mirror conditioning, the mirrored view's latent follows along channels); concatenated to every
            frame's noisy latent.
        time_ids: the UNet's ``added_time_ids`` (`conditioning.camera_time_ids`): (B, F, 3) for SV3D_p.

    `DROPPABLE` names the fields the unconditional branch (and conditioning dropout) zeroes; the
    camera / vector conditioning is kept, as in SV3D.
    """

    context: torch.Tensor
    image_latent: torch.Tensor
    time_ids: torch.Tensor

    DROPPABLE = ("context", "image_latent")

    def unconditional(self) -> Conditioning:
        """The unconditional branch of classifier-free guidance: the droppable inputs zeroed."""
        return replace(self, **{k: torch.zeros_like(getattr(self, k)) for k in self.DROPPABLE})

    def drop(self, keep: torch.Tensor) -> Conditioning:
        """Conditioning dropout in training: sample b keeps its droppable inputs where ``keep[b] == 1``.

        Args:
            keep: (B,) float 0 / 1.
        """
        out = {}
        for k in self.DROPPABLE:
            value = getattr(self, k)
            out[k] = value * keep.view(-1, *([1] * (value.ndim - 1)))
        return replace(self, **out)

    def cat(self, other: Conditioning) -> Conditioning:
        """[self; other] along the batch: both CFG branches in one network call."""
        return Conditioning(
            **{f.name: torch.cat([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )


class MultiViewDenoiser:
    """D(x; sigma, conditioning) of one multi-view model, and the facts about it that its callers need.

    Args:
        unet: a `MultiViewUNet` (or the module wrapping it for distributed training; it is only called).
        vae: the first stage (``AutoencoderKL``, ``AutoencoderKLTemporalDecoder`` or `PatchAutoencoder`).
        image_encoder: ``CLIPVisionModelWithProjection``.
        info: the model's `ModelInfo`.
    """

    def __init__(self, unet, vae, image_encoder, info: ModelInfo):
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder
        self.info = info

    # ----------------------------------------------------------------------------------------------
    # facts and inference defaults
    # ----------------------------------------------------------------------------------------------

    @property
    def alpha(self) -> bool:
        """The model generates RGBA: its frames and first stage have a 4th channel, the matte."""
        return bool(self.info.alpha)

    @property
    def image_channels(self) -> int:
        """4 for a model that generates RGBA, else 3."""
        return 4 if self.alpha else 3

    @property
    def background(self) -> tuple[float, float, float]:
        """RGB in [0, 1] the model's images are composited on."""
        return tuple(float(c) for c in self.info.background)

    @property
    def resolution(self) -> int:
        """The image side in pixels the model was trained at."""
        return int(self.info.resolution)

    @property
    def num_frames(self) -> int | None:
        """The fixed number of frames the model generates, or None if any count works."""
        return self.info.num_frames

    def limits(self, grid: int) -> ModelLimits:
        """What this model supports (`ModelLimits`), given the pipeline's latent grid."""
        return ModelLimits.of(self.info, grid)

    @property
    def guided(self) -> bool:
        """The model has an unconditional branch (it was trained with conditioning dropout)."""
        return bool(self.info.cfg)

    @property
    def sigma_max(self) -> float:
        """The noise level sampling starts from."""
        return float(self.info.sigma_max)

    @property
    def keep_input_view(self) -> bool:
        """The model's generated input-view frame is replaced by the input image (reference SV3D)."""
        return bool(self.info.overwrite_input_frame)

    def defaults(self) -> dict[str, Any]:
        """The model's inference defaults: steps, ensemble, mirror_average, cond_aug."""
        return {
            "steps": int(self.info.default_steps),
            "ensemble": int(self.info.default_ensemble),
            "mirror_average": bool(self.info.default_mirror_average),
            "cond_aug": float(self.info.default_cond_aug),
        }

    # ----------------------------------------------------------------------------------------------
    # frame order
    # ----------------------------------------------------------------------------------------------

    def cameras(self, orbit: Orbit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Polar and azimuth (radians, azimuth relative to the input view) in the model's frame order.

        Returns (polar (N,), azimuth (N,), order (N,)): model frame j shows orbit frame ``order[j]``.
        """
        if self.info.frame_order == "sv3d":
            sv = to_sv3d(orbit, direction=self.info.sv3d_azimuth_direction)
            return sv.polar_rad, sv.azimuth_rad, sv.order
        polar, azimuth = relative_camera_angles(orbit.azimuth_deg, orbit.elevation_deg)
        return polar, azimuth, np.arange(len(orbit))

    def from_model_order(self, frames: torch.Tensor, order: np.ndarray) -> torch.Tensor:
        """(N, ...) frames in the model's order (`cameras`) back to the orbit's order."""
        return from_sv3d_order(frames, order) if self.info.frame_order == "sv3d" else frames

    def to_model_order(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A training batch from mv3d's order (frame 0 = conditioning view) to the model's frame order.

        Only the target frames (or cached latents) and their angles move; the conditioning image is the
        same view either way. Batch: "frames" (B, F, C, H, W) or "latents", "polar_rad" and
        "azimuth_rad" (B, F).
        """
        if self.info.frame_order != "sv3d":
            return batch
        out = dict(batch)
        key = "latents" if "latents" in batch else "frames"
        polar, azimuth, targets = [], [], []
        for b in range(batch[key].shape[0]):
            az = np.rad2deg(batch["azimuth_rad"][b].double().numpy())
            el = 90.0 - np.rad2deg(batch["polar_rad"][b].double().numpy())
            p, a, order = self.cameras(Orbit(az, el, 1.0))
            targets.append(batch[key][b][torch.from_numpy(order)])
            polar.append(torch.from_numpy(p).float())
            azimuth.append(torch.from_numpy(a).float())
        out[key] = torch.stack(targets)
        out["polar_rad"], out["azimuth_rad"] = torch.stack(polar), torch.stack(azimuth)
        return out

    # ----------------------------------------------------------------------------------------------
    # conditioning
    # ----------------------------------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image-encoder embeddings of the clean input views (B, C, H, W) in [-1, 1], by `Conditioning`
        field: "context", the (B, 1, D) CLIP embedding of the RGB. A further image encoder adds its
        embedding here (and a `Conditioning` field, used in `network_fn`); callers pass the dict on."""
        return {"context": clip_embed(self.image_encoder, images[:, :3])}

    def encode_vae_image(
        self, images: torch.Tensor, cond_aug: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, C_image, h, w) unscaled latent of the input views noised by `cond_aug` (B,), with the
        mirrored view's latent appended for a mirror-conditioned model (`conditioning.condition_latent`)."""
        return condition_latent(
            self.vae, images, cond_aug, generator=generator, mirror=bool(self.info.mirror_conditioning)
        )

    def encode_clean_latent(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C_latent, h, w) unscaled latent of the input views (B, C, H, W) without noise or mirror:
        what a residual model's training targets are relative to (`to_residual`)."""
        return condition_latent(self.vae, images, torch.zeros(images.shape[0]))

    def time_ids(
        self, cond_aug: torch.Tensor, polar_rad: torch.Tensor, azimuth_rad: torch.Tensor
    ) -> torch.Tensor:
        """The UNet's ``added_time_ids`` (float32) for cond_aug (B,) and cameras (B, F) in model order."""
        return camera_time_ids(
            self.info.conditioning,
            cond_aug,
            polar_rad,
            azimuth_rad,
            fps_id=self.info.fps_id,
            motion_bucket_id=self.info.motion_bucket_id,
        )

    @property
    def mirror_conditioning(self) -> bool:
        """The image latent holds the mirrored input view too (a latent cache cannot provide it)."""
        return bool(self.info.mirror_conditioning)

    # ----------------------------------------------------------------------------------------------
    # residual latents
    # ----------------------------------------------------------------------------------------------

    @property
    def residual(self) -> bool:
        """The model diffuses frame latents minus the input view's scaled latent."""
        return bool(self.info.residual)

    def _offset(self, image_latent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return residual_offset(
            image_latent.to(dtype), self.vae.config.latent_channels, self.vae.config.scaling_factor
        )

    def to_residual(self, latents: torch.Tensor, clean_image_latent: torch.Tensor) -> torch.Tensor:
        """Training targets: (B, F, C, h, w) scaled latents minus the input view's (identity if not residual).

        `clean_image_latent`: (B, C_image, h, w) the input view's latent encoded without noise.
        """
        if not self.residual:
            return latents
        return latents - self._offset(clean_image_latent, latents.dtype)

    def from_residual(self, latents: torch.Tensor, image_latent: torch.Tensor) -> torch.Tensor:
        """Sampled (B, F, C, h, w) latents back to frame latents: the input view's scaled latent added back
        (identity if not residual). `image_latent`: (B, C_image, h, w), as the network was conditioned on."""
        if not self.residual:
            return latents
        return latents + self._offset(image_latent, latents.dtype)

    # ----------------------------------------------------------------------------------------------
    # the network, preconditioned and guided
    # ----------------------------------------------------------------------------------------------

    def network_fn(self, cond: Conditioning, dtype: torch.dtype | None = None) -> edm.NetworkFn:
        """The raw network of `edm.denoise`: the image latent concatenated to every frame, the UNet called.

        `dtype`: the network's dtype when sampling (inputs cast to it, the output cast back); None in
        training, where autocast decides.
        """
        unet = self.unet

        def network_fn(x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
            x = x_in if dtype is None else x_in.to(dtype)
            image = cond.image_latent[:, None].expand(-1, x.shape[1], -1, -1, -1).to(x.dtype)
            # c_noise stays float32: the UNet's sinusoids are computed in float32
            out = unet(
                torch.cat([x, image], dim=2),
                c_noise,
                encoder_hidden_states=cond.context,
                added_time_ids=cond.time_ids,
            ).sample
            return out if dtype is None else out.to(x_in.dtype)

        return network_fn

    def guidance_scales(
        self,
        kind: str,
        num_frames: int,
        min_scale: float,
        max_scale: float,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor | None:
        """(F,) per-frame CFG scales in `dtype` over the model's frame order, or None when guidance is off
        (every scale 1, or a model without an unconditional branch: then one branch runs)."""
        scales = schedule(kind, num_frames, min_scale, max_scale, dtype=dtype)
        return scales if self.guided and bool(torch.any(scales != 1.0)) else None

    def denoise(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Conditioning,
        scales: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The (guided) denoised estimate D(x; sigma) ([EDM] eq. 7; [CFG] eq. 6 with per-frame scales).

        Args:
            x: (B, F, C, h, w) noisy latents (residual ones for a residual model).
            sigma: (B,) noise levels.
            cond: the conditioning; with `scales`, ``cond.unconditional().cat(cond)`` so that both
                branches run as ONE batched network call.
            scales: (F,) guidance scales (`guidance_scales`), None for the conditional branch alone.
            dtype: see `network_fn`.
        """
        network_fn = self.network_fn(cond, dtype)
        if scales is None:
            return edm.denoise(network_fn, x, sigma, self.info.prediction)
        both = edm.denoise(network_fn, torch.cat([x, x]), torch.cat([sigma, sigma]), self.info.prediction)
        uncond, cond_out = both.chunk(2)
        return apply_cfg(uncond, cond_out, scales)

    def loss(
        self,
        clean: torch.Tensor,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        cond: Conditioning,
        channel_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The EDM training loss of one batch ([EDM] eq. 2 and 8; see `edm.edm_loss`), a scalar."""
        return edm.edm_loss(
            self.network_fn(cond),
            clean,
            sigma,
            noise,
            prediction=self.info.prediction,
            channel_weight=channel_weight,
        )

    # ----------------------------------------------------------------------------------------------
    # alpha
    # ----------------------------------------------------------------------------------------------

    def calibrate_matte(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) frames in [0, 1]: an alpha model's matte (channel 3) mapped so that its
        calibrated threshold lands on 0.5 and cut under its floor (`calibrate_alpha`), in place; others
        unchanged."""
        t, floor = float(self.info.alpha_threshold), float(self.info.alpha_floor)
        if self.alpha and (t != 0.5 or floor > 0):
            frames[:, 3] = calibrate_alpha(frames[:, 3], t, floor)
        return frames

    def alpha_channels(self) -> list[int] | None:
        """The latent channels that hold the matte (an alpha model through the exact patch first stage,
        whose latent channels are pixels), or None when the model has none such."""
        if not self.alpha or not hasattr(self.vae, "latent_channels_of"):
            return None
        return self.vae.latent_channels_of(3)
