"""Hostile and careless inputs: generated malformed meshes, images, model folders, safetensors headers,
configs and transforms.json files fed to the commands (in-process through `mv3d.cli.main`). Each must
end with exit code 2 and one `mv3d: error:` line, no traceback; memory stays bounded where checked."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import png_claiming, run_cli


def assert_one_line(code: int, out: str, err: str) -> str:
    """The one error line of a refused command (`run_cli`'s code, stdout, stderr)."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mv3d: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Numeric options and config values with documented upper bounds
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["render", "{mesh}", "-o", "{out}", "--resolution", 100000], "--resolution"),
        (["render", "{mesh}", "-o", "{out}", "--views", 100000], "--views"),
        (["render-dataset", "procedural:1:0", "-o", "{out}", "--resolution", 100000], "--resolution"),
        (["export", "{mesh}", "--turntable", "{out}.gif", "--resolution", 100000], "--resolution"),
        (["export", "{mesh}", "--turntable", "{out}.gif", "--frames", 10**9], "--frames"),
        (["convert-weights", "{mesh}", "-o", "{out}", "--resolution", 100000], "--resolution"),
    ],
)
def test_numeric_options_have_upper_bounds(args, flag, tmp_path, example_mesh, capsys):
    args = [str(a).format(mesh=example_mesh, out=tmp_path / "o") for a in args]
    line = assert_one_line(*run_cli(args, capsys))
    assert line.startswith(f"mv3d: error: {flag} ") and "to " in line, line


def test_config_values_have_upper_bounds(tmp_path):
    from render.common import InputError
    from video_prior.components import ModelInfo
    from video_prior.train import TrainConfig

    with pytest.raises(InputError, match="data resolution 100000: expected pixels from 8 to 4096"):
        TrainConfig.from_dict(
            {"model": {"preset": "tiny"}, "data": {"resolution": 100000, "num_frames": 4}, "max_steps": 1}
        )
    for key, value in (("resolution", 100000), ("num_frames", 10**7), ("default_ensemble", 10**6)):
        with pytest.raises(InputError, match=f"model {key} {value}: expected"):
            ModelInfo.from_dict({"conditioning": "sv3d_p", key: value}, "mv3d_model.json")


def test_render_object_and_turntable_bound_the_resolution_from_python(tmp_path, example_mesh):
    """The CLI bounded --resolution; from Python a huge side allocated tens of gigabytes (MemoryError)."""
    from mv3d.export import turntable
    from render.cameras import static_orbit
    from render.common import InputError
    from render.meshes import read_trimesh
    from render.render_object import render_object

    with pytest.raises(InputError, match=r"^resolution 100000: expected pixels from 8 to 4096") as info:
        render_object(example_mesh, tmp_path / "o", static_orbit(2), 100000)
    assert info.value.field == "resolution"
    with pytest.raises(InputError, match=r"^resolution 100000: expected pixels from 8 to 4096"):
        turntable(read_trimesh(example_mesh), tmp_path / "t.gif", 2, 100000)
    with pytest.raises(InputError, match=r"^resolution 4: expected pixels from 8 to 4096"):
        render_object(example_mesh, tmp_path / "o", static_orbit(2), 4)
    assert list(tmp_path.iterdir()) == []


def test_ensemble_and_output_size_are_bounded_in_the_pipeline():
    import torch

    from render.cameras import static_orbit
    from render.common import InputError
    from video_prior.components import tiny_config
    from video_prior.pipeline import MultiViewPipeline

    torch.manual_seed(0)
    pipe = MultiViewPipeline.from_config(tiny_config(num_frames=4, sample_size=16), seed=0)
    image = np.zeros((16, 16, 4), np.uint8)
    with pytest.raises(InputError, match=r"^ensemble 1000000: expected") as info:
        pipe(image, static_orbit(4), ensemble=1000000)
    assert info.value.field == "ensemble"
    with pytest.raises(InputError, match=r"^resolution 100000: expected"):
        pipe(image, static_orbit(4), height=100000, width=100000)


# ------------------------------------------------------------------------------------------------
# Images checked against a pixel budget before decoding
# ------------------------------------------------------------------------------------------------


