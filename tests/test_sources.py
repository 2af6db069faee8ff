"""SOURCES: mesh files, folders (GSO layout too), procedural:N:SEED, ids, dedup and bad specs."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from render.common import InputError
from render.sources import ObjectSource, file_source, resolve_source, resolve_sources

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def _box(path, extents=(1.0, 2.0, 3.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box(extents=extents).export(path)
    return path


@pytest.fixture()
def tree(tmp_path):
    """A folder of meshes of several formats, a GSO-style subtree, and files to ignore."""
    root = tmp_path / "meshes"
    _box(root / "b" / "chair.ply")
    _box(root / "a" / "chair.obj")
    _box(root / "a" / "lamp.STL")
    _box(root / "c" / "deep" / "vase.glb")
    _box(root / "c" / "deep" / "cup.off")
    # Google Scanned Objects: OBJECT/meshes/model.obj (+ mtl and textures beside it).
    for name in ("Alarm_Clock", "Toy_Train"):
        obj = root / "gso" / name / "meshes" / "model.obj"
        mesh = trimesh.creation.box(extents=(1.0, 1.0, 2.0))
        mesh.visual = trimesh.visual.TextureVisuals(
            uv=np.random.default_rng(0).random((len(mesh.vertices), 2)),
            material=trimesh.visual.material.SimpleMaterial(image=Image.new("RGB", (8, 8), (200, 30, 30))),
        )
        obj.parent.mkdir(parents=True, exist_ok=True)
        mesh.export(obj)
        (root / "gso" / name / "model.config").write_text("<model/>")
    (root / "notes.txt").write_text("not a mesh")
    _box(root / ".hidden" / "secret.obj")
    _box(root / "a" / ".partial.obj")
    return root


def test_folder_is_scanned_recursively_sorted_and_filtered(tree):
    sources = resolve_sources([str(tree)])
    rel = [str(Path(s.location).relative_to(tree.resolve())).replace("\\", "/") for s in sources]
    assert rel == [
        "a/chair.obj",
        "a/lamp.STL",
        "b/chair.ply",
        "c/deep/cup.off",
        "c/deep/vase.glb",
        "gso/Alarm_Clock/meshes/model.obj",
        "gso/Toy_Train/meshes/model.obj",
    ]
    # Deterministic: the same folder resolves to the same ids in the same order.
    assert [s.object_id for s in resolve_sources([str(tree)])] == [s.object_id for s in sources]


def test_object_ids_are_unique_safe_and_readable(tree):
    sources = resolve_sources([str(tree)])
    ids = [s.object_id for s in sources]
    assert len(set(ids)) == len(ids)
    assert all(SAFE_ID.match(i) for i in ids)
    # Two files called chair get different ids; GSO models are named after their folder.
    assert sum(i.startswith("chair-") for i in ids) == 2
    assert any(i.startswith("Alarm_Clock-") for i in ids)
    assert any(i.startswith("Toy_Train-") for i in ids)
    # Odd characters in a file name are replaced.
    odd = _box(tree.parent / "we ird:name (1).obj")
    src = file_source(odd)
    assert SAFE_ID.match(src.object_id) and src.object_id.startswith("we_ird_name_1")


def test_same_object_named_twice_is_kept_once(tree):
    one = str(tree / "a" / "chair.obj")
    sources = resolve_sources([one, str(tree), "procedural:2:1", "procedural:3:1"])
    ids = [s.object_id for s in sources]
    assert len(ids) == len(set(ids)) == 7 + 3
    assert sources[0].spec == one  # first occurrence wins


def test_relative_and_absolute_paths_give_the_same_id(tree, monkeypatch):
    monkeypatch.chdir(tree)
    rel = resolve_source("a/chair.obj")[0]
    absolute = resolve_source(str(tree / "a" / "chair.obj"))[0]
    assert rel.object_id == absolute.object_id
    assert rel.spec == "a/chair.obj"


def test_file_and_gso_sources_load(tree):
    sources = resolve_sources([str(tree)])
    gso = next(s for s in sources if s.object_id.startswith("Alarm_Clock-"))
    mesh = gso.load()
    bounds = mesh.world_bounds()
    assert np.isclose((bounds[1] - bounds[0]).max(), 1.0)
    assert mesh.has_color()
    ply = next(s for s in sources if s.location.endswith("chair.ply"))
    assert ply.meta["format"] == "ply"
    assert ply.load().num_faces == 12


def test_procedural_spec():
    sources = resolve_source("procedural:3:42")
    assert [s.object_id for s in sources] == [f"procedural-s42-{i:06d}" for i in range(3)]
    assert [s.spec for s in sources] == ["procedural:42:0", "procedural:42:1", "procedural:42:2"]
    assert all(s.meta["licence"] == "cc0" for s in sources)


@pytest.mark.parametrize(
    "spec",
    [
        "procedural:",
        "procedural:3",
        "procedural:0:1",
        "procedural:x:1",
        "procedural:2:-1",
        "procedural:1:2:3",
        "procedural:1:2:plains",
        "procedural:1:2:plain:plain",
    ],
)
def test_bad_procedural_specs(spec):
    with pytest.raises(InputError, match=r"procedural:N:SEED") as info:
        resolve_sources([spec])
    assert repr(spec) in str(info.value)


def test_procedural_count_is_bounded(monkeypatch):
    """procedural:99999999999:0 built its list of sources until the kernel killed the job."""
    import render.sources as sources

    assert sources.MAX_PROCEDURAL == 1_000_000  # ids number the objects in six digits
    monkeypatch.setattr(sources, "MAX_PROCEDURAL", 5)
    assert len(resolve_sources(["procedural:5:0"])) == 5
    with pytest.raises(InputError, match=r"1 <= N <= 5 \(how many objects\)"):
        resolve_sources(["procedural:6:0"])


def test_bad_path_specs(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        resolve_sources([str(tmp_path / "nope.obj")])
    assert "procedural:N:SEED" in str(info.value) and "objaverse:" in str(info.value)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="not a mesh file"):
        resolve_sources([str(tmp_path / "readme.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no mesh files"):
        resolve_sources([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="no sources"):
        resolve_sources([])
    with pytest.raises(InputError, match="empty source"):
        resolve_sources([""])


def test_malformed_file_fails_at_load_not_at_resolve(tmp_path):
    bad = tmp_path / "broken.obj"
    bad.write_bytes(b"")
    (src,) = resolve_sources([str(bad)])
    with pytest.raises(InputError, match="broken.obj"):
        src.load()


def test_sources_pickle_for_worker_processes(tree):
    sources = resolve_sources([str(tree), "procedural:1:0"])
    again = pickle.loads(pickle.dumps(sources))
    assert again == sources
    assert again[-1].load().num_faces > 0


def test_unknown_kind_is_an_input_error():
    with pytest.raises(InputError, match="unknown source kind"):
        ObjectSource("x", "x", {}, kind="ftp").load()


def test_folders_find_every_format_the_loader_reads_and_nothing_else(tmp_path):
    """A real mesh in each extension `load_mesh` reads (any case) is found in a folder and loads; other
    files are not picked up."""
    from trimesh.exchange.gltf import export_gltf

    from render.meshes import SUPPORTED_FORMATS

    box = trimesh.creation.box((0.4, 0.2, 0.3))
    for i, ext in enumerate(sorted(SUPPORTED_FORMATS)):
        name = f"m{i}{ext.upper() if i % 2 else ext}"
        if ext == ".gltf":
            (tmp_path / name).write_bytes(export_gltf(trimesh.Scene(box), embed_buffers=True)["model.gltf"])
        else:
            box.export(tmp_path / name, file_type=ext[1:])
    (tmp_path / "notes.txt").write_text("not a mesh")
    (tmp_path / "render.png").write_bytes(b"\x89PNG")
    sources = resolve_sources([str(tmp_path)])
    found = sorted(Path(s.location).suffix.lower() for s in sources)
    assert found == sorted(SUPPORTED_FORMATS) and len(found) >= 6
    for s in sources:
        assert s.load().num_faces == 12, s.location
    with pytest.raises(InputError, match="not a mesh file"):
        resolve_sources([str(tmp_path / "notes.txt")])


def test_up_axis_applies_to_files_and_folders_and_changes_the_id_only_when_it_turns_the_mesh(tree):
    from render.meshes import Y_UP_TO_Z_UP, load_mesh

    obj, glb = tree / "a" / "chair.obj", tree / "c" / "deep" / "vase.glb"
    plain, y_up = file_source(obj), file_source(obj, "Y")
    # An OBJ read +Y up is another object (its renders differ): another id, and the axis in its meta.
    assert y_up.object_id != plain.object_id and y_up.meta["up_axis"] == "y" and "up_axis" not in plain.meta
    # The format's own axis changes nothing: same id, same meta.
    assert file_source(obj, "z") == plain and file_source(glb, "y") == file_source(glb)
    np.testing.assert_allclose(y_up.load().source_to_world, load_mesh(obj, up_axis="y").source_to_world)
    np.testing.assert_allclose(
        y_up.load().source_to_world[:3, :3] @ np.linalg.inv(plain.load().source_to_world[:3, :3]),
        Y_UP_TO_Z_UP[:3, :3],
        atol=1e-12,
    )
    # Workers get the axis with the pickled source.
    assert pickle.loads(pickle.dumps(y_up)).meta["up_axis"] == "y"
    # A folder passes it to each of its files; procedural objects ignore it.
    sources = resolve_sources([str(tree / "a"), "procedural:1:0"], up_axis="y")
    by_name = {s.object_id.split("-")[0]: s for s in sources}
    assert by_name["chair"].object_id == y_up.object_id and by_name["lamp"].meta["up_axis"] == "y"
    assert "up_axis" not in by_name["procedural"].meta
    with pytest.raises(InputError, match="up axis 'x': expected y or z"):
        resolve_sources([str(obj)], up_axis="x")
