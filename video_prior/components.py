"""Build, save and load the three networks of a multi-view model, and the facts the pipeline needs about them.

A model folder has diffusers' layout, so each part also loads with diffusers' / transformers'
`from_pretrained` (mv3d's own classes, MultiViewUNet, PatchAutoencoder and EfficientNetLite0Encoder, are
diffusers `ModelMixin` subclasses)::

    MODEL/unet/            config.json + diffusion_pytorch_model.safetensors   (MultiViewUNet)
    MODEL/vae/             config.json + diffusion_pytorch_model.safetensors   (AutoencoderKL,
                                                                                AutoencoderKLTemporalDecoder
                                                                                or PatchAutoencoder)
    MODEL/image_encoder/   config.json + model.safetensors                      (CLIPVisionModelWithProjection,
                           or diffusion_pytorch_model.safetensors: a frozen EfficientNetLite0Encoder)
    MODEL/mv3d_model.json  ModelInfo: conditioning kind, frame order, resolution, ... (no class names)

A config is a plain dict ``{"unet": {...}, "vae": {"type": "image"|"temporal"|"patch", ...}, "image_encoder": {...},
"info": {...}}``; the VAE's ``"type"`` picks its class from `VAE_TYPES`, the image encoder's (``"clip"`` when
absent, or ``"efficientnet_lite0"``) from `IMAGE_ENCODER_TYPES`, never by class name.
"""

from __future__ import annotations

import copy
import json
import pickle
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from render.common import (
    MAX_ENSEMBLE,
    MAX_IMAGE_SIDE,
    MAX_VIEWS,
    InputError,
    atomic_output,
    atomic_write_json,
    check_output,
    check_range,
)
from video_prior.conditioning import CONDITIONING_KINDS, conditioning_kind
from video_prior.first_stage import PatchAutoencoder
from video_prior.image_encoders import EfficientNetLite0Encoder
from video_prior.limits import INFO_FILE, ModelLimits, latent_grid
from video_prior.unet import MultiViewUNet

__all__ = [
    "FRAME_ORDERS",
    "INFO_FILE",
    "ModelInfo",
    "PREDICTIONS",
    "VAE_TYPES",
    "build_components",
    "load_components",
    "model_info_from_config",
    "read_model_info",
    "read_model_limits",
    "save_components",
    "sv3d_config",
    "tiny_config",
]

#: name -> VAE class. "image": SV3D's first stage (image decoder, no post_quant_conv); "temporal": SVD's;
#: "patch": the exact space-to-depth first stage of the embedded default model (video_prior.first_stage).
VAE_TYPES: dict[str, type] = {
    "image": AutoencoderKL,
    "temporal": AutoencoderKLTemporalDecoder,
    "patch": PatchAutoencoder,
}
#: "v": the network predicts the velocity (SVD / SV3D, `edm.vpred_scalings`); "x0": it predicts the clean
#: latent directly (`edm.x0pred_scalings`), so a zero-initialised output layer denoises to zero.
PREDICTIONS = ("v", "x0")
#: "mv3d": frame 0 is the input view; "sv3d": the reference order (input view last), see render.cameras.
FRAME_ORDERS = ("mv3d", "sv3d")
_PARTS = ("unet", "vae", "image_encoder")


