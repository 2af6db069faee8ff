"""The orbit dataset format: write, read back, validate, stay nerfstudio-readable."""

import json

import numpy as np
import pytest

from render.cameras import dynamic_orbit, static_orbit
from render.common import InputError, atomic_output
from render.dataset import composite, read_orbit_dataset, write_orbit_dataset


def _views(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 4), dtype=np.uint8)


def test_write_read_round_trip(tmp_path):
    orbit = dynamic_orbit(6, 15.0, seed=2)
    images = _views(6)
    s2w = np.diag([2.0, 2.0, 2.0, 1.0])
    out = write_orbit_dataset(
        tmp_path / "obj",
        images,
        orbit,
        source_to_world=s2w,
        renderer={"name": "test", "settings": {"spp": 1}},
    )
    ds = read_orbit_dataset(out)
    assert len(ds) == 6
    np.testing.assert_array_equal(ds.load_images(), images)
    np.testing.assert_allclose(ds.orbit.azimuth_deg, orbit.azimuth_deg)
    np.testing.assert_allclose(ds.orbit.elevation_deg, orbit.elevation_deg)
    np.testing.assert_allclose(ds.camera_to_world, orbit.camera_to_world())
    np.testing.assert_allclose(ds.source_to_world, s2w)
    assert ds.intrinsics.width == 16 and ds.intrinsics.fov_x_deg == pytest.approx(orbit.fov_deg)
    assert ds.meta["renderer"]["name"] == "test"
    assert ds.orbit.kind == "dynamic"


def test_transforms_json_is_nerfstudio_shaped(tmp_path):
    out = write_orbit_dataset(tmp_path / "obj", _views(3), static_orbit(3))
    meta = json.loads((out / "transforms.json").read_text())
    for key in (
        "camera_model",
        "fl_x",
        "fl_y",
        "cx",
        "cy",
        "w",
        "h",
        "frames",
        "source_to_world",
        "background",
    ):
        assert key in meta
    frame = meta["frames"][0]
    assert frame["file_path"] == "views/000.png"
    assert np.asarray(frame["transform_matrix"]).shape == (4, 4)
    assert frame["azimuth_deg"] == 0.0
    assert (out / frame["file_path"]).is_file()


def test_plain_nerfstudio_frames_get_angles_from_matrices(tmp_path):
    out = write_orbit_dataset(tmp_path / "obj", _views(4), static_orbit(4, elevation_deg=20.0))
    meta = json.loads((out / "transforms.json").read_text())
    for f in meta["frames"]:
        for k in ("azimuth_deg", "elevation_deg", "radius"):
            del f[k]
    del meta["fov_deg"]
    (out / "transforms.json").write_text(json.dumps(meta))
    ds = read_orbit_dataset(out)
    np.testing.assert_allclose(ds.orbit.azimuth_deg, [0, 90, 180, 270], atol=1e-9)
    np.testing.assert_allclose(ds.orbit.elevation_deg, 20.0, atol=1e-9)
    assert ds.orbit.fov_deg == pytest.approx(33.8)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m.update(frames=[]), "frames"),
        (lambda m: m["frames"][1].update(transform_matrix=[[1, 2], [3, 4]]), "4x4"),
        (lambda m: m["frames"][0].update(file_path="views/missing.png"), "does not exist"),
        (lambda m: m.update(w=-3), "positive"),
        (lambda m: m.update(background=[2, 0, 0]), "background"),
        (lambda m: m.pop("fl_x"), "fl_x"),
    ],
)
def test_malformed_datasets_are_reported(tmp_path, mutate, match):
    out = write_orbit_dataset(tmp_path / "obj", _views(3), static_orbit(3))
    meta = json.loads((out / "transforms.json").read_text())
    mutate(meta)
    (out / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=match):
        read_orbit_dataset(out)


def test_missing_folder_and_bad_json(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_orbit_dataset(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="transforms.json"):
        read_orbit_dataset(tmp_path / "d")
    (tmp_path / "d" / "transforms.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        read_orbit_dataset(tmp_path / "d")


def test_writer_rejects_wrong_images(tmp_path):
    with pytest.raises(InputError, match="expected as many"):
        write_orbit_dataset(tmp_path / "a", _views(2), static_orbit(3))
    with pytest.raises(InputError, match="RGBA"):
        write_orbit_dataset(tmp_path / "b", np.zeros((3, 8, 8, 3), np.uint8), static_orbit(3))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "obj"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.mkdir()
            (tmp / "half.png").write_bytes(b"x")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_existing_dataset(tmp_path):
    write_orbit_dataset(tmp_path / "obj", _views(3, seed=1), static_orbit(3))
    images = _views(2, seed=2)
    write_orbit_dataset(tmp_path / "obj", images, static_orbit(2))
    ds = read_orbit_dataset(tmp_path / "obj")
    np.testing.assert_array_equal(ds.load_images(), images)
    assert not (tmp_path / "obj" / "views" / "002.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj"]


def test_composite_on_white():
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], np.uint8)
    out = composite(rgba)
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[0, 1], [1, 1, 1])
    np.testing.assert_allclose(out[0, 2], [1 - 128 / 255, 1 - 128 / 255, 1], atol=1e-6)


@pytest.mark.parametrize("file_path", ["../outside.png", "/etc/hostname", "views/../../outside.png", 7, ""])
def test_frames_are_read_only_from_inside_the_dataset(tmp_path, file_path):
    """A transforms.json someone sends must not make mv3d read files outside its folder."""
    import json

    from PIL import Image

    from render.common import InputError
    from render.dataset import read_orbit_dataset

    Image.new("RGBA", (8, 8)).save(tmp_path / "outside.png")
    root = tmp_path / "ds"
    root.mkdir()
    frame = {"file_path": file_path, "transform_matrix": np.eye(4).tolist()}
    (root / "transforms.json").write_text(
        json.dumps({"w": 8, "h": 8, "fl_x": 8, "fl_y": 8, "frames": [frame]})
    )
    with pytest.raises(InputError, match="inside the dataset folder"):
        read_orbit_dataset(root)


def test_a_symlink_out_of_the_dataset_is_refused(tmp_path):
    import json

    from PIL import Image

    from render.common import InputError
    from render.dataset import read_orbit_dataset

    Image.new("RGBA", (8, 8)).save(tmp_path / "outside.png")
    root = tmp_path / "ds"
    (root / "views").mkdir(parents=True)
    (root / "views" / "000.png").symlink_to(tmp_path / "outside.png")
    frame = {"file_path": "views/000.png", "transform_matrix": np.eye(4).tolist()}
    (root / "transforms.json").write_text(
        json.dumps({"w": 8, "h": 8, "fl_x": 8, "fl_y": 8, "frames": [frame]})
    )
    with pytest.raises(InputError, match="outside the dataset folder"):
        read_orbit_dataset(root)
