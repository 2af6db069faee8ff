"""Silhouette levers that need no new diffusion training, measured on the validation split.

Issue 20's last margin (mesh volume IoU over copying the input) follows the novel views' silhouettes
(MODEL_CARD.md, "Where the volume is won and lost"). This experiment asks whether cheap levers move
them, with the shipped weights unchanged:

- ``mirror``: test-time mirror averaging. Mirroring the input mirrors the world through the plane of
  the input camera's axis and the up axis, so view ``i`` of the mirrored input's orbit, mirrored back,
  is an estimate of view ``(N - i) mod N`` of the input's orbit (exact for silhouettes; lighting is not
  mirror-symmetric). The two orbits are averaged (alpha averaged, colour alpha-weighted);
  ``--ensemble 8`` makes each orbit average 8 draws, so the pair costs one ordinary 16-draw orbit.
- ``refiner-data`` / ``refiner-train`` / ``refiner-score``: a learned matte refiner. A small dilated
  CNN (about 54 k parameters) reads a generated view's RGBA, the input view's RGBA, the input's alpha
  mirrored, and the view's camera relative to the input, and predicts the true silhouette. It is trained
  on the shipped model's orbits of one training render (``train_v3.sh``'s seed-11 render: the training
  split only) against their true views, 10% of the objects held out, then scored on validation.

- ``guidance``: camera guidance, measured after mirror averaging shipped. The model's raw estimate of
  each view is pushed away from its estimate with every camera at the input's (what the network
  predicts when nothing turns): ``ref + s (cam - ref)``, as classifier-free guidance pushes away from
  the unconditional branch, so that a silhouette the camera narrows narrows further and one it leaves
  alone stays. Scored at scales ``--scales`` and with the hull carved where the raw matte exceeds each
  of ``--levels`` (the shipped calibration carves at a raw 0.35). Needs the model uncalibrated.

- ``orbits``: carving orbits, measured after the hull refiner. The hull is carved from the eval's 21 views
  at the input's elevation only; a second orbit generated from the same input at other cameras adds 20
  views to carve with (the copies' meshes keep their 21, as issue 20 defines them). Each ``--orbits``
  profile names that orbit's novel cameras (`carving_orbit`): ``up:D`` rises smoothly to D degrees
  above the input's elevation behind the object, ``down:D`` falls as far, ``step:D`` puts every novel
  view D degrees higher, ``half`` keeps the elevation and takes the azimuths halfway between the eval's.
  Scored in Chamfer and volume IoU, the two mesh margins.
- ``oracle``: how good the silhouettes must be. Each novel view's matte is moved toward the true one,
  ``(1 - w) ours + w true`` for each of ``--weights`` (colours stay ours'), and the blend is scored like
  a lever: novel-view mask IoU, and the hull meshes' Chamfer and volume IoU against copying's. It says
  what mask IoU a next model's views need for issue 20's mesh margins; it is not a method.

All score an `mv3d eval --reconstruct` folder of the validation split (its per-object ``gt/``,
``ours/`` and ``copy/`` views): novel-view mask IoU (alpha > 0.5, as `eval.view_metrics`) and the
volume IoU of the model's hull mesh against the true mesh (`eval.mesh_metrics`), with ours and copying
as they are for reference. Work is split in ``--parts`` interleaved parts so that two run side by side;
``summary`` pools their JSON files. Commands: MODEL_CARD.md, "Two silhouette levers without training"
and "Camera guidance on top of it".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VIEWS = 21  # the validation orbit: 21 views at elevation 10, frame 0 the input
MESH_METRICS = ("volume_iou", "chamfer")  # the per-object mesh keys end so (`summary`)


def _objects(eval_dirs: list[str], part: int, parts: int) -> list[Path]:
    """Per-object folders of `mv3d eval` runs (``<run>/objects/<id>``), sorted, this part's share."""
    found = sorted(p for d in eval_dirs for p in (Path(d) / "objects").iterdir() if (p / "gt").is_dir())
    return found[part::parts]


def _views(folder: Path) -> np.ndarray:
    """(N, H, W, 4) uint8 RGBA of an orbit dataset folder."""
    from render.dataset import read_orbit_dataset

    return read_orbit_dataset(folder).load_images()