@dataclass
class ModelInfo:
    """What the pipeline must know about a model beyond its three networks' configs.

    Attributes:
        conditioning: "sv3d_p" (per-frame cond_aug, polar, azimuth), "sv3d_u" (cond_aug), "svd".
        frame_order: "mv3d" (frame 0 = input view) or "sv3d" (the reference's order; input view last).
        resolution: image side in pixels the model was trained at.
        num_frames: the fixed number of frames the model needs, or None if any count works.
        vae_type: key of `VAE_TYPES`.
        latent_scale: the VAE latent scale factor (a record; ``vae.config.scaling_factor`` must equal it).
        sv3d_azimuth_direction: 1 or -1, passed to ``render.cameras.to_sv3d`` (turning direction of the
            weights; establish it with real weights).
        background: RGB in [0, 1] the input RGBA is composited on before encoding.
        overwrite_input_frame: replace the generated input-view frame by the input image (reference SV3D).
        default_steps: number of sampling steps used when the caller gives none.
        default_ensemble: samples averaged into the output when the caller gives no ensemble size (see
            `MultiViewPipeline.__call__`).
        default_cond_aug: conditioning-image noise used when the caller gives none (the reference samples
            SV3D with 1e-5 and SVD with 0.02).
        fps_id, motion_bucket_id: SVD micro-conditioning (ignored by SV3D kinds).
        prediction: "v" (SVD / SV3D) or "x0" (see `PREDICTIONS`).
        residual: the model diffuses each frame's latent MINUS the conditioning view's (scaled) latent,
            and the pipeline adds it back. With "x0" prediction and a zero output layer the untrained model
            returns the input view in every frame (the copy baseline), and training starts from there.
        cfg: the model was trained with conditioning dropout, so it has an unconditional branch for
            classifier-free guidance; False: guidance settings are ignored and one branch runs.
        alpha: the model generates RGBA views: its frames have 4 channels (RGB composited on `background`,
            then the alpha matte, both in [-1, 1]) and its first stage encodes 4 channels; the pipeline
            returns RGBA frames and `mv3d generate` takes their alpha instead of matting the RGB.
        sigma_max: the noise level sampling starts from. SV3D's 700 suits v-prediction; an x0-prediction
            model sampled in one step must start inside the range it was trained on.
        mirror_conditioning: the image latent given to every frame is [latent(input view); latent(input
            view mirrored left-right)] along channels (`conditioning.condition_latent`), and the UNet's
            in_channels count both. Seen from behind (azimuth 180), an object shows its front silhouette
            mirrored; producing that is a global horizontal flip, which a small convolutional network
            with unpositioned attention learns slowly, so the mirror image is an input and the camera
            conditioning decides, per frame, how much of each to use.
        default_mirror_average: the pipeline's `mirror_average` when the caller gives none: half of the
            ensemble is drawn for the input and the orbit mirrored left-right and flipped back (test-time
            augmentation by the task's reflection symmetry, same cost).
        alpha_threshold: for an alpha model, the level of its raw matte that separates object from
            background. Every consumer of the views (mask IoU, `mv3d reconstruct`, Blender) cuts alpha at
            0.5, and a matte estimated as an average is under-confident at its edges, so the pipeline maps
            alpha piecewise-linearly to put this level on 0.5 (`calibrate_alpha`); 0.5 leaves it as it is.
            Chosen on validation objects (MODEL_CARD.md).
        alpha_floor: for an alpha model, the level (after the threshold's map) under which the matte is
            cut to 0, in [0, 0.5): an average over draws leaves a faint matte everywhere, which
            composites as a grey haze around the object; 0 cuts nothing. Silhouettes (alpha > 0.5) are
            never changed. Chosen on validation objects with the threshold (MODEL_CARD.md).
        trained_elevation_deg: [low, high], the input-view elevations (degrees) the model was trained on,
            or None (unknown). `mv3d generate` warns outside this range: an elevation the model never saw
            is generated as one it did.
        fixed_resolution: the model works at `resolution` only (trained at one size with a receptive field
            sized for it: the default model's views at twice its size are smeared); `mv3d generate` refuses
            another size. False: another multiple of the latent grid is sampled, with a warning.
        trained_steps: the number of sampling steps the model was trained for when it was trained at the
            sampler's noise levels only (the default model: one step from `sigma_max`), or None (trained
            over the whole noise range: any step count works). `mv3d generate` warns for another count.
        default_mesh_method: the reconstruction method (a `mv3d.reconstruct` method name) that `mv3d
            generate` and `mv3d eval --reconstruct` use for this model's views when the user names none,
            or None (the library's default, the fitted field). A model whose views are blurred estimates
            (the default model) meshes better by space carving alone: chosen on validation objects
            (MODEL_CARD.md).
        notes: free text (where the weights came from).
    """

    conditioning: str = "sv3d_p"
    frame_order: str = "mv3d"
    resolution: int = 576
    num_frames: int | None = 21
    vae_type: str = "image"
    latent_scale: float = 0.18215
    sv3d_azimuth_direction: int = 1
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    overwrite_input_frame: bool = False
    default_steps: int = 50
    default_ensemble: int = 1
    default_cond_aug: float = 0.02
    fps_id: int = 5
    motion_bucket_id: int = 127
    prediction: str = "v"
    residual: bool = False
    cfg: bool = True
    alpha: bool = False
    sigma_max: float = 700.0
    mirror_conditioning: bool = False
    default_mirror_average: bool = False
    alpha_threshold: float = 0.5
    alpha_floor: float = 0.0
    trained_elevation_deg: list[float] | None = None
    fixed_resolution: bool = False
    trained_steps: int | None = None
    default_mesh_method: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING_KINDS:
            raise InputError(
                f"model conditioning '{self.conditioning}': expected one of {sorted(CONDITIONING_KINDS)}"
            )
        if self.frame_order not in FRAME_ORDERS:
            raise InputError(f"model frame_order '{self.frame_order}': expected one of {list(FRAME_ORDERS)}")
        if self.vae_type not in VAE_TYPES:
            raise InputError(f"model vae_type '{self.vae_type}': expected one of {sorted(VAE_TYPES)}")
        if self.prediction not in PREDICTIONS:
            raise InputError(f"model prediction '{self.prediction}': expected one of {list(PREDICTIONS)}")
        if self.sv3d_azimuth_direction not in (1, -1):
            raise InputError(f"sv3d_azimuth_direction {self.sv3d_azimuth_direction}: expected 1 or -1")
        check_range("model resolution", self.resolution, 1, MAX_IMAGE_SIDE, "pixels")
        if self.num_frames is not None:
            check_range("model num_frames", self.num_frames, 1, MAX_VIEWS, "a count (or null)")
        check_range("model default_ensemble", self.default_ensemble, 1, MAX_ENSEMBLE, "a number of samples")
        if not self.default_cond_aug >= 0:
            raise InputError(f"model default_cond_aug {self.default_cond_aug}: expected a noise level >= 0")
        if not float(self.sigma_max) > 0:
            raise InputError(f"model sigma_max {self.sigma_max}: expected a positive noise level")
        if not 0.0 < float(self.alpha_threshold) < 1.0:
            raise InputError(
                f"model alpha_threshold {self.alpha_threshold}: expected a matte level in (0, 1)"
            )
        if not 0.0 <= float(self.alpha_floor) < 0.5:
            raise InputError(
                f"model alpha_floor {self.alpha_floor}: expected a matte level in [0, 0.5) (0: no cut)"
            )
        if len(self.background) != 3:
            raise InputError(f"model background {self.background}: expected 3 values (RGB in [0, 1])")
        self.background = [float(c) for c in self.background]
        if self.trained_elevation_deg is not None:
            low_high = [float(e) for e in self.trained_elevation_deg]
            if len(low_high) != 2 or not -90.0 <= low_high[0] <= low_high[1] <= 90.0:
                raise InputError(
                    f"model trained_elevation_deg {self.trained_elevation_deg}: expected [low, high] degrees "
                    "in [-90, 90] or null"
                )
            self.trained_elevation_deg = low_high
        if self.trained_steps is not None and int(self.trained_steps) < 1:
            raise InputError(f"model trained_steps {self.trained_steps}: expected a positive count or null")
        if self.default_mesh_method is not None and not (
            isinstance(self.default_mesh_method, str) and self.default_mesh_method.isidentifier()
        ):
            # The name itself is checked against mv3d.reconstruct's methods where it is used (video_prior
            # does not depend on mv3d).
            raise InputError(
                f"model default_mesh_method {self.default_mesh_method!r}: expected a reconstruction method's "
                "name or null"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def uncalibrated(self) -> ModelInfo:
        """A copy without matte calibration (alpha_threshold 0.5, alpha_floor 0): a calibration belongs to
        the weights it was chosen on, and training or surgery changes them."""
        return replace(self, alpha_threshold=0.5, alpha_floor=0.0)

    def trained_at(self, resolution: int, num_frames: int, notes: str | None = None) -> ModelInfo:
        """The info of a model whose training ended at `resolution` pixels and `num_frames` frames (a model
        with a fixed frame count takes the last stage's; one with any count keeps None); `notes`, where
        the weights came from, replace the old ones when given."""
        return replace(
            self,
            resolution=int(resolution),
            num_frames=None if self.num_frames is None else int(num_frames),
            notes=self.notes if notes is None else notes,
        )

    @classmethod
    def from_dict(cls, data: dict, source: str = "model info") -> ModelInfo:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)


