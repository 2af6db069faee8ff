"""Two shape priors that need no training, screened on the validation split by novel-view mask IoU.

Issue 20's mesh margins follow the novel views' silhouettes, and MODEL_CARD.md says the model lacks a
prior of real shapes. This experiment asks whether two cheap priors beat the shipped model's own
silhouettes before anything is built on them:

- **Retrieval of training shapes.** Every training object is rendered as `mv3d eval` renders its
  ground truth (21 views at elevation 10, 64 px, the fast renderer). Any of its views can play the
  input: view ``k`` as the input makes view ``(k + j) mod 21`` its novel view ``j``, and the same
  orbit mirrored left-right (view ``(k - j) mod 21``, flipped) is a second candidate, so the training
  split gives 657 x 21 x 2 candidate orbits. For each evaluated input the candidates are ranked by the
  mask IoU of their input view with the input's silhouette; the top ``K`` novel silhouettes are
  averaged and cut at 0.5 (``retrieved K``), alone or averaged with the model's (``+ ours``).
- **Snapping to the input.** A rotationally symmetric object (a bottle, a lipstick) has every
  silhouette equal to the input's, and there copying beats the model. Each novel view whose generated
  silhouette agrees with the generated input view's by more than ``tau`` (mask IoU) is replaced by the
  input's silhouette (``snap tau``).

    python -m recipes.default_model.exp_shape_retrieval bank --sh3d SH3D --work runs/retrieval --part 0
    python -m recipes.default_model.exp_shape_retrieval bank --sh3d SH3D --work runs/retrieval --part 1
    python -m recipes.default_model.exp_shape_retrieval score --work runs/retrieval EVAL/0 EVAL/1

``bank`` renders half the training split (``--part`` 0 or 1, interleaved, so two run side by side);
``score`` reads `mv3d eval` folders that kept their per-object ``gt/`` and ``ours/`` views. Results:
MODEL_CARD.md, "Two shape priors without training".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError

VIEWS = 21
KS = (1, 5, 20)
TAUS = (0.85, 0.9, 0.92, 0.94)


def candidate_orbits(masks: np.ndarray) -> np.ndarray:
    """Every way a rendered orbit can answer an input: (T, V, V, H, W) bool masks -> (T * 2V, V, H, W).

    Candidate ``(t, k)`` is object t's orbit with view k as the input; candidate ``(t, V + k)`` is the
    same orbit mirrored left-right (mirroring the world through the input camera's vertical plane turns
    the orbit the other way: novel view j is view ``(k - j) mod V``, flipped).
    """
    t, v = masks.shape[:2]
    j = np.arange(v)
    forward = [masks[:, (k + j) % v] for k in range(v)]
    mirrored = [masks[:, (k - j) % v][..., ::-1] for k in range(v)]
    return np.stack(forward + mirrored, 1).reshape(t * 2 * v, *masks.shape[1:])


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`eval.view_metrics.mask_iou` of numpy silhouettes (B, ...) bool: (B,) float; two empty give 1."""
    import torch

    from eval.view_metrics import mask_iou

    as_tensor = [torch.from_numpy(np.ascontiguousarray(m)) for m in (a, b)]
    return mask_iou(*as_tensor).numpy()