def _novel_mask_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean mask IoU over the novel views (1 to N-1) of two (N, H, W, 4) uint8 orbits, as `mv3d eval`
    reads and scores silhouettes."""
    from eval.view_metrics import mask_iou, masks_from_alpha

    return float(mask_iou(masks_from_alpha(pred[1:]), masks_from_alpha(true[1:])).mean())


class _MeshScorer:
    """Volume IoU (and Chamfer) of the hull mesh of an orbit folder against an object's true mesh."""

    def __init__(self, sh3d: str) -> None:
        from render.sources import resolve_source

        self.sources = {s.object_id: s for s in resolve_source(sh3d)}

    def for_object(self, object_id: str, chamfer: bool = False):
        """`(orbit folder) -> volume IoU` of its hull mesh, None without one; with `chamfer`, a dict of
        "chamfer" and "volume_iou" (`eval.mesh_metrics` as `mv3d eval` scores them)."""
        from eval.mesh_metrics import gt_samples, mesh_metrics, occupancy, volume_iou
        from mv3d.reconstruct import reconstruct
        from render.common import InputError
        from render.meshes import world_trimesh

        gt = world_trimesh(self.sources[object_id].load())
        gt_occ = occupancy(gt, 64)
        gt_pts = gt_samples(gt) if chamfer else None

        def score(views_dir: Path) -> float | dict | None:
            try:
                mesh = reconstruct(views_dir, method="hull", texture="none", seed=0, progress=False).mesh
            except InputError:  # no common volume: recorded as no mesh, as mv3d eval does
                return None
            if not chamfer:
                return volume_iou(mesh, gt, 64, gt_occupancy=gt_occ)
            m = mesh_metrics(mesh, gt, gt_occupancy=gt_occ, gt_sampled=gt_pts)
            return {"chamfer": m["chamfer"], "volume_iou": m["volume_iou"]}

        return score


def _lever_row(
    obj: Path, lever: str, views: np.ndarray, ours: np.ndarray, true: np.ndarray, orbit, work: str, meshes
):
    """One object's results: ours and the lever's novel-view mask IoU, and the hull volume IoU of ours,
    the lever's views (written under `work`) and copying."""
    from render.dataset import write_orbit_dataset

    write_orbit_dataset(Path(work) / obj.name, views, orbit)
    score = meshes.for_object(obj.name)
    row = {
        "ours_mask_iou": _novel_mask_iou(ours, true),
        f"{lever}_mask_iou": _novel_mask_iou(views, true),
        "ours_volume_iou": score(obj / "ours"),
        f"{lever}_volume_iou": score(Path(work) / obj.name),
        "copy_volume_iou": score(obj / "copy"),
    }
    print(obj.name, row, flush=True)
    return row


def mirror_average(orbit_rgba: np.ndarray, mirrored_rgba: np.ndarray) -> np.ndarray:
    """Average an orbit with the mirrored input's orbit mirrored back: (N, H, W, 4) uint8 each.

    View i of the mirrored orbit, flipped left-right, estimates view (N - i) mod N of the orbit, for an
    orbit of N views evenly spaced in azimuth from the input's. Frame 0 keeps the orbit's own (the input).
    """
    n = len(orbit_rgba)
    back = mirrored_rgba[[(n - i) % n for i in range(n)]][:, :, ::-1].astype(np.float64) / 255
    ours = orbit_rgba.astype(np.float64) / 255
    alpha_sum = ours[..., 3:] + back[..., 3:]
    rgb = (ours[..., :3] * ours[..., 3:] + back[..., :3] * back[..., 3:]) / np.maximum(alpha_sum, 1e-6)
    out = np.clip(np.round(np.concatenate([rgb, alpha_sum / 2], -1) * 255), 0, 255).astype(np.uint8)
    out[0] = orbit_rgba[0]
    return out