def _dataset(root: Path, frames: list[str], w: int = 16, h: int = 16) -> Path:
    from render.cameras import static_orbit

    root.mkdir(parents=True, exist_ok=True)
    c2w = static_orbit(len(frames)).camera_to_world()
    meta = {
        "w": w,
        "h": h,
        "fl_x": float(w),
        "fl_y": float(w),
        "frames": [
            {"file_path": f, "transform_matrix": m.tolist()} for f, m in zip(frames, c2w, strict=True)
        ],
    }
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_view_bombs_and_views_of_other_sizes_are_refused_in_reconstruct(tmp_path, capsys):
    from PIL import Image

    root = _dataset(tmp_path / "bomb", ["v.png"] * 21)
    (root / "v.png").write_bytes(png_claiming(13000, 13000))  # 169 MP named by 21 frames (issue: 7.4 GB)
    line = assert_one_line(*run_cli(["reconstruct", root, "-o", tmp_path / "m.glb"], capsys))
    assert "13000x13000" in line
    root = _dataset(tmp_path / "sizes", ["a.png", "b.png", "c.png"])
    for name, size in (("a.png", 16), ("b.png", 16), ("c.png", 24)):
        Image.new("RGBA", (size, size), (200, 0, 0, 255)).save(root / name)
    line = assert_one_line(*run_cli(["reconstruct", root, "-o", tmp_path / "m.glb"], capsys))
    assert "24x24" in line and "expected 16x16" in line


