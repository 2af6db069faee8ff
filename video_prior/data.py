"""Training data: orbit datasets written by render/ as videos of camera views, and an optional latent cache.

Each item is one object: F views drawn from its orbit as a video whose frame 0 is the conditioning view
(re-referenced to azimuth 0, as SV3D conditions on the input view), composited on a random colour or on
white (SV3D trains on both), resized to the model resolution.

Selecting frames from an object's N views (sorted by azimuth, so a static or dynamic orbit is a ring):
a random start view s, then every `stride`-th view around the ring, stride = max(1, N // F). So N = F
uses all views in orbit order starting at s; N = 84 and F = 21 takes every 4th view (SV3D's own recipe);
a shorter clip (a frames curriculum) spans about the same full turn.

Randomness is a function of (seed, epoch, index) only: the same item comes back on any worker, in any
process, after a resume.

The cache (`precompute`): SV3D trained on precomputed latents and CLIP embeddings. `precompute` writes,
per object, ``mv3d_cache/latents_<resolution>.safetensors`` holding, for every view on a white background,
the scaled VAE latent (the diffusion target), the unscaled posterior mode (the conditioning latent) and
the CLIP image embedding. With a cache the background is always white and the conditioning-frame
augmentation is applied in latent space (see `video_prior.train`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from render.cameras import relative_camera_angles
from render.common import MAX_IMAGE_SIDE, MAX_VIEWS, InputError, check_range
from render.dataset import TRANSFORMS, OrbitDataset, composite, load_rgba, read_orbit_dataset

CACHE_DIR = "mv3d_cache"
BACKGROUNDS = ("random", "white", "mixed")


def cache_path(object_dir: str | Path, resolution: int) -> Path:
    """Where `precompute` writes an object's cache for one model resolution."""
    return Path(object_dir) / CACHE_DIR / f"latents_{int(resolution)}.safetensors"


def find_object_dirs(data_dirs: Sequence[str | Path]) -> list[Path]:
    """Every orbit dataset folder under `data_dirs`, sorted; a folder that is itself a dataset counts once.

    Each entry may be one object folder (it holds transforms.json) or a root with object folders at any
    depth (folders that are datasets are not searched further). Raises `InputError` if an entry does not
    exist or holds no dataset.
    """
    found: list[Path] = []
    for d in data_dirs:
        root = Path(d)
        if not root.is_dir():
            raise InputError(
                f"{root}: data folder does not exist: expected an orbit dataset or a folder of them"
            )
        before = len(found)
        for cur, dirs, files in os.walk(root, followlinks=True):
            if TRANSFORMS in files:
                found.append(Path(cur))
                dirs[:] = []  # an object's own subfolders (views/, mv3d_cache/) are not datasets
            else:
                dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        if len(found) == before:
            raise InputError(f"{root}: no orbit datasets (folders with {TRANSFORMS}) found under this folder")
    return sorted(dict.fromkeys(p.resolve() for p in found))


def read_training_orbit(object_dir: Path) -> OrbitDataset:
    """An object's orbit dataset, its images checked; `InputError` unless its views are square (the loader
    resizes every view to `resolution` x `resolution`, which would stretch other shapes)."""
    ds = read_orbit_dataset(object_dir, check_images=True)
    w, h = ds.intrinsics.width, ds.intrinsics.height
    if w != h:
        raise InputError(
            f"{Path(object_dir) / TRANSFORMS}: views of {w}x{h} pixels: expected square views (training "
            "resizes each view to data.resolution pixels square, which would stretch these)"
        )
    return ds


def select_frames(azimuth_deg: np.ndarray, num_frames: int, start: int) -> np.ndarray:
    """Indices of `num_frames` views forming an orbit that starts at view `start` (see module docstring).

    Args:
        azimuth_deg: (N,) azimuths of the object's views in degrees (any order).
        num_frames: F, how many frames the video has.
        start: index (into the azimuth-sorted ring) of the conditioning view.
    Returns:
        (F,) indices into the views; frame 0 is the conditioning view. Views repeat if N < F.
    """
    ring = np.argsort(np.mod(azimuth_deg, 360.0), kind="stable")
    n = ring.size
    stride = max(1, n // num_frames)
    return ring[(start + stride * np.arange(num_frames)) % n]


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, R, R), antialiased (area-like when shrinking, as the renders are larger)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(
        images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )


@dataclass
class DataConfig:
    """How videos are drawn from orbit datasets.

    Attributes:
        num_frames: F frames per video.
        resolution: square image size in pixels (the VAE's input).
        background: "random" (a uniform random colour per video), "white", or "mixed" (white with
            probability `white_prob`, else random), composited under the RGBA views.
        white_prob: for "mixed".
        alpha: frames get a 4th channel, the alpha matte in [-1, 1] (for a model with ``info.alpha``).
        shuffle_frames: frames 1..F-1 come in a random order (frame 0 stays the conditioning view), so the
            frame's position in the clip says nothing about its camera: the network must read the camera
            conditioning, and a model trained without it cannot learn the orbit from the frame index.
        use_cache: read precomputed latents when an object has them (all objects or none are used so).
        num_workers: DataLoader worker processes.
    """

    num_frames: int = 21
    resolution: int = 576
    background: str = "mixed"
    white_prob: float = 0.5
    alpha: bool = False
    shuffle_frames: bool = False
    use_cache: bool = False
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise InputError(f"data background '{self.background}': expected one of {', '.join(BACKGROUNDS)}")
        check_range("data resolution", self.resolution, 8, MAX_IMAGE_SIDE, "pixels")
        check_range("data num_frames", self.num_frames, 1, MAX_VIEWS, "a number of frames")
        if self.num_frames < 1 or self.resolution < 8:
            raise InputError(
                f"data num_frames {self.num_frames}, resolution {self.resolution}: expected >= 1 frame and >= 8 px"
            )
        if self.alpha and self.use_cache:
            raise InputError(
                "data alpha with use_cache: the latent cache holds RGB latents only; expected one of them"
            )
        if not 0.0 <= self.white_prob <= 1.0:
            raise InputError(f"data white_prob {self.white_prob}: expected a probability in [0, 1]")
        if self.num_workers < 0:
            raise InputError(
                f"data num_workers {self.num_workers}: expected 0 (load in the main process) or more"
            )