def sv3d_config(conditioning: str = "sv3d_p", num_frames: int = 21, resolution: int = 576) -> dict:
    """The full-size configuration of SVD / SV3D_u / SV3D_p (about 1.52 B UNet parameters).

    Reference model_channels 320, channel_mult (1, 2, 4, 4), 2 res blocks, attention at the first three
    levels (the last level of diffusers' layout is a plain block, as in the reference), 64-channel heads,
    context 1024 (OpenCLIP ViT-H/14), 8 input channels.
    """
    if conditioning not in CONDITIONING_KINDS:
        raise InputError(f"conditioning '{conditioning}': expected one of {sorted(CONDITIONING_KINDS)}")
    kind = CONDITIONING_KINDS[conditioning]
    channels = (320, 640, 1280, 1280)
    unet = {
        "sample_size": resolution // 8,
        "in_channels": 8,
        "out_channels": 4,
        "block_out_channels": channels,
        "layers_per_block": 2,
        "cross_attention_dim": 1024,
        "num_attention_heads": tuple(c // 64 for c in channels),
        "num_frames": num_frames,
        "addition_time_embed_dims": list(kind.widths),
        "per_frame_conditioning": kind.per_frame,
        "resnet_norm_eps": 1e-5,  # Stability's VideoUNet value (see MultiViewUNet)
    }
    vae_type = "temporal" if conditioning == "svd" else "image"
    vae = {
        "type": vae_type,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": resolution,
        "scaling_factor": 0.18215,
    }
    if vae_type == "image":
        vae.update({"up_block_types": ["UpDecoderBlock2D"] * 4, "use_post_quant_conv": False})
    image_encoder = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 1024,
        "hidden_act": "gelu",
    }
    info = {
        "conditioning": conditioning,
        "frame_order": "sv3d" if conditioning != "svd" else "mv3d",
        "resolution": resolution,
        "num_frames": num_frames,
        "vae_type": vae_type,
        "overwrite_input_frame": conditioning != "svd",
        "default_steps": 50 if conditioning != "svd" else 25,
        "default_cond_aug": 1e-5 if conditioning != "svd" else 0.02,
    }
    return {"unet": unet, "vae": vae, "image_encoder": image_encoder, "info": info}


