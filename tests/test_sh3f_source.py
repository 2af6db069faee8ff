"""Sweet Home 3D catalogues (.sh3f) as a render source, made by the tests as the real ones are laid out."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from render.common import InputError
from render.sh3f_source import licence_code, parse_properties, read_catalog
from render.sources import read_selection, resolve_sources

# A box 40 wide (x), 20 deep (z, its front faces +Z as Sweet Home 3D's models do) and 100 high (y).
_OBJ = """mtllib box.mtl
v -20 0 -10
v 20 0 -10
v 20 100 -10
v -20 100 -10
v -20 0 10
v 20 0 10
v 20 100 10
v -20 100 10
vt 0 0
vt 1 0
vt 1 1
vt 0 1
usemtl front
f 5/1 6/2 7/3 8/4
usemtl rest
f 1 4 3 2
f 1 2 6 5
f 2 3 7 6
f 3 4 8 7
f 4 1 5 8
"""
_MTL = """newmtl front
Kd 1 1 1
map_Kd {texture}
newmtl rest
Kd 0.2 0.2 0.8
"""


def _png(size=(4, 4), colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_catalog(
    path,
    texture="red.png",
    licence="Creative Commons Attribution 3.0 license",
    extra=None,
    texture_bytes=None,
):
    """A two-object catalogue: a textured box (category Kitchen) and a rotated copy (category Office)."""
    props = [
        "# PluginFurnitureCatalog.properties",
        "id=Test#Catalog",
        f"license={licence}",
        "id#1=Test#box",
        "name#1=Caf\\u00e9 box",
        "category#1=Kitchen",
        "creator#1=Someone",
        "model#1=/test/box/box.obj",
        "doorOrWindow#1=false",
        "width#1=40",
        "depth#1=20",
        "height#1=100",
        "id#2=Test#box2",
        "name#2=Turned box",
        "category#2=Office",
        "creator#2=Someone else",
        "model#2=/test/box2/box.obj",
        # a quarter turn about +Y: the box's +X side becomes its front
        "modelRotation#2=0 0 1 0 1 0 -1 0 0",
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("PluginFurnitureCatalog.properties", "\n".join(props + (extra or [])) + "\n")
        for folder in ("test/box", "test/box2"):
            zf.writestr(f"{folder}/box.obj", _OBJ)
            zf.writestr(f"{folder}/box.mtl", _MTL.format(texture=texture))
            zf.writestr(f"{folder}/red.png", texture_bytes if texture_bytes is not None else _png())
        zf.writestr("secret.png", _png(colour=(0, 255, 0)))
    return path


def test_properties_parser_handles_escapes_separators_and_continuations():
    text = "# c\n! c\nkey=value\na\\ b : c d\nlong=one \\\n    two\nu=caf\\u00e9\n"
    assert parse_properties(text) == {"key": "value", "a b": "c d", "long": "one two", "u": "café"}


def test_licence_codes():
    assert licence_code("Public domain") == "cc0"
    assert licence_code("Creative Commons Attribution 3.0 United States license") == "by"
    assert licence_code("Creative Commons Attribution-ShareAlike 4.0") == "by-sa"
    assert licence_code("Creative Commons Attribution-NonCommercial 3.0") == "by-nc"
    assert licence_code("All rights reserved") is None


def test_catalog_objects_carry_name_category_creator_and_licence(tmp_path):
    cat = make_catalog(tmp_path / "Test.sh3f")
    objs = resolve_sources([str(cat)])
    assert [o.meta["name"] for o in objs] == ["Café box", "Turned box"]
    assert [o.meta["category"] for o in objs] == ["Kitchen", "Office"]
    assert objs[0].meta["creator"] == "Someone" and objs[0].meta["licence"] == "by"
    assert objs[0].meta["size_cm"] == [40.0, 20.0, 100.0]
    assert all(o.kind == "sh3f" for o in objs)
    # ids do not depend on where the catalogue lies (a committed split selects the same objects anywhere)
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = make_catalog(other / "Test.sh3f")
    assert [o.object_id for o in resolve_sources([str(moved)])] == [o.object_id for o in objs]
    # a folder of catalogues works as a source too
    assert len(resolve_sources([str(other)])) == 2
    assert len(read_catalog(cat)) == 2


def test_loaded_object_is_upright_with_its_front_towards_minus_y(tmp_path):
    cat = make_catalog(tmp_path / "Test.sh3f")
    box, turned = resolve_sources([str(cat)])
    mesh = box.load()
    lo, hi = np.asarray(mesh.scene.bounds)
    ext = hi - lo
    # 40 x 20 x 100 cm, largest extent 1: x 0.4, y (depth) 0.2, z (height) 1.0
    np.testing.assert_allclose(ext, [0.4, 0.2, 1.0], atol=1e-6)
    # the textured front face (+Z in the file) now faces -Y, towards the azimuth-0 camera
    from render.meshes import world_geometry

    front = [
        (g, t)
        for _, g, t in world_geometry(mesh)
        if getattr(getattr(g.visual, "material", None), "image", None) is not None
    ]
    assert front, "the front face keeps its texture"
    normals = np.concatenate([g.face_normals @ t[:3, :3].T for g, t in front])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    np.testing.assert_allclose(normals.mean(axis=0), [0, -1, 0], atol=1e-6)
    # modelRotation turns the second box a quarter about the vertical: its width now lies along y
    ext2 = np.ptp(np.asarray(turned.load().scene.bounds), axis=0)
    np.testing.assert_allclose(ext2, [0.2, 0.4, 1.0], atol=1e-6)


def test_a_model_naming_files_outside_its_folder_is_refused(tmp_path):
    cat = make_catalog(tmp_path / "Evil.sh3f", texture="../../secret.png")
    with pytest.raises(InputError, match="outside its folder"):
        resolve_sources([str(cat)])[0].load()


def test_huge_texture_is_refused_before_decoding(tmp_path):
    from conftest import png_claiming

    # a 100-byte PNG whose header claims 9000 x 9000 pixels: decoding it would allocate 243 MB
    cat = make_catalog(tmp_path / "Big.sh3f", texture_bytes=png_claiming(9000, 9000))
    with pytest.raises(InputError, match="pixels"):
        resolve_sources([str(cat)])[0].load()


def test_malformed_catalogues_give_one_line(tmp_path):
    bad = tmp_path / "bad.sh3f"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="zip"):
        resolve_sources([str(bad)])
    empty = tmp_path / "empty.sh3f"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("x.txt", "x")
    with pytest.raises(InputError, match="PluginFurnitureCatalog"):
        resolve_sources([str(empty)])
    rot = make_catalog(tmp_path / "Rot.sh3f", extra=["modelRotation#1=1 0 nan"])
    with pytest.raises(InputError, match="modelRotation"):
        resolve_sources([str(rot)])[0].load()


def _mark_member(path, member: str, how: str) -> None:
    """Mark `member` of the zip at `path` encrypted, or compressed with a method zipfile lacks (99), in
    both its local and its central header."""
    import struct

    data = bytearray(path.read_bytes())
    local = zipfile.ZipFile(path).getinfo(member).header_offset
    central = data.find(b"PK\x01\x02" + data[local + 4 : local + 6])
    while data[central + 46 : central + 46 + len(member)] != member.encode():
        central = data.find(b"PK\x01\x02", central + 4)
    for flags, method in ((local + 6, local + 8), (central + 8, central + 10)):
        if how == "encrypted":
            data[flags] |= 1
        else:
            data[method : method + 2] = struct.pack("<H", 99)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["encrypted", "method99"])
@pytest.mark.parametrize(
    "member", ["PluginFurnitureCatalog.properties", "test/box/box.obj", "test/box/box.mtl"]
)
def test_unreadable_members_give_one_line(tmp_path, member, how):
    """An encrypted member or one compressed with an unknown method used to raise RuntimeError /
    NotImplementedError (a traceback for the catalogue; for a material file, trimesh went on without it)."""
    cat = make_catalog(tmp_path / "Locked.sh3f")
    _mark_member(cat, member, how)
    with pytest.raises(InputError, match=f"{'Locked.sh3f' if member.startswith('Plugin') else member}"):
        resolve_sources([str(cat)])[0].load()


def test_a_singular_model_rotation_gives_one_line(tmp_path):
    """It used to fail the object with "ZeroDivisionError: float division by zero"."""
    cat = make_catalog(tmp_path / "Flat.sh3f", extra=["modelRotation#1=0 0 0 0 0 0 0 0 0"])
    with pytest.raises(InputError, match="modelRotation#1 .*invertible"):
        resolve_sources([str(cat)])[0].load()


def test_selection_keeps_only_listed_ids(tmp_path):
    cat = make_catalog(tmp_path / "Test.sh3f")
    objs = resolve_sources([str(cat)])
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [objs[1].object_id], "test": [objs[0].object_id]}))
    assert [o.object_id for o in resolve_sources([str(cat)], select=f"{split}:test")] == [objs[0].object_id]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# kept\n{objs[1].object_id}\n")
    assert read_selection(str(ids)) == {objs[1].object_id}
    with pytest.raises(InputError, match="keeps none"):
        resolve_sources(["procedural:2:0"], select=f"{split}:test")
    with pytest.raises(InputError, match="list of ids"):
        resolve_sources([str(cat)], select=f"{split}:nope")


def test_render_dataset_reads_a_catalogue_and_records_its_facts(tmp_path):
    from render.jobs import render_dataset

    cat = make_catalog(tmp_path / "Test.sh3f")
    out = tmp_path / "data"
    summary = render_dataset([str(cat)], out, views=4, resolution=32, progress=False)
    assert summary["done"] == 2
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    metas = [r.get("meta", {}) for r in records]
    assert sorted(m.get("category") for m in metas) == ["Kitchen", "Office"]
    assert {m.get("licence") for m in metas} == {"by"}


def test_split_rule_groups_names_and_keeps_building_parts_in_training(tmp_path):
    from recipes.default_model.sweethome3d_split import make_split

    make_catalog(tmp_path / "A.sh3f")
    split = make_split(tmp_path)
    assert sum(split["counts"].values()) == 2
    again = make_split(tmp_path)
    assert again["sha256"] == split["sha256"]  # deterministic
    for o in split["objects"]:
        assert o["split"] in ("train", "validation", "test")


def test_an_absolute_texture_path_is_looked_up_by_its_name_inside_the_folder(tmp_path):
    # Some catalogue materials name a file on their author's machine; only its file name is used,
    # inside the object's folder (a missing file leaves the material untextured).
    cat = make_catalog(tmp_path / "Abs.sh3f", texture="/home/someone/models/red.png")
    mesh = resolve_sources([str(cat)])[0].load()
    images = [
        getattr(getattr(g.visual, "material", None), "image", None) for g in mesh.scene.geometry.values()
    ]
    assert any(im is not None for im in images)
    assert mesh.unread_files == ()
    missing = make_catalog(tmp_path / "Missing.sh3f", texture="C:/Users/x/nothere.png")
    loaded = resolve_sources([str(missing)])[0].load()
    assert len(loaded.scene.geometry) >= 1
    # drawn without it, and the load says so (a render job lists it in its manifest)
    assert loaded.unread_files == ("C:/Users/x/nothere.png",)


def test_render_dataset_lists_the_files_an_object_was_drawn_without(tmp_path):
    from render.jobs import render_dataset

    cat = make_catalog(tmp_path / "Missing.sh3f", texture="nothere.png")
    out = tmp_path / "data"
    summary = render_dataset([str(cat)], out, views=2, resolution=16, progress=False)
    assert summary["done"] == 2 and summary["drawn_without_files"] == 2
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["unread_files"] for r in records] == [["nothere.png"]] * 2
    # a rerun skips the finished objects and still lists them
    again = render_dataset([str(cat)], out, views=2, resolution=16, progress=False)
    assert again["drawn_without_files"] == 2
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["unread_files"] for r in records] == [["nothere.png"]] * 2
    # the summary counts objects, not files: one object drawn without two textures is one
    folder = tmp_path / "meshes"
    folder.mkdir()
    tri = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 0 1\n"
    (folder / "two.obj").write_text(
        f"mtllib two.mtl\n{tri}usemtl a\nf 1/1 2/2 3/3\nusemtl b\nf 1/1 2/2 4/3\n"
    )
    (folder / "two.mtl").write_text("newmtl a\nmap_Kd gone_a.png\nnewmtl b\nmap_Kd gone_b.png\n")
    (folder / "plain.obj").write_text(f"{tri}f 1 2 3\nf 1 2 4\n")
    summary = render_dataset([str(folder)], tmp_path / "two", views=2, resolution=16, progress=False)
    assert summary["done"] == 2 and summary["drawn_without_files"] == 1
    records = [json.loads(line) for line in (tmp_path / "two" / "manifest.jsonl").read_text().splitlines()]
    assert [r.get("unread_files") for r in records] == [None, ["gone_a.png", "gone_b.png"]]


def make_app_jar(path):
    """Sweet Home 3D's application archive as laid out: the default catalogue under com/eteks/... with
    every model in one resources folder, among the program's other members."""
    res = "com/eteks/sweethome3d/io/resources"
    props = [
        "id=SweetHome3D#DefaultModels",
        "license=GNU GPL / CC-BY 3.0  \\u00a9 Emmanuel Puybaret / eTeks",
        "id#1=eTeks#box",
        "name#1=Box",
        "category#1=Living room",
        "creator#1=eTeks",
        f"model#1=/{res}/box.obj",
        "id#2=eTeks#door",
        "name#2=Door",
        "category#2=Doors and windows",
        f"model#2=/{res}/box.obj",
        "doorOrWindow#2=true",
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        zf.writestr("com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties", "\n".join(props) + "\n")
        zf.writestr(f"{res}/box.obj", _OBJ)
        zf.writestr(f"{res}/box.mtl", _MTL.format(texture="red.png"))
        zf.writestr(f"{res}/red.png", _png())
    return path


def test_sweet_home_3d_jar_is_read_as_its_default_catalogue(tmp_path):
    jar = make_app_jar(tmp_path / "sweethome3d.jar")
    objs = resolve_sources([str(jar)])
    assert [o.meta["name"] for o in objs] == ["Box", "Door"]
    assert [o.meta["door_or_window"] for o in objs] == [False, True]
    assert objs[0].meta["licence"] == "by" and objs[0].meta["catalog"] == "sweethome3d"
    mesh = objs[0].load()
    lo, hi = mesh.scene.bounds
    # 40 wide, 20 deep, 100 high in the model: upright (+Z) in mv3d's world after normalisation
    extent = hi - lo
    assert extent[2] == pytest.approx(extent.max()) and extent[0] == pytest.approx(2 * extent[1], rel=1e-6)
    # a folder is scanned for .sh3f catalogues only: other .jar archives are no catalogues
    with pytest.raises(InputError, match="no mesh files"):
        resolve_sources([str(tmp_path)])
    other = tmp_path / "lib.jar"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    with pytest.raises(InputError, match="DefaultFurnitureCatalog"):
        resolve_sources([str(other)])


def test_second_held_out_set_rule_keeps_objects_and_names_what_it_left_out(tmp_path):
    from recipes.default_model.independent_set import make_set

    res = "com/eteks/sweethome3d/io/resources"
    jar = make_app_jar(tmp_path / "sweethome3d.jar")
    with zipfile.ZipFile(jar, "a") as zf:
        # an invisible marker, as the catalogue's light sources are: points and lines, no faces
        zf.writestr(f"{res}/light.obj", "v 0 0 0\nv 1 0 0\nl 1 2\n")
        text = zf.read("com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties").decode()

    def rebuilt(name, extra):
        """The jar with `extra` catalogue lines."""
        dest = tmp_path / name / "sweethome3d.jar"
        dest.parent.mkdir()
        with zipfile.ZipFile(jar) as src, zipfile.ZipFile(dest, "w") as dst:
            for info in src.infolist():
                if not info.filename.endswith("DefaultFurnitureCatalog.properties"):
                    dst.writestr(info, src.read(info))
            dst.writestr("com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties", text + extra)
        return dest

    app = rebuilt(
        "app",
        f"id#3=eTeks#light\nname#3=Light source\ncategory#3=Lights\nmodel#3=/{res}/light.obj\n"
        # building parts by either mark: a door flagged outside its category, a staircase unflagged
        f"id#4=eTeks#garage\nname#4=Garage door\ncategory#4=Exterior\nmodel#4=/{res}/box.obj\n"
        "doorOrWindow#4=true\n"
        f"id#5=eTeks#stairs\nname#5=Staircase\ncategory#5=Staircases\nmodel#5=/{res}/box.obj\n",
    )
    furniture = tmp_path / "furniture"
    furniture.mkdir()
    make_catalog(furniture / "Test.sh3f")  # holds the same box.obj bytes
    made = make_set(app, furniture)
    assert [o["name"] for o in made["objects"]] == ["Box"]
    assert [(o["name"], o["why"]) for o in made["left_out"]] == [
        ("Door", "building part"),
        ("Light source", "no surface"),
        ("Garage door", "building part"),
        ("Staircase", "building part"),
    ]
    assert made["counts"] == {"kept": 1, "left_out": {"building part": 3, "no surface": 1}}
    assert made["identical_models_in_furniture_catalogues"] == 1
    assert made == make_set(app, furniture)  # deterministic
    # only a model without faces is left out as "no surface": any other failure to load stops the script
    broken = rebuilt("broken", f"id#3=eTeks#gone\nname#3=Gone\ncategory#3=Lights\nmodel#3=/{res}/gone.obj\n")
    with pytest.raises(InputError, match="missing from the archive"):
        make_set(broken)