def cmd_mirror(args: argparse.Namespace) -> dict:
    from eval.protocols import get_protocol
    from mv3d.generate.views import ViewGenerator

    gen = ViewGenerator.load(args.model, "cpu")
    # --ensemble: each of the two orbits averages this many draws instead of the model's 16, so that 8
    # gives mirror averaging at the cost of one ordinary orbit
    pair = ViewGenerator.load(args.model, "cpu", ensemble=args.ensemble) if args.ensemble else gen
    orbit = get_protocol("mv3d").orbit(VIEWS, 10.0)
    meshes = _MeshScorer(args.sh3d)
    results = {}
    for obj in _objects(args.eval, args.part, args.parts):
        true, saved = _views(obj / "gt"), _views(obj / "ours")
        ours = gen(true[0].copy(), orbit, 0)
        if not np.array_equal(ours, saved):  # the eval's views must be these, or nothing compares
            raise SystemExit(
                f"{obj}: regenerated views differ from the eval's: another model or seed, or another "
                "OMP_NUM_THREADS than the eval's (torch's CPU sums depend on the thread count)"
            )
        first = ours if pair is gen else pair(true[0].copy(), orbit, 0)
        avg = mirror_average(first, pair(true[0][:, ::-1].copy(), orbit, 0))
        results[obj.name] = _lever_row(obj, "mirror", avg, ours, true, orbit, args.work, meshes)
    return results


def guided(cam: np.ndarray, ref: np.ndarray, scale: float) -> np.ndarray:
    """``ref + scale (cam - ref)`` clipped to [0, 1], of two (N, H, W, 4) uint8 RGBA orbits composited on
    white: (N, H, W, 4) float64, RGB on white and alpha. Scale 1 is `cam` itself."""
    from render.images import composite

    def on_white(v: np.ndarray) -> np.ndarray:
        return np.concatenate([composite(v), v[..., 3:4] / 255], -1, dtype=np.float64)

    c, r = on_white(cam), on_white(ref)
    return np.clip(r + scale * (c - r), 0.0, 1.0)


def cmd_guidance(args: argparse.Namespace) -> dict:
    from mv3d.generate.views import ViewGenerator
    from render.cameras import Orbit
    from render.dataset import read_orbit_dataset, write_orbit_dataset

    gen = ViewGenerator.load(args.model, "cpu")
    info = gen.pipeline.denoiser.info
    if info.alpha_threshold != 0.5 or info.alpha_floor:
        raise SystemExit(
            f"{args.model}: alpha_threshold {info.alpha_threshold}, alpha_floor {info.alpha_floor}; "
            "expected an uncalibrated copy (0.5 and 0): guidance combines raw mattes"
        )
    meshes = _MeshScorer(args.sh3d)
    results = {}
    for obj in _objects(args.eval, args.part, args.parts):
        ds = read_orbit_dataset(obj / "gt")
        true, orbit, n = ds.load_images(), ds.orbit, len(ds.orbit)
        # every camera at the input's: the network's estimate when nothing turns
        still = Orbit(np.zeros(n), np.full(n, orbit.elevation_deg[0]), orbit.radius, orbit.fov_deg)
        cam, ref = gen(true[0].copy(), orbit, 0), gen(true[0].copy(), still, 0)
        score = meshes.for_object(obj.name)
        row = {
            "ours_mask_iou": _novel_mask_iou(_views(obj / "ours"), true),
            "ours_volume_iou": score(obj / "ours"),
            "copy_volume_iou": score(obj / "copy"),
        }
        for scale in args.scales:
            views = guided(cam, ref, scale)
            for level in args.levels:
                cut = true.copy()
                cut[1:, ..., :3] = np.round(views[1:, ..., :3] * 255).astype(np.uint8)
                cut[1:, ..., 3] = np.where(views[1:, ..., 3] > level, 255, 0).astype(np.uint8)
                name = f"guided{scale:g}_at{level:g}"
                folder = Path(args.work) / obj.name / name
                write_orbit_dataset(folder, cut, orbit)
                row[f"{name}_mask_iou"] = _novel_mask_iou(cut, true)
                row[f"{name}_volume_iou"] = score(folder)
        print(obj.name, row, flush=True)
        results[obj.name] = row
    return results


