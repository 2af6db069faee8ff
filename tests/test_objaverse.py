"""objaverse: sources through the objaverse package, pointed at a local cache folder the test builds.

The folder is laid out like the package's cache (`hf-objaverse-v1/object-paths.json.gz`,
`lvis-annotations.json.gz`, `metadata/DDD-DDD.json.gz`, `glbs/DDD-DDD/UID.glb`). No test touches the
network: downloads are either forbidden (HF_HUB_OFFLINE=1) or redirected to a loopback socket that
never answers, to show the timeout is bounded.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.request

import numpy as np
import pytest
import trimesh

from render.common import InputError
from render.curation import CurationConfig, check_source
from render.objaverse_source import (
    ObjaverseCache,
    ObjaverseSelection,
    cache_dir,
    parse_objaverse_spec,
)
from render.sources import resolve_sources

# uid -> (shard, licence, faces, animations, present on disk)
OBJECTS = {
    "a" * 32: ("000-000", "by", 12, 0, True),
    "b" * 32: ("000-000", "by-nc", 12, 0, True),
    "c" * 32: ("000-001", "cc0", 80, 2, True),
    "d" * 32: ("000-001", "by-sa", 12, 0, False),  # in the index, but never downloaded
}
UA, UB, UC, UD = OBJECTS
LVIS = {"chair": [UC, UA], "mug": [UB, UD], "lamp": []}


def _gz(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        json.dump(obj, fh)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = tmp_path / "objaverse"
    root = base / "hf-objaverse-v1"
    paths, shards = {}, {}
    for i, (uid, (shard, licence, faces, anims, present)) in enumerate(OBJECTS.items()):
        paths[uid] = f"glbs/{shard}/{uid}.glb"
        shards.setdefault(shard, {})[uid] = {
            "uid": uid,
            "name": f"thing {i}",
            "license": licence,
            "faceCount": faces,
            "vertexCount": 8,
            "animationCount": anims,
        }
        if present:
            glb = root / paths[uid]
            glb.parent.mkdir(parents=True, exist_ok=True)
            trimesh.Scene(trimesh.creation.box(extents=(1.0, 0.5 + i, 0.7))).export(glb)
    _gz(root / "object-paths.json.gz", paths)
    _gz(root / "lvis-annotations.json.gz", LVIS)
    for shard, data in shards.items():
        _gz(root / "metadata" / f"{shard}.json.gz", data)
    return base


def test_grammar():
    assert parse_objaverse_spec("objaverse:all") == ObjaverseSelection("all")
    assert parse_objaverse_spec(f"objaverse:uids={UA},{UB}.glb") == ObjaverseSelection("uids", (UA, UB))
    assert parse_objaverse_spec("objaverse:lvis=chair,mug:limit=3") == ObjaverseSelection(
        "lvis", ("chair", "mug"), limit=3
    )
    assert parse_objaverse_spec("objaverse:all:seed=4:limit=2") == ObjaverseSelection("all", limit=2, seed=4)
    # A ':' that starts no option stays in the value (paths).
    assert parse_objaverse_spec("objaverse:uids-file=C:/x/u.txt:limit=1") == ObjaverseSelection(
        "uids-file", ("C:/x/u.txt",), limit=1
    )
    for bad in [
        "objaverse:",
        "objaverse:everything",
        "objaverse:uids=",
        "objaverse:all=3",
        "objaverse:all:limit=0",
        "objaverse:all:limit=x",
        "objaverse:all:seed=-1",
        "objaverse:all:limit=1:limit=2",
    ]:
        with pytest.raises(InputError, match="expected objaverse:uids=") as info:
            parse_objaverse_spec(bad)
        assert repr(bad) in str(info.value)


def test_cache_dir_accepts_base_or_versioned_folder(cache):
    assert cache_dir(cache) == cache / "hf-objaverse-v1"
    assert cache_dir(cache / "hf-objaverse-v1") == cache / "hf-objaverse-v1"


def test_uids_resolve_with_annotations_and_load(cache):
    import objaverse

    before = objaverse._VERSIONED_PATH
    sources = resolve_sources([f"objaverse:uids={UB},{UA}"], objaverse_dir=str(cache))
    assert objaverse._VERSIONED_PATH == before  # the package's global is restored
    assert [s.object_id for s in sources] == [f"objaverse-{UB}", f"objaverse-{UA}"]
    assert sources[0].meta["licence"] == "by-nc"
    assert sources[0].meta["face_count"] == 12 and sources[0].meta["name"] == "thing 1"
    mesh = sources[1].load()
    assert mesh.source.endswith(f"{UA}.glb")
    assert mesh.num_faces == 12
    np.testing.assert_allclose((mesh.world_bounds()[1] - mesh.world_bounds()[0]).max(), 1.0)


def test_lvis_all_and_uids_file_selections(cache, tmp_path):
    lvis = resolve_sources(["objaverse:lvis=chair,mug"], objaverse_dir=cache)
    assert [s.meta["uid"] for s in lvis] == [UC, UA, UB, UD]
    assert [s.meta["lvis_category"] for s in lvis] == ["chair", "chair", "mug", "mug"]
    assert len(resolve_sources(["objaverse:lvis=chair,mug:limit=3"], objaverse_dir=cache)) == 3

    everything = resolve_sources(["objaverse:all"], objaverse_dir=cache)
    assert [s.meta["uid"] for s in everything] == sorted(OBJECTS)
    a = resolve_sources(["objaverse:all:seed=3:limit=2"], objaverse_dir=cache)
    b = resolve_sources(["objaverse:all:limit=2:seed=3"], objaverse_dir=cache)
    assert [s.object_id for s in a] == [s.object_id for s in b] and len(a) == 2

    f = tmp_path / "uids.txt"
    f.write_text(f"# my picks\n{UC}.glb\n\n{UA}  # a box\n{UC}\n")
    picked = resolve_sources([f"objaverse:uids-file={f}"], objaverse_dir=cache)
    assert [s.meta["uid"] for s in picked] == [UC, UA]


def test_unknown_uid_category_and_empty_selection(cache, tmp_path):
    with pytest.raises(InputError, match="not found in .*object-paths.json.gz"):
        resolve_sources(["objaverse:uids=" + "e" * 32], objaverse_dir=cache)
    with pytest.raises(InputError, match="sofa.*not in"):
        resolve_sources(["objaverse:lvis=sofa"], objaverse_dir=cache)
    with pytest.raises(InputError, match="selects no objects"):
        resolve_sources(["objaverse:lvis=lamp"], objaverse_dir=cache)
    with pytest.raises(InputError, match="cannot read UID file"):
        resolve_sources([f"objaverse:uids-file={tmp_path / 'none.txt'}"], objaverse_dir=cache)


def test_object_not_in_local_cache_is_a_clear_error_offline(cache):
    (src,) = resolve_sources([f"objaverse:uids={UD}"], objaverse_dir=cache)
    start = time.monotonic()
    with pytest.raises(InputError, match="not in the local cache.*HF_HUB_OFFLINE") as info:
        src.load()
    assert time.monotonic() - start < 5.0
    assert UD in str(info.value)


def test_missing_index_files_offline(cache):
    (cache / "hf-objaverse-v1" / "metadata" / "000-001.json.gz").unlink()
    with pytest.raises(InputError, match="metadata/000-001.json.gz.*HF_HUB_OFFLINE"):
        resolve_sources([f"objaverse:uids={UC}"], objaverse_dir=cache)
    # Other shards still work.
    assert len(resolve_sources([f"objaverse:uids={UA}"], objaverse_dir=cache)) == 1
    with pytest.raises(InputError, match="object-paths.json.gz"):
        resolve_sources(["objaverse:all"], objaverse_dir=cache / "elsewhere")


def test_corrupt_index_file_is_an_input_error(cache):
    (cache / "hf-objaverse-v1" / "lvis-annotations.json.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="lvis-annotations.json.gz.*not a gzipped JSON"):
        resolve_sources(["objaverse:lvis=chair"], objaverse_dir=cache)


def test_unreachable_hub_times_out(cache, monkeypatch):
    """With downloads allowed, a hub that never answers gives an InputError after the timeout."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # connections complete in the kernel's backlog, but nothing ever answers
    port = server.getsockname()[1]
    real = urllib.request.urlretrieve
    seen = []

    def to_loopback(url, filename=None, *args, **kwargs):
        seen.append(url)
        return real(f"http://127.0.0.1:{port}/never", filename)

    monkeypatch.setattr(urllib.request, "urlretrieve", to_loopback)
    default_timeout = socket.getdefaulttimeout()
    try:
        cache_obj = ObjaverseCache(cache_dir(cache), timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(InputError, match="downloading it failed within 0.5 s"):
            cache_obj.object_file(UD)
        assert time.monotonic() - start < 10.0
    finally:
        server.close()
    assert seen and seen[0].endswith(f"glbs/000-001/{UD}.glb")  # the package asked for the GLB
    assert socket.getdefaulttimeout() == default_timeout
    assert not (cache_dir(cache) / f"glbs/000-001/{UD}.glb").exists()


def test_licence_and_annotations_feed_curation(cache):
    sources = resolve_sources(["objaverse:all"], objaverse_dir=cache)
    reasons = {s.meta["uid"]: check_source(s, CurationConfig()) for s in sources}
    assert reasons == {UA: None, UB: "licence: by-nc", UC: "animated: 2 animation(s)", UD: None}
    loose = CurationConfig.from_cli(["licences=any", "reject_animated=false"])
    assert all(check_source(s, loose) is None for s in sources)


def test_hostile_uids_and_object_paths_stay_inside_their_folders(tmp_path, monkeypatch):
    """A uid with `../` (from the cache's own path list) becomes one safe folder name; an object path
    that leaves the cache is refused; render-dataset writes nothing outside --out."""
    from render.jobs import render_dataset
    from render.sources import safe_object_id

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "objaverse" / "hf-objaverse-v1"
    evil, escape = "../../../escaped", "ok" * 16
    paths = {evil: "glbs/000-000/evil.glb", escape: "glbs/000-000/../../../../outside.glb"}
    glb = root / paths[evil]
    glb.parent.mkdir(parents=True)
    trimesh.Scene(trimesh.creation.box()).export(glb)
    trimesh.Scene(trimesh.creation.box()).export(tmp_path / "outside.glb")
    _gz(root / "object-paths.json.gz", paths)
    _gz(root / "lvis-annotations.json.gz", {})
    _gz(root / "metadata" / "000-000.json.gz", {})
    sources = resolve_sources(["objaverse:all"], objaverse_dir=str(tmp_path / "objaverse"))
    ids = sorted(s.object_id for s in sources)
    assert all("/" not in i and ".." not in i for i in ids), ids
    assert safe_object_id("objaverse", evil) != safe_object_id("objaverse", "___escaped")
    with pytest.raises(InputError, match="expected a path inside"):
        ObjaverseCache(root).object_file(escape)
    out = tmp_path / "work" / "deep" / "data"
    summary = render_dataset(
        ["objaverse:all"],
        out,
        views=2,
        resolution=16,
        objaverse_dir=str(tmp_path / "objaverse"),
        progress=False,
    )
    assert summary["done"] == 1 and summary["failed"] == 1
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "work" / "escaped").exists()
    assert sorted(p.name for p in (out / "objects").iterdir()) == [safe_object_id("objaverse", evil)]


def test_object_ids_that_are_not_one_folder_name_are_refused(tmp_path):
    from render.jobs import render_dataset
    from render.sources import ObjectSource

    for bad in ("../x", "a/b", "..", "", "/abs"):
        with pytest.raises(InputError, match="expected one folder name"):
            render_dataset(
                [ObjectSource(bad, "x", {})], tmp_path / "d", views=2, resolution=16, progress=False
            )
