"""Real third-party meshes for benchmarks, fetched from the package registry (no other network).

The `pybullet` wheel on PyPI ships `pybullet_data`, a folder of real assets made by other people: the
Stanford bunny, the COLLADA sample duck (textured), a teddy bear, a mug, a lego brick, a soccer ball.
mv3d does not depend on pybullet: this script downloads the wheel once with pip (`--no-deps`), extracts
the chosen meshes and their textures into a cache folder, and prints their paths. Usage:

    python bench/third_party.py [--cache DIR]      # prints one mesh path per line
    python bench/third_party.py --random-shapes    # prints the folder of the random shapes (below)

The same wheel also ships `random_urdfs/`: 1000 random shapes (unions of convex pieces, each with one
colour given in its URDF file). `--random-shapes` writes them as coloured PLY meshes into one folder, a
source of training shapes that are neither procedural primitives nor any of the six test meshes above.

From Python: `third_party_meshes(cache_dir) -> list[Path]`, `random_shapes(cache_dir) -> Path`.
"""

from __future__ import annotations

import argparse
import io
import re
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


def random_shapes(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The folder of pybullet_data's random shapes as vertex-coloured PLY files (written on first use).

    Each `random_urdfs/NNN/NNN.urdf` gives its mesh one RGBA colour (the OBJ's own material is a plain
    grey); the PLY carries that colour on every vertex so that any mesh loader renders it as pybullet does.
    Each shape is also turned about the vertical (+Z) axis by an angle drawn from its index: the source
    meshes mostly lie along one axis, which an orbit's first view (azimuth 0) would otherwise always face.
    """
    import numpy as np
    import trimesh

    cache = Path(cache_dir)
    out = cache / "random_shapes"
    done = out / ".complete"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_wheel(cache)) as zf:
        urdfs = sorted(
            n for n in zf.namelist() if re.fullmatch(r"pybullet_data/random_urdfs/\d+/\d+\.urdf", n)
        )
        for urdf in urdfs:
            stem = urdf[: -len(".urdf")]
            match = re.search(r'<color rgba="([^"]+)"', zf.read(urdf).decode())
            rgba = [float(x) for x in match.group(1).split()] if match else [0.8, 0.8, 0.8, 1.0]
            # from bytes, not a path: the OBJ's material file (a plain grey) is replaced by the URDF colour
            data = io.BytesIO(zf.read(stem + ".obj"))
            mesh = trimesh.load(data, file_type="obj", force="mesh", process=False)
            angle = np.random.default_rng(int(Path(stem).name)).uniform(0.0, 2.0 * np.pi)
            mesh.apply_transform(trimesh.transformations.rotation_matrix(angle, [0.0, 0.0, 1.0]))
            colour = np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)
            mesh.visual = trimesh.visual.ColorVisuals(
                mesh, vertex_colors=np.tile(colour, (len(mesh.vertices), 1))
            )
            target = out / f"{Path(stem).name}.ply"
            tmp = target.with_suffix(".ply.tmp")
            tmp.write_bytes(mesh.export(file_type="ply"))
            tmp.replace(target)
    done.write_text(f"{len(urdfs)}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--random-shapes", action="store_true", help="print the folder of the random shapes")
    args = parser.parse_args()
    if args.random_shapes:
        print(random_shapes(args.cache))
        return
    for p in third_party_meshes(args.cache):
        print(p)


if __name__ == "__main__":
    main()
