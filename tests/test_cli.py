"""The command line's conventions: `mv3d --version`, and for every subcommand `-o/--out` (but `demo`, which
serves a page), an example in the help, upper-case argument names and defaults shown one way."""

from __future__ import annotations

import re

import pytest

from mv3d import __version__
from mv3d.cli import main

COMMANDS = (
    "generate",
    "render",
    "render-dataset",
    "train",
    "convert-weights",
    "reconstruct",
    "export",
    "eval",
    "demo",
)


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().out


def test_version(capsys):
    code, out = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"mv3d {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_and_one_style(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per line, so each line can be checked alone
    code, out = _run([command, "--help"], capsys)
    assert code == 0
    examples = re.findall(r"Example: (mv3d [^\n]+)", out)
    assert examples and examples[0].startswith(f"mv3d {command} "), out
    usage = out.splitlines()[0]
    if command != "demo":  # the page's server writes into a temporary folder of its own
        assert re.search(r"^\s+-o, --out <path>", out, re.M), "every subcommand writes to -o/--out"
        arguments = re.findall(r"[{\[]([A-Za-z_]+)[}\]]", usage.split("[OPTIONS]", 1)[1])
        assert arguments and all(a.isupper() for a in arguments), usage
    # A default is shown once: typer's "[default: ...]", or, where it depends on the model (typer shows
    # none), the help's own "(default: the model's)"; never both.
    for line in out.lower().splitlines():
        assert not ("[default:" in line and "default:" in line.replace("[default:", "", 1)), line
    # Option values are shown by their type, never by a made-up word.
    for line in out.split("\nOptions:\n", 1)[1].splitlines():
        m = re.match(r"^\s+(?:-\w, )?--[\w-]+(?: / --[\w-]+)? (?![/ ])(\S+)", line)
        if m:
            assert m.group(1).startswith("<"), line


def test_library_errors_name_fields_and_the_cli_names_flags(tmp_path, capsys):
    from render.common import InputError
    from render.jobs import render_dataset

    with pytest.raises(InputError, match=r"^views 0: expected a number of views from 1 to 1024") as exc:
        render_dataset(["procedural:1:0"], tmp_path / "d", views=0)
    assert exc.value.field == "views"
    with pytest.raises(SystemExit) as code:
        main(["render-dataset", "procedural:1:0", "-o", str(tmp_path / "d"), "--views", "0"])
    assert code.value.code == 2
    assert (
        capsys.readouterr().err.strip() == "mv3d: error: --views 0: expected a number of views from 1 to 1024"
    )


def test_remedies_name_python_arguments_and_the_cli_turns_them_into_flags():
    """The library's remedies name the Python call's arguments (video_prior knows no CLI flags); the CLI
    turns the last mention of each into its flag, and leaves a path that holds the same name alone."""
    from mv3d.cli import flag_message
    from render.common import InputError

    exc = InputError(
        "runs/out_dir/resume: this run folder already has checkpoints: pass resume=True or choose a new out_dir",
        mentions=("resume", "out_dir"),
    )
    assert flag_message(exc) == (
        "runs/out_dir/resume: this run folder already has checkpoints: pass --resume or choose a new --out"
    )
    exc = InputError(
        "x.safetensors: holds no VAE encoder; give vae_from: a VAE folder", mentions=("vae_from",)
    )
    assert flag_message(exc).endswith("give --vae-from: a VAE folder")
    assert flag_message(
        InputError("give the reference YAML as config_yaml", mentions=("config_yaml",))
    ).endswith("as --config")
    # a file named like the setting, before the remedy, is kept
    exc = InputError("resume.yaml: holds another run: pass resume=True", mentions=("resume",))
    assert flag_message(exc) == "resume.yaml: holds another run: pass --resume"
    # without mentions the message is kept as written
    assert flag_message(InputError("pass resume=True")) == "pass resume=True"