def test_input_png_bomb_under_the_old_limit_is_refused(tmp_path):
    from mv3d.preprocess import preprocess_image
    from render.common import InputError

    p = tmp_path / "big.png"
    p.write_bytes(png_claiming(19000, 19000))  # 361 MP: under the 400 MP header bound, decoded whole
    with pytest.raises(InputError, match="megapixels for formats decoded whole"):
        preprocess_image(p, 64)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_glb_with_a_texture_bomb_stays_small_in_memory(tmp_path):
    """The issue's case (a small GLB, huge textures) in a subprocess: one line, exit 2, and the process's
    peak memory stays far below what decoding one texture would take (169 MP x 4 bytes = 676 MB)."""
    import trimesh
    from PIL import Image

    box = trimesh.creation.box()
    box.visual = trimesh.visual.TextureVisuals(
        uv=np.random.default_rng(0).random((len(box.vertices), 2)), image=Image.new("RGB", (8, 8))
    )
    glb = bytearray(trimesh.Scene(box).export(file_type="glb"))
    start = glb.find(b"\x89PNG")  # the embedded PNG: give it a header claiming 13000^2 pixels
    assert start > 0
    ihdr = glb.find(b"IHDR", start)
    body = struct.pack(">IIBBBBB", 13000, 13000, 8, 2, 0, 0, 0)
    glb[ihdr + 4 : ihdr + 17] = body
    glb[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    path = tmp_path / "bomb.glb"
    path.write_bytes(bytes(glb))
    # VmHWM is the peak of this process's own memory since its exec (ru_maxrss would also carry the
    # high-water mark of the forking pytest process across exec).
    script = textwrap.dedent(
        f"""
        import re
        from pathlib import Path
        from mv3d.cli import main
        try:
            main(["render", {str(path)!r}, "-o", {str(tmp_path / "out")!r}, "--views", "2", "--resolution", "16"])
        except SystemExit as exc:
            code = exc.code
        peak = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
        print("PEAK_KB", peak, "CODE", code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    out = proc.stdout.split()
    assert "PEAK_KB" in out, proc.stderr
    peak_mb = int(out[out.index("PEAK_KB") + 1]) / 1024
    assert out[out.index("CODE") + 1] == "2", proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("mv3d: error:")]
    assert len(err) == 1 and "13000x13000" in err[0] and "Traceback" not in proc.stderr, proc.stderr
    assert peak_mb < 600, peak_mb  # measured: 112 MB (imports included)


# ------------------------------------------------------------------------------------------------
# Malformed meshes: generated variations of a valid glTF, and OBJ coordinates
# ------------------------------------------------------------------------------------------------


def _gltf() -> dict:
    import base64

    data = (
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
        + np.array([0, 1, 2, 0], np.uint16).tobytes()
    )
    return {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [
            {
                "byteLength": len(data),
                "uri": "data:application/octet-stream;base64," + base64.b64encode(data).decode(),
            }
        ],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 36},
            {"buffer": 0, "byteOffset": 36, "byteLength": 6},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            },
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],
    }


def _mutations() -> dict[str, callable]:
    """Each edits a valid glTF into a malformed one (the issue's and their neighbours)."""

    def setter(*path, value):
        def edit(doc):
            target = doc
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return edit

    return {
        "cyclic_nodes": setter("nodes", value=[{"mesh": 0, "children": [1]}, {"children": [0]}]),
        "own_child": setter("nodes", value=[{"mesh": 0, "children": [0]}]),
        "child_out_of_range": setter("nodes", value=[{"mesh": 0, "children": [7]}]),
        "scene_node_out_of_range": setter("scenes", value=[{"nodes": [5]}]),
        "byteLength_string": setter("buffers", 0, "byteLength", value="abc"),
        "byteLength_negative": setter("buffers", 0, "byteLength", value=-5),
        "buffers_as_strings": setter("buffers", value=["abc"]),
        "buffer_uri_number": setter("buffers", 0, "uri", value=7),
        "buffer_uri_outside": setter("buffers", 0, "uri", value="../../etc/passwd"),
        "views_as_strings": setter("bufferViews", value=["x", 3]),
        "view_offset_float": setter("bufferViews", 0, "byteOffset", value=1.5),
        "count_string": setter("accessors", 0, "count", value="many"),
        "count_huge": setter("accessors", 0, "count", value=10**12),
        "accessors_dict": setter("accessors", value={"a": 1}),
        "meshes_string": setter("meshes", value="abc"),
        "view_beyond_buffer": setter("bufferViews", 0, "byteLength", value=10**6),
        "version_1": setter("asset", value={"version": "1.0"}),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_malformed_gltf_is_one_line_in_render(name, tmp_path, capsys):
    doc = _gltf()
    _mutations()[name](doc)
    path = tmp_path / f"{name}.gltf"
    path.write_text(json.dumps(doc))
    line = assert_one_line(
        *run_cli(["render", path, "-o", tmp_path / "out", "--views", 2, "--resolution", 16], capsys)
    )
    assert str(path) in line


def test_the_valid_gltf_the_mutations_start_from_renders(tmp_path, capsys):
    path = tmp_path / "ok.gltf"
    path.write_text(json.dumps(_gltf()))
    code, _, err = run_cli(["render", path, "-o", tmp_path / "out", "--views", 2, "--resolution", 16], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    "text",
    [
        "v 1e308 1e308 1e308\nv -1e308 -1e308 -1e308\nv 1e308 -1e308 0\nf 1 2 3\n",
        "v inf 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\n",
        "v 0 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 9\n",
        "v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n",
        "v 0 0 0\nv 1 0 0\n",
        "\x00\xff garbage \x00",
    ],
    ids=["pm1e308", "inf", "index_out_of_range", "zero_extent", "no_faces", "binary_garbage"],
)
def test_malformed_obj_is_one_line_in_render_and_export(text, tmp_path, capsys):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    assert_one_line(
        *run_cli(["render", path, "-o", tmp_path / "out", "--views", 2, "--resolution", 16], capsys)
    )
    assert_one_line(*run_cli(["export", path, "-o", tmp_path / "x.glb"], capsys))


# ------------------------------------------------------------------------------------------------
# transforms.json, safetensors headers, training configs, model folders, output paths
# ------------------------------------------------------------------------------------------------

_EYE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]


def _frames(n: int = 3, **extra) -> list:
    return [{"file_path": "v.png", "transform_matrix": _EYE, **extra}] * n


TRANSFORMS = {
    "not_json": "{not json",
    "a_list": [1, 2],
    "no_frames": {"frames": []},
    "frames_as_strings": {"frames": ["a", "b"]},
    "w_string": {"w": "abc"},
    "w_negative": {"w": -16},
    "huge_views": {"w": 100000, "h": 100000},
    "matrix_2x2": {"frames": [{"file_path": "v.png", "transform_matrix": [[1, 2], [3, 4]]}] * 3},
    "matrix_nan": {"frames": [{"file_path": "v.png", "transform_matrix": [[float("nan")] * 4] * 4}] * 3},
    "matrix_string": {"frames": [{"file_path": "v.png", "transform_matrix": "abc"}] * 3},
    "absolute_path": {"frames": [{"file_path": "/etc/hostname", "transform_matrix": _EYE}] * 3},
    "parent_path": {"frames": [{"file_path": "../../v.png", "transform_matrix": _EYE}] * 3},
    "fl_nan": {"fl_x": "nan"},
    "background_out_of_range": {"background": [2, 2, 2]},
    "background_string": {"background": "white"},
    "angles_string": {"frames": _frames(azimuth_deg="x", elevation_deg=0, radius=1)},
    "fov_string": {"fov_deg": "abc"},
    "source_to_world_string": {"source_to_world": "abc"},
    "w_infinite": {"w": float("inf")},  # used to be an OverflowError traceback
    "nested_deep": "[" * 100000 + "]" * 100000,  # used to be a RecursionError traceback
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_malformed_transforms_json_is_one_line_in_reconstruct(name, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGBA", (16, 16), (200, 0, 0, 255)).save(root / "v.png")
    edit = TRANSFORMS[name]
    if isinstance(edit, dict):
        meta = {"w": 16, "h": 16, "fl_x": 16, "fl_y": 16, "frames": _frames(), **edit}
        text = json.dumps(meta)
    else:
        text = edit if isinstance(edit, str) else json.dumps(edit)
    (root / "transforms.json").write_text(text)
    assert_one_line(
        *run_cli(["reconstruct", root, "-o", tmp_path / "m.glb", "--view-resolution", 32], capsys)
    )


def test_oversized_transforms_json_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    import render.dataset

    root = tmp_path / "ds"
    root.mkdir()
    (root / "transforms.json").write_text(json.dumps({"frames": [], "pad": " " * 2000}))
    monkeypatch.setattr(render.dataset, "MAX_TRANSFORMS_BYTES", 1000)
    monkeypatch.setattr("pathlib.Path.read_text", lambda *a, **k: pytest.fail("read"))
    line = assert_one_line(*run_cli(["reconstruct", root, "-o", tmp_path / "m.glb"], capsys))
    assert "transforms.json" in line and "expected at most 1,000" in line


CAMERAS = {
    "cx_nan": {"cx": float("nan")},  # used to write a mesh made from NaN projections, exit code 0
    "fl_infinite": {"fl_x": float("inf")},
    "fl_huge": {"fl_x": 1e308, "fl_y": 1e308},
    "matrix_singular": {"frames": [{"file_path": "v.png", "transform_matrix": [[0] * 4] * 4}] * 3},
    "matrix_last_row_zero": {
        "frames": [{"file_path": "v.png", "transform_matrix": _EYE[:3] + [[0] * 4]}] * 3
    },
    "too_many_frames": {"frames": _frames(1025)},
}


@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_unusable_cameras_in_transforms_json_are_one_line(name, tmp_path, capsys):
    """Views a reconstruction can use (an object on a transparent background) with cameras it cannot:
    these used to end in OverflowError / LinAlgError tracebacks, a NaN mesh, or any number of views."""
    from PIL import Image

    root = tmp_path / "ds"
    root.mkdir()
    image = np.zeros((16, 16, 4), np.uint8)
    image[4:12, 4:12] = (200, 0, 0, 255)
    Image.fromarray(image).save(root / "v.png")
    meta = {"w": 16, "h": 16, "fl_x": 16, "fl_y": 16, "frames": _frames(), **CAMERAS[name]}
    (root / "transforms.json").write_text(json.dumps(meta))
    line = assert_one_line(
        *run_cli(["reconstruct", root, "-o", tmp_path / "m.glb", "--method", "hull"], capsys)
    )
    assert "transforms.json" in line


ORBITS = {
    "fov_string": {"azimuth_deg": [0, 90], "elevation_deg": [0, 0], "fov_deg": "abc"},
    "fov_null": {"azimuth_deg": [0, 90], "elevation_deg": [0, 0], "fov_deg": None},
    "azimuth_string": {"azimuth_deg": "abc", "elevation_deg": [0, 0]},
    "radius_string": {"azimuth_deg": [0, 90], "elevation_deg": [0, 0], "radius": "x"},
    "radius_count": {"azimuth_deg": [0, 90], "elevation_deg": [0, 0], "radius": [1, 2, 3]},
    "too_many_views": {"azimuth_deg": [0] * 1025, "elevation_deg": [0] * 1025},
}


@pytest.mark.parametrize("name", sorted(ORBITS))
def test_malformed_orbit_json_is_one_line(name, tmp_path):
    """`--orbit FILE.json` (generate) used to raise ValueError/TypeError tracebacks and took any number
    of views; `render --cameras` took a transforms.json of any number of frames."""
    from mv3d.generate.settings import build_orbit
    from render.common import InputError

    path = tmp_path / "orbit.json"
    path.write_text(json.dumps(ORBITS[name]))
    with pytest.raises(InputError, match=str(path)):
        build_orbit(path)


def _safetensors(header: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + body


SAFETENSORS = {
    "huge_header_length": _safetensors(b"{}", length=2**62),
    "header_not_json": _safetensors(b"not json at all"),
    "header_a_list": _safetensors(b"[1, 2]"),
    "offsets_beyond_file": _safetensors(
        json.dumps(
            {"model.diffusion_model.x": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}
        ).encode()
    ),
    "unknown_dtype": _safetensors(
        json.dumps({"a": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4
    ),
    "negative_shape": _safetensors(
        json.dumps({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4
    ),
    "two_bytes": b"\x01\x02",
    "no_tensors": _safetensors(b"{}"),
}


@pytest.mark.parametrize("name", sorted(SAFETENSORS))
def test_malformed_safetensors_is_one_line_in_convert_weights(name, tmp_path, capsys):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(SAFETENSORS[name])
    assert str(path) in assert_one_line(*run_cli(["convert-weights", path, "-o", tmp_path / "model"], capsys))


CONFIGS = {
    "a_list": "[1, 2]",
    "bad_yaml": "a: [",
    "binary": "\x00\x01",
    "unknown_key": "model: {preset: tiny}\nfoo: 1\n",
    "lr_string": "model: {preset: tiny}\nlr: abc\n",
    "batch_size_string": "model: {preset: tiny}\nbatch_size: x\n",
    "data_string": "model: {preset: tiny}\ndata: abc\n",
    "data_resolution_huge": "model: {preset: tiny}\ndata: {resolution: 100000}\n",
    "max_steps_negative": "model: {preset: tiny}\nmax_steps: -5\n",
    "model_a_list": "model: [1]\n",
    "unknown_preset": "model: {preset: huge}\n",
    # tracebacks from torch (ValueError, IndexError, ZeroDivisionError), a 128 GB allocation, a hang
    "lr_nan": "model: {preset: tiny}\nlr: .nan\n",
    "weight_decay_nan": "model: {preset: tiny}\nweight_decay: .nan\n",
    "adam_betas_out_of_range": "model: {preset: tiny}\nadam_betas: [2, 3]\n",
    "adam_betas_one": "model: {preset: tiny}\nadam_betas: [0.9]\n",
    "lora_rank_huge": "model: {preset: tiny}\nlora: {rank: 1000000000}\n",
}


@pytest.mark.parametrize(
    "values",
    [
        {"log_every": 0},  # ZeroDivisionError after the first step
        {"batch_size": 10**9},  # never got to the first step
        {"lr": float("inf")},  # trained to a NaN loss, exit code 0
        {"p_std": float("nan")},  # the same
        {"sample_steps": 10**9},  # the first preview never ended
        {"model_notes": [1, 2]},  # written into the model's info as a list where text belongs
    ],
    ids=["log_every_zero", "batch_size_huge", "lr_inf", "p_std_nan", "sample_steps_huge", "model_notes_list"],
)
def test_training_config_values_that_only_failed_while_training_are_refused(values):
    from render.common import InputError
    from video_prior.train import TrainConfig

    with pytest.raises(InputError, match=f"train config {next(iter(values))} "):
        TrainConfig.from_dict({"model": {"preset": "tiny"}, **values})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_malformed_training_config_is_one_line(name, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIGS[name])
    (tmp_path / "data").mkdir()
    args = ["train", config, "--data", tmp_path / "data", "-o", tmp_path / "run", "--max-steps", 1]
    assert_one_line(*run_cli(args, capsys))


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    import torch

    from video_prior.components import build_components, model_info_from_config, save_components, tiny_config

    cfg = tiny_config(num_frames=4, sample_size=16)
    torch.manual_seed(0)
    return save_components(
        build_components(cfg), model_info_from_config(cfg), tmp_path_factory.mktemp("m") / "tiny"
    )


def _edit_info(**values):
    def edit(folder: Path) -> None:
        info = json.loads((folder / "mv3d_model.json").read_text())
        (folder / "mv3d_model.json").write_text(json.dumps({**info, **values}))

    return edit


def _truncate(part: str):
    def edit(folder: Path) -> None:
        for f in (folder / part).glob("*.safetensors"):
            f.write_bytes(f.read_bytes()[:100])

    return edit


MODEL_EDITS = {
    "no_info": lambda d: (d / "mv3d_model.json").unlink(),
    "info_not_json": lambda d: (d / "mv3d_model.json").write_text("{"),
    "info_a_list": lambda d: (d / "mv3d_model.json").write_text("[]"),
    "info_resolution_huge": _edit_info(resolution=100000),
    "info_resolution_string": _edit_info(resolution="abc"),
    "info_num_frames_huge": _edit_info(num_frames=10**7),
    "info_unknown_key": _edit_info(evil=1),
    "unet_config_not_json": lambda d: (d / "unet" / "config.json").write_text("{"),
    "unet_weights_truncated": _truncate("unet"),
    "vae_header_length": lambda d: [
        f.write_bytes(struct.pack("<Q", 2**62) + b"{}") for f in (d / "vae").glob("*.safetensors")
    ],
    "no_vae": lambda d: __import__("shutil").rmtree(d / "vae"),
}


@pytest.mark.parametrize("name", sorted(MODEL_EDITS))
def test_malformed_model_folder_is_one_line_in_generate(name, good_model, tmp_path, capsys):
    import shutil

    from PIL import Image

    model = tmp_path / "model"
    shutil.copytree(good_model, model)
    MODEL_EDITS[name](model)
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = 200
    Image.fromarray(image).save(tmp_path / "in.png")
    args = ["generate", tmp_path / "in.png", "--model", model, "-o", tmp_path / "gen", "--no-mesh"]
    assert_one_line(*run_cli(args, capsys))
    assert not (tmp_path / "gen").exists()


@pytest.mark.parametrize("image", ["garbage", "truncated", "bomb_header", "empty"])
def test_malformed_input_image_is_one_line_in_generate(image, good_model, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "in.png"
    if image == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 10)
    elif image == "truncated":
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif image == "bomb_header":
        path.write_bytes(png_claiming(19000, 19000))
    else:
        path.write_bytes(b"")
    args = ["generate", path, "--model", good_model, "-o", tmp_path / "gen", "--no-mesh"]
    assert_one_line(*run_cli(args, capsys))


def test_generate_out_below_a_file_fails_before_sampling(good_model, tmp_path, capsys, monkeypatch):
    """`--out FILE/sub` used to fail only after sampling had finished."""
    from PIL import Image

    from video_prior import pipeline

    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 16:48] = 200
    Image.fromarray(image).save(tmp_path / "in.png")
    (tmp_path / "notes.txt").write_text("x")

    def never(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(pipeline.MultiViewPipeline, "__call__", never)
    for out in (tmp_path / "notes.txt" / "sub", "."):
        args = ["generate", tmp_path / "in.png", "--model", good_model, "-o", out, "--no-mesh"]
        assert "--out" in assert_one_line(*run_cli(args, capsys))