def carving_orbit(orbit, profile: str):
    """A second orbit of the same input for carving: `orbit`'s frame 0 (the input camera) and 20 other
    cameras by `profile` (module docstring): ``up:D``, ``down:D``, ``step:D`` or ``half``."""
    from render.cameras import Orbit

    az = np.asarray(orbit.azimuth_deg, np.float64).copy()
    el = np.asarray(orbit.elevation_deg, np.float64).copy()
    kind, _, amount = profile.partition(":")
    behind = (1.0 - np.cos(np.deg2rad(az - az[0]))) / 2.0  # 0 at the input, 1 opposite it
    if kind in ("up", "down") and amount:
        el = el + (1.0 if kind == "up" else -1.0) * float(amount) * behind
    elif kind == "step" and amount:
        el[1:] = el[1:] + float(amount)
    elif kind == "half" and not amount:
        az[1:] = az[1:] + 180.0 / len(az)
    else:
        raise SystemExit(f"--orbits {profile!r}: expected up:D, down:D, step:D or half")
    return Orbit(az, el, orbit.radius, orbit.fov_deg)


def _mesh_row(name: str, metrics: dict | None) -> dict:
    """``{name}_chamfer`` and ``{name}_volume_iou`` of `_MeshScorer`'s dict; both None without a mesh."""
    return {f"{name}_{k}": (metrics or {}).get(k) for k in ("chamfer", "volume_iou")}


def _score_variants(args: argparse.Namespace, variants) -> dict:
    """Hull meshes of ours, copying and each of `variants(true, orbit, ours)`'s ``(name, views, orbit)``
    per validation object (Chamfer and volume IoU; novel-view mask IoU where a variant keeps the eval's
    cameras), its views written under ``--work``."""
    from render.dataset import read_orbit_dataset, write_orbit_dataset

    meshes = _MeshScorer(args.sh3d)
    results = {}
    for obj in _objects(args.eval, args.part, args.parts):
        ds = read_orbit_dataset(obj / "gt")
        true, orbit, ours = ds.load_images(), ds.orbit, _views(obj / "ours")
        score = meshes.for_object(obj.name, chamfer=True)
        row = _mesh_row("ours", score(obj / "ours")) | _mesh_row("copy", score(obj / "copy"))
        row["ours_mask_iou"] = _novel_mask_iou(ours, true)
        for name, views, cameras in variants(true, orbit, ours):
            folder = Path(args.work) / obj.name / name
            write_orbit_dataset(folder, views, cameras)
            row |= _mesh_row(name, score(folder))
            if cameras is orbit:
                row[f"{name}_mask_iou"] = _novel_mask_iou(views, true)
        print(obj.name, row, flush=True)
        results[obj.name] = row
    return results


def cmd_orbits(args: argparse.Namespace) -> dict:
    from mv3d.generate.views import ViewGenerator
    from render.cameras import Orbit

    gen = ViewGenerator.load(args.model, "cpu")

    def variants(true, orbit, ours):
        for profile in args.orbits:
            second = carving_orbit(orbit, profile)
            # seed 1: the second orbit's draws are not the first's
            extra = gen(true[0].copy(), second, 1)[1:]
            both = Orbit(
                np.concatenate([orbit.azimuth_deg, second.azimuth_deg[1:]]),
                np.concatenate([orbit.elevation_deg, second.elevation_deg[1:]]),
                np.concatenate([orbit.radius, second.radius[1:]]),
                orbit.fov_deg,
            )
            yield profile.replace(":", ""), np.concatenate([ours, extra]), both

    return _score_variants(args, variants)


def toward_truth(ours: np.ndarray, true: np.ndarray, weight: float) -> np.ndarray:
    """`ours` (N, H, W, 4) uint8 with the novel views' alpha moved toward `true`'s by `weight` in [0, 1]:
    ``round((1 - w) ours + w true)``; colours and frame 0 stay ours'."""
    out = ours.copy()
    a = (1.0 - weight) * ours[1:, ..., 3].astype(np.float64) + weight * true[1:, ..., 3]
    out[1:, ..., 3] = np.round(a).astype(np.uint8)
    return out


def cmd_oracle(args: argparse.Namespace) -> dict:
    def variants(true, orbit, ours):
        for weight in args.weights:
            yield f"truth{weight:g}", toward_truth(ours, true, weight), orbit

    return _score_variants(args, variants)


