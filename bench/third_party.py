"""Real third-party meshes for benchmarks, fetched from the package registry (no other network).

The `pybullet` wheel on PyPI ships `pybullet_data`, a folder of real assets made by other people: the
Stanford bunny, the COLLADA sample duck (textured), a teddy bear, a mug, a lego brick, a soccer ball.
mv3d does not depend on pybullet: this script downloads the wheel once with pip (`--no-deps`), extracts
the chosen meshes and their textures into a cache folder, and prints their paths. Usage:

    python bench/third_party.py [--cache DIR]      # prints one mesh path per line

From Python: `third_party_meshes(cache_dir) -> list[Path]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "pybullet==3.2.7"
#: mesh file -> files it references (materials, textures), all relative to pybullet_data/.
ASSETS = {
    "duck.obj": ["duck.mtl", "duckCM.png"],
    "bunny.obj": [],
    "teddy2_VHACD_CHs.obj": [],
    "objects/mug.obj": [],
    "lego/lego.obj": [],
    "soccerball.obj": ["soccerball.mtl"],
}
DEFAULT_CACHE = Path.home() / ".cache" / "mv3d" / "third_party"


def _wheel(cache: Path) -> Path:
    wheels = sorted(cache.glob("pybullet-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), WHEEL_REQUIREMENT],
            check=True,
        )
        wheels = sorted(cache.glob("pybullet-*.whl"))
    return wheels[-1]


def third_party_meshes(cache_dir: str | Path = DEFAULT_CACHE) -> list[Path]:
    """Paths of the extracted meshes (downloads and extracts on first use)."""
    cache = Path(cache_dir)
    out = cache / "pybullet_data"
    paths = [out / name for name in ASSETS]
    if all(p.is_file() for p in paths):
        return paths
    with zipfile.ZipFile(_wheel(cache)) as zf:
        names = set(zf.namelist())
        for mesh, extra in ASSETS.items():
            for rel in [mesh, *extra]:
                member = f"pybullet_data/{rel}"
                if member in names:
                    zf.extract(member, cache)
    return [p for p in paths if p.is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args()
    for p in third_party_meshes(args.cache):
        print(p)


if __name__ == "__main__":
    main()