def tiny_config(num_frames: int = 4, sample_size: int = 16, conditioning: str = "sv3d_p") -> dict:
    """A ~1.5 M-parameter model of the same architecture that runs in well under a second on a CPU.

    Args:
        num_frames: frames per video (the UNet's default; any count runs).
        sample_size: image side in pixels. The tiny VAE downsamples by 2, so latents are sample_size / 2,
            and the two-level UNet needs sample_size divisible by 4.
        conditioning: "sv3d_p", "sv3d_u" or "svd" (narrower sinusoids than the reference, same layout).
    """
    if conditioning not in CONDITIONING_KINDS:
        raise InputError(f"conditioning '{conditioning}': expected one of {sorted(CONDITIONING_KINDS)}")
    if sample_size % 4:
        raise InputError(f"tiny model image size {sample_size}: expected a multiple of 4")
    kind = CONDITIONING_KINDS[conditioning]
    unet = {
        "sample_size": sample_size // 2,
        "in_channels": 8,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "num_attention_heads": [2, 4],
        "num_frames": num_frames,
        "addition_time_embed_dims": [w // 8 for w in kind.widths],
        "per_frame_conditioning": kind.per_frame,
    }
    vae_type = "temporal" if conditioning == "svd" else "image"
    vae = {
        "type": vae_type,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "sample_size": sample_size,
        "scaling_factor": 0.18215,
    }
    if vae_type == "image":
        vae.update({"up_block_types": ["UpDecoderBlock2D"] * 2, "use_post_quant_conv": False})
    image_encoder = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "patch_size": 4,
        "image_size": 16,
        "projection_dim": 32,
    }
    info = {
        "conditioning": conditioning,
        "frame_order": "mv3d",
        "resolution": sample_size,
        "num_frames": None,
        "vae_type": vae_type,
        "default_steps": 4,
    }
    return {"unet": unet, "vae": vae, "image_encoder": image_encoder, "info": info}


