"""How validation quality grows with the number of training shapes (an experiment; MODEL_CARD.md, "More
shapes, measured").

The one lever left on the CPU's side of issue 20's mesh margins is "many more shapes". This measures its
slope on the shapes there are: v2's stage 1 (8000 steps from v1's starting point, two renders) is run
again on nested subsets of the train split, and the validation numbers of each are set beside stage 1's
own (all 657 objects). `subsets` writes the selections: the train split's groups (objects of one
catalogue and one name, as the split keeps them) in a seeded order within each category, a category's
first `fraction` of groups (at least one) in each subset, so a smaller subset is part of every larger
one and every category keeps its share.

    python -m recipes.default_model.exp_shape_count subsets --out runs/scale --fractions 0.25 0.5

writes runs/scale/train_25.txt and train_50.txt (one object id per line, for `--select`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

SPLIT = Path(__file__).with_name("sweethome3d_split.json")


def subsets(split: dict, fractions: list[float], seed: int = 0) -> dict[float, list[str]]:
    """Nested subsets of the train split: fraction -> sorted object ids."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for obj in split["objects"]:
        if obj["split"] == "train":
            groups[(obj["catalog"], obj["name"])].append(obj)
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, members in sorted(groups.items()):
        # a group's category is its first member's (the split keeps a group in one split, not one category)
        by_category[members[0]["category"]].append(key)
    rng = random.Random(seed)
    order = {cat: rng.sample(keys, len(keys)) for cat, keys in sorted(by_category.items())}
    out = {}
    for f in fractions:
        if not 0 < f <= 1:
            raise SystemExit(f"--fractions: {f}: expected a number in (0, 1]")
        keep = [k for keys in order.values() for k in keys[: max(1, round(f * len(keys)))]]
        out[f] = sorted(o["object_id"] for k in keep for o in groups[k])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("subsets", help="write nested train-split subsets, one object id per line")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    split = json.loads(SPLIT.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for f, ids in subsets(split, args.fractions, args.seed).items():
        path = args.out / f"train_{round(100 * f)}.txt"
        path.write_text("\n".join(ids) + "\n")
        print(f"{path}: {len(ids)} objects")


if __name__ == "__main__":
    main()