def retrieve(input_mask: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Mean novel silhouettes (V-1, H, W) float of the `k` candidates whose input view best matches
    `input_mask` (H, W) bool by mask IoU."""
    first = candidates[:, 0].reshape(len(candidates), -1).astype(np.float32)
    x = input_mask.reshape(-1).astype(np.float32)
    inter = first @ x
    score = inter / np.maximum(first.sum(1) + x.sum() - inter, 1)
    best = np.argsort(-score, kind="stable")[:k]
    return candidates[best, 1:].mean(0)


def snap(generated: np.ndarray, input_mask: np.ndarray, tau: float) -> np.ndarray:
    """Novel silhouettes (V-1, H, W) bool with each view that agrees with `generated[0]` by more than
    `tau` replaced by `input_mask`; `generated` is the whole orbit (V, H, W) bool."""
    agree = mask_ious(generated[1:], np.repeat(generated[:1], len(generated) - 1, 0)) > tau
    return np.where(agree[:, None, None], input_mask[None], generated[1:])


def split_half(
    sh3d: Path,
    folder: Path,
    split_name: str,
    part: int,
    skip: Callable[[str], bool] = lambda object_id: False,
) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """Yield (source, loaded mesh, (V, 64, 64, 4) uint8 RGBA) for one interleaved half of a split of the
    committed Sweet Home 3D split, rendered as `mv3d eval` renders ground truth (21 views, elevation 10,
    64 px, the fast renderer), with a progress bar; objects `skip` names are not loaded. The selection is
    written to folder/SPLIT_PART.txt."""
    from tqdm import tqdm

    from eval.protocols import get_protocol
    from render.renderers import get_renderer
    from render.sources import resolve_sources

    split = json.loads((Path(__file__).parent / "sweethome3d_split.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    selection = folder / f"{split_name}_{part}.txt"
    selection.write_text("\n".join(split[split_name][part::2]) + "\n")
    orbit = get_protocol("mv3d").orbit(VIEWS, 10.0)
    with get_renderer("fast") as renderer:
        sources = resolve_sources([str(sh3d)], select=str(selection))
        for src in tqdm(sources, desc=f"{split_name} {part}"):
            if not skip(str(src.object_id)):
                loaded = src.load()
                yield src, loaded, np.asarray(renderer.render(loaded, orbit, 64).rgba)


def add_split_half_arguments(parser: argparse.ArgumentParser) -> None:
    """--sh3d, --work and --part, for a subcommand that works on one half of a split."""
    parser.add_argument("--sh3d", type=Path, required=True, help="folder of the .sh3f catalogues")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--part", type=int, choices=(0, 1), required=True)


def bank(sh3d: Path, work: Path, part: int) -> Path:
    """Render half the training split as eval renders ground truth; alpha > 0.5 saved packed."""
    names, masks = [], []
    for src, _, rgba in split_half(sh3d, work, "train", part):
        names.append(str(src.object_id))
        masks.append(_masks(rgba))
    out = work / f"bank_{part}.npz"
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, names=np.array(names), masks=np.packbits(np.stack(masks), axis=-1))
    tmp.replace(out)
    return out


def _masks(rgba: np.ndarray) -> np.ndarray:
    """(N, H, W) bool silhouettes of (N, H, W, 4) uint8 views, as `mv3d eval` scores them."""
    from eval.view_metrics import masks_from_alpha

    return masks_from_alpha(rgba).numpy()


def score(work: Path, runs: list[Path]) -> dict[str, float]:
    """Mean novel-view mask IoU of ours, copying, retrieval and snapping over the runs' objects."""
    from render.dataset import read_orbit_dataset

    parts = [np.load(work / f"bank_{p}.npz") for p in (0, 1)]
    masks = np.unpackbits(np.concatenate([p["masks"] for p in parts]), axis=-1).astype(bool)
    candidates = candidate_orbits(masks)
    rows: list[dict[str, float]] = []
    for run in runs:
        for oid in json.loads((run / "metrics.json").read_text())["objects"]:
            gt, ours = (
                _masks(read_orbit_dataset(run / "objects" / oid / m).load_images()) for m in ("gt", "ours")
            )
            row = {
                "ours": mask_ious(ours[1:], gt[1:]).mean(),
                "copy": mask_ious(np.repeat(gt[:1], VIEWS - 1, 0), gt[1:]).mean(),
            }
            for k in KS:
                mean = retrieve(gt[0], candidates, k)
                row[f"retrieved {k}"] = mask_ious(mean >= 0.5, gt[1:]).mean()
                row[f"retrieved {k} + ours"] = mask_ious((mean + ours[1:]) / 2 >= 0.5, gt[1:]).mean()
            for tau in TAUS:
                row[f"snap {tau:g}"] = mask_ious(snap(ours, gt[0], tau), gt[1:]).mean()
            rows.append(row)
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]} | {"objects": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    add_split_half_arguments(sub.add_parser("bank", help="render half the training split"))
    s = sub.add_parser("score", help="score `mv3d eval` folders")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "bank":
            print(bank(args.sh3d, args.work, args.part))
        else:
            for key, value in score(args.work, args.runs).items():
                print(f"{key:22s} {value:.4f}" if key != "objects" else f"{key:22s} {value}")
    except (InputError, OSError, KeyError) as exc:
        print(f"exp_shape_retrieval: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