def _check_config(config: dict) -> None:
    if not isinstance(config, dict):
        raise InputError(
            f"model config: expected a mapping with keys {list(_PARTS)}, got {type(config).__name__}"
        )
    missing = [p for p in _PARTS if p not in config]
    if missing:
        raise InputError(
            f"model config: missing sections {missing}; expected {list(_PARTS)} (and optional 'info')"
        )
    unknown = sorted(set(config) - set(_PARTS) - {"info"})
    if unknown:
        raise InputError(f"model config: unknown sections {unknown}; expected {list(_PARTS)} and 'info'")


#: Bounds of a model config's sizes (SV3D: 2.24 G parameters over its three networks, lists of 4
#: levels, 2 res blocks a level, 32 encoder layers, widths up to 5120). A config past them would build
#: for hours or ask for terabytes (a UNet of 10**6 channels a level: 16 TB) before anything failed.
MAX_MODEL_PARAMETERS = 8 * 10**9
_MAX_CONFIG_INT = 65536
_MAX_CONFIG_LIST = 64
_MAX_CONFIG_REPEATS = 256  # settings that repeat a block: *layers*, *depth*, *blocks*


def _check_sizes(value, where: str) -> None:
    """Every integer and list in a config section within the bounds above (one `InputError` line)."""
    if isinstance(value, dict):
        for key, v in value.items():
            name = f"{where} {key}"
            if any(word in str(key) for word in ("layers", "depth", "blocks")):
                counts = [i for i in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(i, int)]
                if any(i > _MAX_CONFIG_REPEATS for i in counts):
                    raise InputError(f"{name} {v}: expected at most {_MAX_CONFIG_REPEATS}")
            _check_sizes(v, name)
    elif isinstance(value, (list, tuple)):
        if len(value) > _MAX_CONFIG_LIST:
            raise InputError(f"{where}: a list of {len(value)} values: expected at most {_MAX_CONFIG_LIST}")
        for item in value:
            _check_sizes(item, where)
    elif isinstance(value, int) and abs(value) > _MAX_CONFIG_INT:
        raise InputError(f"{where} {value}: expected at most {_MAX_CONFIG_INT}")