class OrbitVideoDataset(torch.utils.data.Dataset):
    """Orbit datasets as camera-conditioned videos.

    Item (a dict):
        "frames": (F, C, R, R) float32 in [-1, 1], C = 3 (RGB) or 4 (RGB and alpha, `alpha`) (absent
            with a cache);
        "cond_image": (C, R, R) float32, frame 0 (absent with a cache);
        "polar_rad", "azimuth_rad": (F,) float32, azimuth relative to the conditioning view;
        "latents": (F, 4, h, w) scaled latents, "cond_latent": (4, h, w) unscaled posterior mode,
        "clip": (1, D) CLIP embedding of the conditioning view (only with a cache);
        "index": int, "view_indices": (F,) int64.
    """

    def __init__(self, data_dirs: Sequence[str | Path], config: DataConfig, seed: int = 0):
        self.config = config
        self.seed = int(seed)
        self.epoch = 0
        self.object_dirs = find_object_dirs(data_dirs)
        # Camera angles only (images load lazily in workers); validation errors surface here, once.
        self.orbits = [read_training_orbit(d) for d in self.object_dirs]
        self.cached = self._use_cache()

    def with_config(self, config: DataConfig) -> OrbitVideoDataset:
        """The same objects, their orbits read once, drawn with another `config` (a curriculum stage)."""
        other = copy.copy(self)
        other.config, other.epoch = config, 0
        other.cached = other._use_cache()
        return other

    def _use_cache(self) -> bool:
        """Whether items come from the latent cache: `use_cache` and every object has one at this resolution."""
        config = self.config
        if not config.use_cache:
            return False
        have = [cache_path(d, config.resolution).is_file() for d in self.object_dirs]
        if any(have) and not all(have):
            missing = self.object_dirs[have.index(False)]
            raise InputError(
                f"{missing}: no latent cache for resolution {config.resolution} while other objects have one: "
                "precompute the caches of all data folders (precompute=True)",
                mentions=("precompute",),
            )
        return all(have)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws `__getitem__` makes (call on every process)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.object_dirs)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.config
        ds = self.orbits[index]
        rng = self.rng(index)
        start = int(rng.integers(len(ds)))
        views = select_frames(ds.orbit.azimuth_deg, cfg.num_frames, start)
        if cfg.shuffle_frames:
            views = np.concatenate([views[:1], rng.permutation(views[1:])])
        polar, azimuth = relative_camera_angles(ds.orbit.azimuth_deg[views], ds.orbit.elevation_deg[views])
        item: dict[str, Any] = {
            "polar_rad": torch.from_numpy(polar.astype(np.float32)),
            "azimuth_rad": torch.from_numpy(azimuth.astype(np.float32)),
            "index": int(index),
            "view_indices": torch.from_numpy(views.astype(np.int64)),
        }
        if self.cached:
            tensors = load_cache(self.object_dirs[index], cfg.resolution, expected_views=len(ds))
            idx = torch.from_numpy(views.astype(np.int64))
            item["latents"] = tensors["latents"][idx].float()
            item["cond_latent"] = tensors["cond_latents"][idx[0]].float()
            item["clip"] = tensors["clip"][idx[0]].float()
            return item
        white = cfg.background == "white" or (cfg.background == "mixed" and rng.random() < cfg.white_prob)
        background = (1.0, 1.0, 1.0) if white else tuple(rng.random(3).tolist())
        unique, inverse = np.unique(views, return_inverse=True)
        size = (ds.intrinsics.width, ds.intrinsics.height)
        rgba = np.stack([load_rgba(ds.image_paths[i], size) for i in unique])
        rgb = torch.from_numpy(composite(rgba, background)).permute(0, 3, 1, 2)
        if cfg.alpha:
            alpha = torch.from_numpy(rgba[..., 3:4].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
            rgb = torch.cat([rgb, alpha], dim=1)
        frames = _resize(rgb, cfg.resolution)[torch.from_numpy(inverse.reshape(-1))]
        frames = (frames * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()
        item["frames"] = frames
        item["cond_image"] = frames[0].clone()
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of a batch; ints become a (B,) tensor."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        out[key] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else torch.tensor(vals)
    return out


# ------------------------------------------------------------------------------------------------
# Resumable order: the position in the data is a function of the micro-step count.
# ------------------------------------------------------------------------------------------------


def batch_indices(
    num_items: int, batch_size: int, micro_step: int, seed: int, rank: int = 0, world_size: int = 1
) -> tuple[int, list[int]]:
    """(epoch, dataset indices) of the batch that process `rank` trains on at micro-step `micro_step`.

    Each epoch is a seeded permutation of the items, split into global batches of
    `batch_size * world_size` (the last partial one dropped; a dataset smaller than one global batch
    wraps around). Because the order is a pure function of the step, a resumed run (or a run on more
    processes) needs only the step count to continue where it stopped.
    """
    global_batch = batch_size * world_size
    per_epoch = max(1, num_items // global_batch)
    epoch, j = divmod(int(micro_step), per_epoch)
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(int(seed) * 100_003 + epoch))
    start = j * global_batch + rank * batch_size
    return epoch, [int(perm[(start + k) % num_items]) for k in range(batch_size)]


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields the batches of `batch_indices` from micro-step `start` on, forever (the trainer stops it)."""

    def __init__(
        self,
        dataset: OrbitVideoDataset,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterable[list[int]]:
        step = self.start
        while True:
            epoch, idx = batch_indices(
                len(self.dataset), self.batch_size, step, self.seed, self.rank, self.world_size
            )
            # Items carry their epoch so that workers (which hold copies of the dataset) draw the same
            # randomness as the main process would.
            yield [(epoch, i) for i in idx]
            step += 1


class EpochIndexed(torch.utils.data.Dataset):
    """Adapter: `dataset[(epoch, i)]` sets the epoch (in this worker's copy) and returns item i."""

    def __init__(self, dataset: OrbitVideoDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        self.dataset.set_epoch(epoch)
        return self.dataset[i]


def make_loader(
    dataset: OrbitVideoDataset, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
) -> torch.utils.data.DataLoader:
    """An endless DataLoader whose k-th batch is the batch of micro-step `start + k` (see `batch_indices`)."""
    sampler = ResumableBatchSampler(dataset, batch_size, seed, start, rank, world_size)
    workers = dataset.config.num_workers
    return torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )


# ------------------------------------------------------------------------------------------------
# Latent + CLIP cache
# ------------------------------------------------------------------------------------------------


def components_fingerprint(components: dict[str, torch.nn.Module]) -> str:
    """A short hash of the VAE and image encoder configs and a few weights, to tie a cache to its model.

    The configs' private keys (diffusers' `_use_default_values`, a list in set order that changes with
    each process's hash seed; `_name_or_path`, where the model was read from) are left out: the same
    model gives the same fingerprint in `--precompute`'s process and in training's.
    """
    h = hashlib.sha256()
    for name in ("vae", "image_encoder"):
        module = components[name]
        cfg = getattr(module, "config", {})
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        cfg = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
        for p in list(module.parameters())[:4]:
            h.update(p.detach().float().cpu().flatten()[:64].numpy().tobytes())
    return h.hexdigest()[:16]


def load_cache(
    object_dir: str | Path, resolution: int, expected_views: int | None = None
) -> dict[str, torch.Tensor]:
    """Read an object's cache: {"latents": (N,4,h,w), "cond_latents": (N,4,h,w), "clip": (N,1,D)}."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = cache_path(object_dir, resolution)
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InputError(
            f"{path}: cannot read the latent cache ({exc}): delete it and precompute again"
        ) from exc
    for key in ("latents", "cond_latents", "clip"):
        if key not in tensors:
            raise InputError(f"{path}: latent cache lacks '{key}': delete it and precompute again")
    if expected_views is not None and tensors["latents"].shape[0] != expected_views:
        raise InputError(
            f"{path}: cache holds {tensors['latents'].shape[0]} views but the dataset has {expected_views}: "
            "precompute again"
        )
    return tensors


def cache_fingerprint(object_dir: str | Path, resolution: int) -> str | None:
    """The model fingerprint recorded in an object's cache (None if absent or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(cache_path(object_dir, resolution)), framework="pt") as fh:
            return (fh.metadata() or {}).get("model")
    except Exception:  # noqa: BLE001 - any unreadable cache is reported by load_cache later
        return None


@torch.no_grad()
def precompute(
    data_dirs: Sequence[str | Path],
    components: dict[str, torch.nn.Module],
    resolution: int,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write the latent + CLIP cache of every object under `data_dirs` (resumable: done objects are skipped).

    Args:
        components: {"vae", "image_encoder"} (as `video_prior.components.build_components` returns), on the
            device and in the dtype to encode with.
        resolution: the model resolution the loader will resize to.
    Returns:
        The cache files written.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    from render.common import atomic_output
    from video_prior.conditioning import clip_embed, condition_latent, encode_frames

    vae, encoder = components["vae"], components["image_encoder"]
    fingerprint = components_fingerprint(components)
    written = []
    dirs = find_object_dirs(data_dirs)
    for d in tqdm(dirs, desc="precompute", disable=not progress, unit="obj"):
        path = cache_path(d, resolution)
        if path.is_file() and not overwrite:
            continue
        ds = read_training_orbit(d)
        rgb = torch.from_numpy(ds.load_composited((1.0, 1.0, 1.0))).permute(0, 3, 1, 2)
        images = _resize(rgb, resolution) * 2.0 - 1.0
        lat, cond, clip = [], [], []
        for s in range(0, images.shape[0], batch_size):
            chunk = images[s : s + batch_size]
            lat.append(encode_frames(vae, chunk[None])[0].float().cpu())
            cond.append(condition_latent(vae, chunk, torch.zeros(chunk.shape[0])).float().cpu())
            clip.append(clip_embed(encoder, chunk).float().cpu())
        tensors = {"latents": torch.cat(lat), "cond_latents": torch.cat(cond), "clip": torch.cat(clip)}
        meta = {
            "resolution": str(resolution),
            "num_views": str(len(ds)),
            "background": "white",
            "model": fingerprint,
        }
        with atomic_output(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        written.append(path)
    return written
