"""Fix the train / validation / test split of Sweet Home 3D's furniture catalogues (default model v2).

    python -m recipes.default_model.sweethome3d_split CATALOG_DIR [--out recipes/default_model/sweethome3d_split.json]

CATALOG_DIR holds the `.sh3f` catalogues of Debian's `sweethome3d-furniture` 1.8-1
(`apt-get download sweethome3d-furniture && dpkg -x sweethome3d-furniture_*.deb DIR`, then
`DIR/usr/share/sweethome3d/furniture`). The split is made once, committed before any training on these
objects, and never changed: the test split is scored once per shipped model.

The rule:
- by object, never by view, and objects that share a catalogue and a name ("Tool", "Bed", "Chair" drawn
  by one author in several variants) form one group that goes to one split, so that near-copies never
  sit on both sides;
- stratified by category: in each category, groups in a seeded random order go to test until the
  category's test share reaches 12.5%, then to validation until 6.5%, the rest to training;
- doors, windows and staircases (Sweet Home 3D's `doorOrWindow` objects and the two categories) are
  building parts, not objects someone photographs: they go to training only.
Object ids are `render.sources`' ids for catalogue objects, the same on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from render.common import atomic_write_text
from render.sources import resolve_sources

SEED = 20261203
TEST_SHARE = 0.125
VALIDATION_SHARE = 0.065
TRAIN_ONLY_CATEGORIES = ("Doors and windows", "Staircases")
DEFAULT_OUT = Path(__file__).with_name("sweethome3d_split.json")


def make_split(catalog_dir: str | Path, seed: int = SEED) -> dict:
    """The split as a JSON-ready dict: per-object records plus the counts per split and category."""
    sources = resolve_sources([str(catalog_dir)])
    sources = [s for s in sources if s.kind == "sh3f"]
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for s in sources:
        m = s.meta
        key = f"{m['catalog']}|{m['name'].strip().lower()}"
        category = (
            "(train only)" if m["door_or_window"] or m["category"] in TRAIN_ONLY_CATEGORIES else m["category"]
        )
        groups[category][key].append(s)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for category in sorted(groups):
        keys = sorted(groups[category])
        if category == "(train only)":
            for k in keys:
                for s in groups[category][k]:
                    split_of[s.object_id] = "train"
            continue
        n = sum(len(groups[category][k]) for k in keys)
        want_test, want_val = math.ceil(TEST_SHARE * n), math.ceil(VALIDATION_SHARE * n)
        counts = {"test": 0, "validation": 0}
        for i in rng.permutation(len(keys)):
            members = groups[category][keys[i]]
            if counts["test"] < want_test:
                name = "test"
            elif counts["validation"] < want_val:
                name = "validation"
            else:
                name = "train"
            counts[name] = counts.get(name, 0) + len(members)
            for s in members:
                split_of[s.object_id] = name
    objects = [
        {
            "object_id": s.object_id,
            "split": split_of[s.object_id],
            "catalog": s.meta["catalog"],
            "catalog_id": s.meta["catalog_id"],
            "name": s.meta["name"],
            "category": s.meta["category"],
            "creator": s.meta["creator"],
            "licence": s.meta["licence"],
        }
        for s in sources
    ]
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for o in objects:
        table[o["category"]][o["split"]] += 1
    digest = hashlib.sha256("\n".join(f"{o['object_id']} {o['split']}" for o in objects).encode()).hexdigest()
    return {
        "source": "Debian sweethome3d-furniture 1.8-1 (usr/share/sweethome3d/furniture/*.sh3f)",
        "rule": __doc__.split("The rule:")[1].split("Object ids")[0].strip(),
        "seed": seed,
        "sha256": digest,
        "counts": {k: sum(1 for o in objects if o["split"] == k) for k in ("train", "validation", "test")},
        "by_category": {c: dict(v) for c, v in sorted(table.items())},
        "train": [o["object_id"] for o in objects if o["split"] == "train"],
        "validation": [o["object_id"] for o in objects if o["split"] == "validation"],
        "test": [o["object_id"] for o in objects if o["split"] == "test"],
        "objects": objects,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog_dir")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    split = make_split(args.catalog_dir)
    out = Path(args.out)
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("sha256") != split["sha256"]:
            raise SystemExit(
                f"{out}: a different split is committed there (sha256 {old.get('sha256')}); "
                "the split is fixed once and never remade"
            )
        print(f"{out}: unchanged (sha256 {split['sha256'][:12]})")
        return
    atomic_write_text(out, json.dumps(split, indent=1) + "\n")
    print(f"{out}: {split['counts']} (sha256 {split['sha256'][:12]})")


if __name__ == "__main__":
    main()