def _build(config: dict) -> dict[str, torch.nn.Module]:
    vae_cfg = dict(config["vae"])
    vae_type = vae_cfg.pop("type", "image")
    if vae_type not in VAE_TYPES:
        raise InputError(f"model config vae type '{vae_type}': expected one of {sorted(VAE_TYPES)}")
    try:
        unet = MultiViewUNet(**config["unet"])
        vae = VAE_TYPES[vae_type](**vae_cfg)
        encoder = _build_image_encoder(config["image_encoder"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"model config: {exc}") from exc
    return {"unet": unet, "vae": vae, "image_encoder": encoder}


def build_components(config: dict) -> dict[str, torch.nn.Module]:
    """Randomly initialised networks from a config dict (see the module docstring).

    The config's sizes are bounded first, then the networks are built on the meta device (no memory)
    and their parameters counted: at most `MAX_MODEL_PARAMETERS`, before anything is allocated.

    Returns:
        ``{"unet": MultiViewUNet, "vae": AutoencoderKL | AutoencoderKLTemporalDecoder,
        "image_encoder": CLIPVisionModelWithProjection}``, in float32, in eval mode.
    """
    _check_config(config)
    for part in _PARTS:
        _check_sizes(config[part], f"model config {part}")
    with torch.device("meta"):
        count = sum(p.numel() for m in _build(config).values() for p in m.parameters())
    if count > MAX_MODEL_PARAMETERS:
        raise InputError(
            f"model config: {count:,} parameters: expected at most {MAX_MODEL_PARAMETERS:,} (SV3D has 2.24 G)"
        )
    built = _build(config)
    unet, vae, encoder = built["unet"], built["vae"], built["image_encoder"]
    _check_encoder_width(encoder, unet, "model config")
    # noisy latent + image latent (+ the mirrored image's latent, see ModelInfo.mirror_conditioning)
    mirror = bool(config.get("info", {}).get("mirror_conditioning", False))
    parts = 3 if mirror else 2
    if unet.config.in_channels != parts * vae.config.latent_channels:
        raise InputError(
            f"model config: unet in_channels {unet.config.in_channels}: expected {parts} x vae latent_channels "
            f"({parts * vae.config.latent_channels}: noisy latent + image latent"
            f"{' + mirrored image latent' if mirror else ''})"
        )
    return {"unet": unet.eval(), "vae": vae.eval(), "image_encoder": encoder.eval()}


# The image encoders a model folder may hold: config "type" -> class (explicit, no names to import).
# "clip" (the default when a config has no type) is SVD/SV3D's; "efficientnet_lite0" is the frozen
# ImageNet backbone of small models (video_prior.image_encoders).
IMAGE_ENCODER_TYPES = {"clip": CLIPVisionModelWithProjection, "efficientnet_lite0": EfficientNetLite0Encoder}


def _build_image_encoder(config: dict) -> torch.nn.Module:
    cfg = dict(config)
    kind = cfg.pop("type", "clip")
    if kind not in IMAGE_ENCODER_TYPES:
        raise InputError(
            f"model config image_encoder type '{kind}': expected one of {sorted(IMAGE_ENCODER_TYPES)}"
        )
    if kind == "clip":
        return CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    return IMAGE_ENCODER_TYPES[kind](**cfg)


def _encoder_width(encoder: torch.nn.Module) -> int:
    """The width D of the tokens an image encoder gives the UNet."""
    if isinstance(encoder, EfficientNetLite0Encoder):
        return encoder.feature_dim
    return int(encoder.config.projection_dim)


def _check_encoder_width(encoder: torch.nn.Module, unet: torch.nn.Module, where: str) -> None:
    hid = unet.config.get("encoder_hid_dim")
    want = int(hid) if hid is not None else unet.config.cross_attention_dim
    if _encoder_width(encoder) != want:
        raise InputError(
            f"{where}: the image encoder gives {_encoder_width(encoder)}-wide tokens but the unet takes {want} "
            "(encoder_hid_dim, or cross_attention_dim without it); they must match"
        )


def _image_encoder_type_of_folder(folder: Path) -> str:
    """ "efficientnet_lite0" when diffusers recorded that class in ``config.json``, else "clip"."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError):
        return "clip"
    return "efficientnet_lite0" if name == EfficientNetLite0Encoder.__name__ else "clip"


def model_info_from_config(config: dict) -> ModelInfo:
    """The ModelInfo of a config: its ``"info"`` section, with the conditioning and VAE type filled in."""
    _check_config(config)
    info = dict(config.get("info", {}))
    info.setdefault("conditioning", conditioning_kind(config["unet"]))
    info.setdefault("vae_type", config["vae"].get("type", "image"))
    info.setdefault("latent_scale", float(config["vae"].get("scaling_factor", 0.18215)))
    return ModelInfo.from_dict(info, "model config 'info'")


def save_components(
    components: dict[str, torch.nn.Module],
    info: ModelInfo,
    path,
    command: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model folder (diffusers layout + mv3d_model.json) atomically; returns its path.

    With `command` (a user's `--out`), the folder is marked as that command's output and an existing
    one is replaced only when `render.common.check_output` allows it (`overwrite`). Without it (the
    Python API: `MultiViewPipeline.save_pretrained`, training), an existing folder is replaced only when
    it is empty or a model folder (it holds mv3d_model.json), or with `overwrite`; the working folder,
    the home folder and the folders above them never are.

    Raises:
        InputError: one line naming the path, before anything is written, for a target it must not replace.
    """
    path = Path(path)
    missing = [p for p in _PARTS if p not in components]
    if missing:
        raise ValueError(f"save_components: missing components {missing}")
    if command is None:
        check_model_folder_target(path, overwrite)
    info = copy.deepcopy(info)
    info.latent_scale = float(components["vae"].config.scaling_factor)
    with atomic_output(path, command, overwrite) as tmp:
        tmp.mkdir(parents=True)
        for part in _PARTS:
            components[part].save_pretrained(tmp / part)
            _drop_source_path(tmp / part / "config.json")
        atomic_write_json(tmp / INFO_FILE, info.to_dict())
    return path


def check_model_folder_target(path, overwrite: bool = False) -> Path:
    """Refuse a path `save_components` must not replace (the whole folder is replaced when it is written).

    Allowed: a new path, an empty folder, a model folder (it holds mv3d_model.json), and with `overwrite`
    any other folder. Never: the working folder, the home folder or a folder above them, a path below a
    file, or an existing file.

    Raises:
        InputError: one line naming the path and what was expected.
    """
    # refuses the protected folders, a path below a file and an existing file; passes any folder
    path = check_output(path, "save_pretrained", overwrite=True, field="path", overwrite_option=False)
    if not path.exists():
        return path
    if overwrite or not any(path.iterdir()) or (path / INFO_FILE).is_file():
        return path
    raise InputError(
        f"path {path}: exists and is not an mv3d model folder (no {INFO_FILE}): expected a new or empty folder "
        "or a model folder (overwrite=True replaces it, with everything in it)",
        field="path",
    )


def _drop_source_path(config_file: Path) -> None:
    """Remove diffusers' `_name_or_path` (the folder a part was loaded from) from a saved config: a model
    folder that is shared or shipped should not carry the path of the machine that wrote it."""
    config = json.loads(config_file.read_text())
    if config.pop("_name_or_path", None) is not None:
        atomic_write_json(config_file, config)


def _vae_type_of_folder(folder: Path) -> str | None:
    """The VAE type recorded by diffusers in ``config.json`` ("_class_name"), mapped back to our table."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError):
        return None
    for key, cls in VAE_TYPES.items():
        if cls.__name__ == name:
            return key
    return None


#: Bound on a model info file's size (a real one is about 1 kB).
MAX_INFO_BYTES = 1 << 20


def read_info_file(info_file) -> ModelInfo:
    """A `ModelInfo` from one mv3d_model.json, its size checked before it is read; `InputError` (the file,
    what is wrong) for an oversized, malformed or invalid one."""
    info_file = Path(info_file)
    if not info_file.is_file():
        raise InputError(f"{info_file}: no such file; expected a model's {INFO_FILE}")
    size = info_file.stat().st_size
    if size > MAX_INFO_BYTES:
        raise InputError(f"{info_file}: {size} bytes; expected a model info file under {MAX_INFO_BYTES}")
    try:
        return ModelInfo.from_dict(json.loads(info_file.read_text()), str(info_file))
    except json.JSONDecodeError as exc:
        raise InputError(f"{info_file}: not valid JSON ({exc})") from exc
    except (TypeError, ValueError) as exc:  # not an object, or a value of the wrong type ("abc" pixels)
        raise InputError(f"{info_file}: {exc}") from exc


def read_model_info(path) -> ModelInfo:
    """The `ModelInfo` of a model folder, read without its weights (milliseconds: callers check settings
    against it before the slow load); `InputError` if the folder is not a complete mv3d model folder."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"model folder {path}: does not exist or is not a folder")
    info_file = path / INFO_FILE
    if not info_file.is_file():
        raise InputError(
            f"model folder {path}: no {INFO_FILE}; expected a folder written by mv3d (or convert-weights)"
        )
    info = read_info_file(info_file)
    for part in _PARTS:
        if not (path / part / "config.json").is_file():
            raise InputError(f"model folder {path}: missing {part}/config.json")
    return info


def read_model_limits(path) -> ModelLimits:
    """The `ModelLimits` of a model folder, from its mv3d_model.json and configs (no weights are read).

    The info is validated whole (`read_model_info`), so a malformed or oversized info file is one line
    here, before anything uses its numbers.
    """
    return ModelLimits.of(read_model_info(path), latent_grid(path))


def load_components(
    path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.nn.Module], ModelInfo]:
    """Load a model folder written by `save_components` (or by the weight converter).

    Returns:
        (components, info): networks on `device` in `dtype`, eval mode, no gradients.
    """
    path = Path(path)
    info = read_model_info(path)
    info_file = path / INFO_FILE
    recorded = _vae_type_of_folder(path / "vae")
    if recorded is not None and recorded != info.vae_type:
        raise InputError(
            f"{info_file}: vae_type '{info.vae_type}' but {path / 'vae'} holds a '{recorded}' VAE"
        )
    try:
        unet = MultiViewUNet.from_pretrained(path / "unet", torch_dtype=dtype)
        vae = VAE_TYPES[info.vae_type].from_pretrained(path / "vae", torch_dtype=dtype)
        if _image_encoder_type_of_folder(path / "image_encoder") == "clip":
            encoder = CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder", dtype=dtype)
        else:
            encoder = EfficientNetLite0Encoder.from_pretrained(path / "image_encoder", torch_dtype=dtype)
    except pickle.UnpicklingError:
        # A .bin weight file is a pickle; transformers and diffusers read it with weights_only=True,
        # whose refusal suggests weights_only=False: mv3d never runs code from a model file.
        raise InputError(
            f"model folder {path}: a .bin weight file holds objects other than tensors: refused (mv3d never "
            "unpickles code; expected model.safetensors / diffusion_pytorch_model.safetensors)"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"model folder {path}: cannot load weights ({str(exc).splitlines()[0]})") from exc
    if abs(float(vae.config.scaling_factor) - info.latent_scale) > 1e-9:
        raise InputError(
            f"{info_file}: latent_scale {info.latent_scale} differs from the VAE's scaling_factor "
            f"{vae.config.scaling_factor}"
        )
    _check_encoder_width(encoder, unet, f"model folder {path}")
    components = {"unet": unet, "vae": vae, "image_encoder": encoder}
    for module in components.values():
        module.to(device).eval().requires_grad_(False)
    return components, info
