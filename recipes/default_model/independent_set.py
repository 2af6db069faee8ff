"""Fix a second held-out set for the default model: Sweet Home 3D's own default catalogue.

    python -m recipes.default_model.independent_set JAR [--furniture CATALOG_DIR] [--out recipes/default_model/independent_set.json]

JAR is `usr/share/sweethome3d/sweethome3d.jar` of Debian's `sweethome3d` 7.0.2+dfsg-3 (`apt-get download
sweethome3d && dpkg -x sweethome3d_*.deb DIR`). Its 100 catalogue entries are eTeks' own models, drawn
by another author than any object of the furniture catalogues the model was trained on, and none of them
was ever rendered for training, validation or a choice. The set is fixed by the rule below and committed
before any model is scored on it; it is scored once (MODEL_CARD.md, "A second held-out set").

The rule, the test split's (`sweethome3d_split.py`) where it applies:
- doors, windows and staircases are building parts, not objects someone photographs: left out;
- an entry whose model has no surface (the catalogue's light sources are invisible markers: lines and
  points only) is left out, since nothing can be rendered or scored;
- everything else is in, one entry one object (entries sharing a model file are distinct objects only
  when their names differ; Sweet Home 3D lists none twice).
With CATALOG_DIR (the furniture catalogues' folder), the script also checks that no model file of the
set is byte-identical to one the furniture catalogues hold, and records the answer.
Object ids are `render.sources`' ids for catalogue objects, the same on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile
from collections import Counter
from pathlib import Path

from recipes.default_model.sweethome3d_split import TRAIN_ONLY_CATEGORIES
from render.common import InputError, atomic_write_text
from render.sources import resolve_sources

DEFAULT_OUT = Path(__file__).with_name("independent_set.json")
SET_KEY = "test"  # the key `--select FILE:test` and recipe_lib.sh's eval_halves read
RULE = (
    "every entry of the default catalogue but doors, windows and staircases (building parts) and entries "
    "whose model has no surface (the invisible light sources)"
)


def _model_hashes(path: Path) -> set[str]:
    """sha256 of every OBJ member of a catalogue archive."""
    with zipfile.ZipFile(path) as zf:
        return {
            hashlib.sha256(zf.read(i)).hexdigest()
            for i in zf.infolist()
            if i.filename.lower().endswith(".obj")
        }


def make_set(jar: str | Path, furniture: str | Path | None = None) -> dict:
    """The set as a JSON-ready dict: the ids, each object's facts and what was left out and why."""
    sources = [s for s in resolve_sources([str(jar)]) if s.kind == "sh3f"]
    kept, left_out = [], []
    for s in sources:
        m = s.meta
        if m["door_or_window"] or m["category"] in TRAIN_ONLY_CATEGORIES:
            left_out.append({"object_id": s.object_id, "name": m["name"], "why": "building part"})
            continue
        try:
            s.load()
        except InputError as exc:
            if "no triangle faces" not in str(exc):
                raise
            left_out.append({"object_id": s.object_id, "name": m["name"], "why": "no surface"})
            continue
        kept.append(s)
    ids = [s.object_id for s in kept]
    out: dict = {
        "source": "sweethome3d.jar of Debian's sweethome3d 7.0.2+dfsg-3 (its default furniture catalogue)",
        "rule": RULE,
        "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "counts": {"kept": len(ids), "left_out": dict(Counter(x["why"] for x in left_out))},
        "by_category": dict(sorted(Counter(s.meta["category"] for s in kept).items())),
        SET_KEY: ids,
        "objects": [
            {
                "object_id": s.object_id,
                "catalog_id": s.meta["catalog_id"],
                "name": s.meta["name"],
                "category": s.meta["category"],
                "creator": s.meta["creator"],
                "licence_text": s.meta["licence_text"],
            }
            for s in kept
        ],
        "left_out": left_out,
    }
    if furniture is not None:
        theirs: set[str] = set()
        for cat in sorted(Path(furniture).glob("*.sh3f")):
            theirs |= _model_hashes(cat)
        with zipfile.ZipFile(jar) as zf:
            ours = {hashlib.sha256(zf.read(s.spec.rpartition("#")[2])).hexdigest() for s in kept}
        out["identical_models_in_furniture_catalogues"] = len(ours & theirs)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jar", help="sweethome3d.jar of Debian's sweethome3d package")
    parser.add_argument("--furniture", help="the sweethome3d-furniture .sh3f folder, for the overlap check")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    made = make_set(args.jar, args.furniture)
    atomic_write_text(Path(args.out), json.dumps(made, indent=1, ensure_ascii=False) + "\n")
    print(
        f"{made['counts']['kept']} objects ({made['counts']['left_out']} left out), sha256 {made['sha256'][:12]}…"
    )
    if "identical_models_in_furniture_catalogues" in made:
        print(
            f"model files byte-identical to the furniture catalogues': {made['identical_models_in_furniture_catalogues']}"
        )


if __name__ == "__main__":
    main()