# --------------------------------------------------------------------------------------------------
# The learned matte refiner
# --------------------------------------------------------------------------------------------------


def refiner_features(gen, inp, azimuth_deg, elevation_deg):
    """Refiner input (B, 12, H, W) float32 from generated views (B, H, W, 4) uint8, the input view
    repeated (B, H, W, 4) uint8, and each view's azimuth relative to the input and elevation (B,) degrees:
    generated RGBA, input RGBA, the input's alpha mirrored, cos and sin of the azimuth, elevation / 90."""
    import torch

    g = torch.from_numpy(np.ascontiguousarray(gen)).float().permute(0, 3, 1, 2) / 255
    x = torch.from_numpy(np.ascontiguousarray(inp)).float().permute(0, 3, 1, 2) / 255
    b, _, h, w = g.shape
    az = torch.from_numpy(np.deg2rad(np.asarray(azimuth_deg, np.float64))).float().view(b, 1, 1, 1)
    el = torch.from_numpy(np.asarray(elevation_deg, np.float64) / 90).float().view(b, 1, 1, 1)
    cams = torch.cat([torch.cos(az), torch.sin(az), el], 1).expand(b, 3, h, w)
    return torch.cat([g, x, x[:, 3:4].flip(-1), cams], 1)


def make_refiner(width: int = 24, dilations: tuple[int, ...] = (1, 2, 4, 8, 1)):
    """The refiner: (B, 12, H, W) features -> (B, 1, H, W) silhouette logits.

    Residual over the generated alpha (logit = gain * (alpha - 0.5) + correction, the correction's last
    layer zero), so it starts as the generated matte thresholded at 0.5. Receptive field 37 px.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dilation: int) -> None:
            super().__init__()
            self.a = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
            self.b = nn.Conv2d(width, width, 3, padding=1)

        def forward(self, h):
            return h + self.b(torch.relu(self.a(torch.relu(h))))

    class Refiner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv2d(12, width, 3, padding=1)
            self.blocks = nn.Sequential(*[Block(d) for d in dilations])
            self.out = nn.Conv2d(width, 1, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
            self.gain = nn.Parameter(torch.tensor(8.0))

        def forward(self, f):
            return self.gain * (f[:, 3:4] - 0.5) + self.out(torch.relu(self.blocks(self.inp(f))))

    return Refiner()


def cmd_refiner_data(args: argparse.Namespace) -> None:
    """The shipped model's orbit of every training object of one render, beside the true views (npz)."""
    from mv3d.generate.views import ViewGenerator
    from render.dataset import read_orbit_dataset

    gen = ViewGenerator.load(args.model, "cpu")
    folders = sorted((Path(args.renders) / "objects").iterdir())[args.part :: args.parts]
    generated, true, cams = [], [], []
    for i, folder in enumerate(folders):
        ds = read_orbit_dataset(folder)
        views = ds.load_images()
        generated.append(gen(views[0].copy(), ds.orbit, 0))
        true.append(views)
        cams.append(np.stack([ds.orbit.azimuth_deg, ds.orbit.elevation_deg], 1))
        if i % 50 == 0:
            print(f"{i}/{len(folders)}", flush=True)
    from render.common import atomic_output

    with atomic_output(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, generated=np.stack(generated), true=np.stack(true), cams=np.stack(cams))


def _flatten_views(generated, true, cams, objects):
    """Novel views of the chosen objects as refiner training rows: features' inputs and the true alpha."""
    n = generated.shape[1] - 1
    gen = generated[objects][:, 1:].reshape(-1, *generated.shape[2:])
    tgt = true[objects][:, 1:, ..., 3].reshape(-1, *true.shape[2:4])
    inp = np.repeat(true[objects][:, 0], n, axis=0)
    az = (cams[objects][:, 1:, 0] - cams[objects][:, :1, 0]).reshape(-1)
    el = cams[objects][:, 1:, 1].reshape(-1)
    return gen, inp, az, el, tgt


