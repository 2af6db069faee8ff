"""mv3d deletes only what it wrote: `--out` folders that are not the same command's output are refused
(one line, exit 2, nothing touched); mv3d's own outputs carry `.mv3d-output.json`; `--overwrite` replaces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli

from render.common import OUTPUT_MARKER, InputError, atomic_output, check_output, output_marker


def one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mv3d: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.txt").write_text("keep me")
    return folder


def render_args(mesh: Path, out: Path, *extra) -> list:
    return ["render", mesh, "--views", 2, "--resolution", 16, "--out", out, *extra]


def test_render_refuses_a_users_folder_and_keeps_its_files(users_folder, example_mesh, capsys):
    code, _, err = run_cli(render_args(example_mesh, users_folder), capsys)
    line = one_error_line(code, err)
    assert "--out" in line and "not an mv3d output" in line and "--overwrite" in line
    assert (users_folder / "thesis.txt").read_text() == "keep me"


def test_render_replaces_its_own_output_and_overwrite_replaces_a_users_folder(
    tmp_path, users_folder, example_mesh, capsys
):
    out = tmp_path / "orbit"
    for _ in range(2):  # the second run replaces the first's marked folder
        code, _, err = run_cli(render_args(example_mesh, out), capsys)
        assert code == 0, err
    assert output_marker(out)["command"] == "render"
    code, _, err = run_cli(render_args(example_mesh, users_folder, "--overwrite"), capsys)
    assert code == 0, err
    assert not (users_folder / "thesis.txt").exists() and (users_folder / "transforms.json").is_file()


def test_render_object_from_python_refuses_a_users_folder_as_mv3d_render_does(
    tmp_path, users_folder, example_mesh
):
    """`render_object` replaced any existing folder whole (the user's files gone) unless a command was
    named; it now owns its folders as `mv3d render` does."""
    from render.cameras import static_orbit
    from render.render_object import render_object

    with pytest.raises(InputError, match="not an mv3d output") as refused:
        render_object(example_mesh, users_folder, static_orbit(2), 16)
    line = str(refused.value)
    assert line.startswith(f"out_dir {users_folder}: ") and "overwrite=True" in line
    assert (users_folder / "thesis.txt").read_text() == "keep me"
    out = tmp_path / "orbit"
    for _ in range(2):  # its own output is replaced, as the CLI's
        assert render_object(example_mesh, out, static_orbit(2), 16) == out
    assert output_marker(out)["command"] == "render"
    render_object(example_mesh, users_folder, static_orbit(2), 16, overwrite=True)
    assert not (users_folder / "thesis.txt").exists() and (users_folder / "transforms.json").is_file()


def test_output_of_another_command_is_refused(tmp_path, example_mesh, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / OUTPUT_MARKER).write_text(json.dumps({"command": "convert-weights", "mv3d": "0"}))
    (out / "unet").mkdir()
    code, _, err = run_cli(render_args(example_mesh, out), capsys)
    assert "an 'mv3d convert-weights' output" in one_error_line(code, err)
    assert (out / "unet").is_dir()


def test_out_dot_home_and_below_a_file_are_refused_before_any_work(
    tmp_path, example_mesh, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    missing_mesh = tmp_path / "absent.obj"  # refused on --out before the mesh is even looked at
    for out in [".", tmp_path, tmp_path.parent, tmp_path / "notes.txt" / "sub"]:
        code, _, err = run_cli(render_args(missing_mesh, out, "--overwrite"), capsys)
        line = one_error_line(code, err)
        assert "--out" in line and "absent.obj" not in line, line
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    with pytest.raises(InputError, match="home folder"):
        check_output(tmp_path / "home", "render", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_a_folder_holding_only_a_stopped_jobs_lock_counts_as_empty(tmp_path):
    """A job killed after taking its lock and before writing its marker leaves only the lock file: the
    folder is still empty to the next job, without --overwrite; anything beside the lock is not."""
    from render.common import LOCK_FILE, lock_folder

    out = tmp_path / "d"
    out.mkdir()
    lock_folder(out, "render-dataset").close()
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    assert check_output(out, "eval") == out
    (out / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not an mv3d output"):
        check_output(out, "eval")


def test_convert_weights_refuses_a_users_folder(users_folder, tmp_path, capsys):
    code, _, err = run_cli(
        ["convert-weights", tmp_path / "absent.safetensors", "--out", users_folder], capsys
    )
    assert "not an mv3d output" in one_error_line(code, err)
    assert (users_folder / "thesis.txt").exists()


def test_train_refuses_a_users_folder_without_naming_an_option_it_lacks(users_folder, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {preset: tiny, num_frames: 4, sample_size: 16}\ndata: {num_frames: 4, resolution: 16}\n"
    )
    code, _, err = run_cli(["train", config, "--data", tmp_path / "absent", "--out", users_folder], capsys)
    line = one_error_line(code, err)
    # mv3d train has no --overwrite: the refusal says what the user can do instead
    assert "not an mv3d output" in line and "choose another --out" in line and "--overwrite" not in line
    assert (users_folder / "thesis.txt").read_text() == "keep me"


def test_export_never_replaces_a_folder_by_a_file(tmp_path, example_mesh, capsys):
    for flag in ("--turntable", "--blend", "--out"):
        target = tmp_path / {"--turntable": "D.gif", "--blend": "D.blend", "--out": "D.obj"}[flag]
        target.mkdir()
        (target / "keep.txt").write_text("keep")
        code, _, err = run_cli(["export", example_mesh, flag, target], capsys)
        assert flag in one_error_line(code, err)
        assert (target / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "args, folder", [(["-o", "m.obj"], "m.mtl"), (["-o", "n.glb", "--format", "obj"], "n.obj")]
)
def test_export_refuses_a_folder_for_an_obj_s_files_before_writing_any(
    args, folder, tmp_path, example_mesh, capsys
):
    # An OBJ's MTL, and the file --format names (-o n.glb --format obj writes n.obj), were written over
    # a folder only at the end: the texture and MTL were on disk by then, and the error named no flag.
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "keep.txt").write_text("keep")
    args = [str(tmp_path / a) if a.endswith((".obj", ".glb")) else a for a in args]
    code, _, err = run_cli(["export", example_mesh, *args], capsys)
    assert folder in one_error_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    assert (tmp_path / folder / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("flag, name", [("--blend", "scene.txt"), ("--turntable", "spin.webm")])
def test_export_refuses_a_bad_suffix_before_writing_out(flag, name, tmp_path, example_mesh, capsys):
    # The suffix of --blend and --turntable was checked only after --out was written (and the turntable
    # rendered): the command failed with a file on disk.
    code, _, err = run_cli(["export", example_mesh, "-o", tmp_path / "m.ply", flag, tmp_path / name], capsys)
    assert one_error_line(code, err).startswith(f"mv3d: error: {flag} ")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_a_folder_for_a_file_at_rename(tmp_path):
    target = tmp_path / "x.gif"
    with pytest.raises(InputError, match="never replaces a folder"):
        with atomic_output(target) as tmp:
            target.mkdir()
            (target / "keep.txt").write_text("keep")
            tmp.write_bytes(b"gif")
    assert (target / "keep.txt").exists()


def test_generate_takes_only_its_marked_folders_as_its_own(tmp_path):
    from mv3d.generate.record import output_dirs

    image = tmp_path / "cat.png"
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "run.json").write_text("{}")  # a bare file name is not a marker
    (folder / "photos.txt").write_text("keep")
    with pytest.raises(InputError, match="not an mv3d output"):
        output_dirs([image], folder)
    (folder / OUTPUT_MARKER).write_text(json.dumps({"command": "generate", "mv3d": "0"}))
    assert output_dirs([image], folder) == [folder]
    with pytest.raises(InputError, match="working folder"):
        output_dirs([image], Path(os.curdir))


def test_render_dataset_refuses_a_users_folder_and_marks_its_own(users_folder, tmp_path):
    from render.jobs import render_dataset

    with pytest.raises(InputError, match="not an mv3d output") as refused:
        render_dataset(["procedural:1:0"], users_folder, views=2, resolution=16, progress=False)
    # Its overwrite writes into the folder and keeps the user's files (README): the line said "replace it".
    # From Python the line names the arguments (it named the CLI's --out and --overwrite).
    assert str(refused.value).startswith(f"out_dir {users_folder}: exists and is not an mv3d output")
    assert "pass overwrite=True to write into it" in str(refused.value) and "--" not in str(refused.value)
    render_dataset(["procedural:1:0"], users_folder, views=2, resolution=16, progress=False, overwrite=True)
    assert (users_folder / "thesis.txt").read_text() == "keep me"
    out = tmp_path / "data"
    render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)
    assert output_marker(out)["command"] == "render-dataset"
    render_dataset(["procedural:1:0"], out, views=2, resolution=16, progress=False)  # its own: resumes


def test_train_refuses_a_users_folder(users_folder):
    from mv3d.cli import flag_message
    from video_prior.train import TrainConfig, train

    with pytest.raises(InputError, match="not an mv3d output") as refused:
        train(TrainConfig.from_yaml("configs/tiny.yaml"), [users_folder], users_folder, progress=False)
    assert (users_folder / "thesis.txt").exists()
    # train's argument is out_dir: the Python line names it, the CLI's line its flag (it said "--out" both)
    line = str(refused.value)
    assert line.startswith("out_dir ") and line.endswith("(choose another out_dir)") and "--" not in line
    cli = flag_message(refused.value)
    assert cli.startswith(f"--out {users_folder}: ") and cli.endswith("(choose another --out)")


def test_check_output_remedy_names_the_python_argument_and_the_cli_its_flag(users_folder):
    from mv3d.cli import flag_message

    with pytest.raises(InputError) as refused:
        check_output(users_folder, "render", field="out_dir")
    line = str(refused.value)
    assert line.startswith(f"out_dir {users_folder}: ") and "--" not in line
    assert line.endswith("(pass overwrite=True to replace it)")
    cli = flag_message(refused.value)
    assert cli.startswith(f"--out {users_folder}: ") and cli.endswith("(pass --overwrite to replace it)")


def test_generate_refuses_an_output_folder_holding_its_input(tmp_path):
    """`mv3d generate photos/cat.png -o photos --overwrite` replaced the folder whole: the photo was deleted."""
    from mv3d.generate.record import output_dirs

    folder = tmp_path / "photos"
    folder.mkdir()
    image = folder / "cat.png"
    image.write_bytes(b"the user's photo")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="holds the input image") as info:
            output_dirs([image], folder, overwrite=overwrite)
        # generate's argument (it said --out from Python too); the CLI shows --out (FIELD_FLAGS)
        assert info.value.field == "out_dir" and str(info.value).startswith("out_dir ")
        assert "choose another out_dir" in str(info.value) and "--" not in str(info.value)
    assert image.read_bytes() == b"the user's photo"
    # a batch writes photos/<stem>/ beside its inputs: allowed
    assert output_dirs([image, folder / "dog.png"], folder) == [folder / "cat", folder / "dog"]