def cmd_refiner_train(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.manual_seed(0)
    parts = [np.load(f, allow_pickle=False) for f in args.data]
    generated = np.concatenate([p["generated"] for p in parts])
    true = np.concatenate([p["true"] for p in parts])
    cams = np.concatenate([p["cams"] for p in parts])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(generated))
    held, train = order[: len(order) // 10], order[len(order) // 10 :]
    tr, ho = _flatten_views(generated, true, cams, train), _flatten_views(generated, true, cams, held)
    net = make_refiner()
    opt = torch.optim.Adam(net.parameters(), args.lr)
    batch = 64
    total = args.epochs * (len(tr[0]) // batch)

    def held_out_iou() -> tuple[float, float]:
        from eval.view_metrics import mask_iou

        refined, plain = [], []
        with torch.no_grad():
            for s in range(0, len(ho[0]), 512):
                f = refiner_features(*(a[s : s + 512] for a in ho[:4]))
                t = torch.from_numpy(ho[4][s : s + 512] > 127)
                refined.append(mask_iou(net(f)[:, 0] > 0, t))
                plain.append(mask_iou(f[:, 3] > 0.5, t))
        return float(torch.cat(refined).mean()), float(torch.cat(plain).mean())

    print("held-out objects' mask IoU (refined, generated):", held_out_iou(), flush=True)
    step = 0
    for epoch in range(args.epochs):
        perm = rng.permutation(len(tr[0]))
        for s in range(len(tr[0]) // batch):
            b = perm[s * batch : (s + 1) * batch]
            f = refiner_features(*(a[b] for a in tr[:4]))
            t = torch.from_numpy(tr[4][b]).float()[:, None] / 255
            logit = net(f)
            p = torch.sigmoid(logit)
            inter, union = (p * t).flatten(1).sum(1), (p + t - p * t).flatten(1).sum(1)
            # Cross-entropy for every pixel, a soft IoU for the silhouette as a whole (what carving uses)
            loss = F.binary_cross_entropy_with_logits(logit, t) + (1 - (inter + 1) / (union + 1)).mean()
            for group in opt.param_groups:  # cosine decay to zero
                group["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * step / total))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        print(f"epoch {epoch}: held-out mask IoU (refined, generated):", held_out_iou(), flush=True)
    from render.common import atomic_output

    with atomic_output(args.out) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))


def cmd_refiner_score(args: argparse.Namespace) -> dict:
    import torch
    from safetensors.torch import load_file

    from eval.protocols import get_protocol

    net = make_refiner()
    net.load_state_dict(load_file(args.weights))
    net.eval()
    orbit = get_protocol("mv3d").orbit(VIEWS, 10.0)
    meshes = _MeshScorer(args.sh3d)
    results = {}
    for obj in _objects(args.eval, args.part, args.parts):
        true, ours = _views(obj / "gt"), _views(obj / "ours")
        n = len(ours) - 1
        f = refiner_features(
            ours[1:], np.repeat(true[:1], n, 0), orbit.azimuth_deg[1:], orbit.elevation_deg[1:]
        )
        with torch.no_grad():
            alpha = torch.sigmoid(net(f))[:, 0].numpy()
        refined = ours.copy()
        refined[1:, ..., 3] = np.clip(np.round(alpha * 255), 0, 255).astype(np.uint8)
        results[obj.name] = _lever_row(obj, "refined", refined, ours, true, orbit, args.work, meshes)
    return results


def summary(files: list[str]) -> str:
    """Means over the pooled objects, mesh metrics over the objects where every method made a mesh; each
    lever against ours, and ours and each lever against copying where the files have copying's."""
    from recipes.default_model.table import paired_p

    results: dict = {}
    for f in files:
        results.update(json.loads(Path(f).read_text()))
    keys = sorted(next(iter(results.values())))
    mesh_keys = [k for k in keys if k.endswith(MESH_METRICS)]
    meshed = [o for o in results if all(results[o][k] is not None for k in mesh_keys)]
    lines = [f"{len(results)} objects; volume IoU over the {len(meshed)} with every mesh"]
    for k in keys:
        objs = meshed if k in mesh_keys else list(results)
        lines.append(f"{k}: {np.mean([results[o][k] for o in objs]):.4f}")
    for metric in ("mask_iou", *MESH_METRICS):
        objs = meshed if metric in MESH_METRICS else list(results)
        for new in (k for k in keys if k.endswith(metric) and not k.startswith(("ours", "copy"))):
            d = np.array([results[o][new] - results[o][f"ours_{metric}"] for o in objs])
            p = paired_p(d)
            ahead = (d < 0 if metric == "chamfer" else d > 0).sum()  # Chamfer: lower is better
            lines.append(
                f"{new} - ours_{metric}: {d.mean():+.4f} (ahead on {ahead} of {len(d)}; p = {p:.2g})"
            )
    if "copy_chamfer" in keys:  # issue 20's mesh margins: Chamfer 20% lower, volume IoU +0.05

        def mean(key: str) -> float:
            return float(np.mean([results[o][key] for o in meshed]))

        for name in sorted({k.removesuffix("_chamfer") for k in keys if k.endswith("_chamfer")} - {"copy"}):
            lower = 1.0 - mean(f"{name}_chamfer") / mean("copy_chamfer")
            gain = mean(f"{name}_volume_iou") - mean("copy_volume_iou")
            lines.append(f"{name} against copy: Chamfer {lower:.1%} lower, volume IoU {gain:+.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def split(p: argparse.ArgumentParser) -> None:
        p.add_argument("--part", type=int, default=0)
        p.add_argument("--parts", type=int, default=1)

    def model(p: argparse.ArgumentParser) -> None:
        # the experiment measured v2 as shipped until 2026-12-05, without mirror averaging; `git
        # archive 14af398 mv3d/default_model | tar -x -C DIR` gives that folder (MODEL_CARD.md)
        p.add_argument("--model", default="default", help="the model whose views are measured")

    def scored(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--eval", nargs="+", required=True, help="mv3d eval --reconstruct folders (validation)"
        )
        p.add_argument("--sh3d", required=True, help="the Sweet Home 3D furniture folder")
        p.add_argument("--work", required=True, help="folder for the new views")
        p.add_argument("--out", required=True, help="per-object results (JSON)")
        split(p)

    p = sub.add_parser("mirror", help="test-time mirror averaging")
    p.add_argument("--ensemble", type=int, default=None, help="draws per orbit (default: the model's)")
    model(p)
    scored(p)
    p = sub.add_parser("guidance", help="camera guidance on an uncalibrated copy of the model")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    p.add_argument("--levels", type=float, nargs="+", default=[0.35, 0.5], help="raw matte levels carved")
    model(p)
    scored(p)
    p = sub.add_parser("orbits", help="carve with a second generated orbit at other cameras")
    p.add_argument("--orbits", nargs="+", default=["up:20", "up:30", "step:20", "down:15", "half"])
    model(p)
    scored(p)
    p = sub.add_parser("oracle", help="the novel views' mattes moved toward the true ones")
    p.add_argument("--weights", type=float, nargs="+", default=[0.125, 0.2, 0.25, 0.5, 0.75])
    scored(p)
    p = sub.add_parser("refiner-data", help="the shipped model's orbits of one training render")
    p.add_argument("--renders", required=True)
    p.add_argument("--out", required=True)
    model(p)
    split(p)
    p = sub.add_parser("refiner-train", help="train the refiner on refiner-data's files")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--out", required=True, help="weights (safetensors)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3)
    p = sub.add_parser("refiner-score", help="score a trained refiner on validation")
    p.add_argument("--weights", required=True)
    scored(p)
    p = sub.add_parser("summary", help="pool the per-object results of the parts")
    p.add_argument("files", nargs="+")
    args = ap.parse_args(argv)

    from render.common import atomic_write_json

    if args.cmd in ("mirror", "refiner-score", "guidance", "orbits", "oracle"):
        Path(args.work).mkdir(parents=True, exist_ok=True)
        cmd = {
            "mirror": cmd_mirror,
            "refiner-score": cmd_refiner_score,
            "guidance": cmd_guidance,
            "orbits": cmd_orbits,
            "oracle": cmd_oracle,
        }
        results = cmd[args.cmd](args)
        atomic_write_json(args.out, results, indent=1)
    elif args.cmd == "refiner-data":
        cmd_refiner_data(args)
    elif args.cmd == "refiner-train":
        cmd_refiner_train(args)
    else:
        print(summary(args.files))


if __name__ == "__main__":
    sys.exit(main())
