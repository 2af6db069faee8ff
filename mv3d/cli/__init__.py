"""The `mv3d` command line: thin subcommands over the Python API.

Each subcommand module defines `register(app)`; the modules import their heavy dependencies (torch,
diffusers, renderers) inside the command functions so that `mv3d --help` stays fast.

Bad input raises `render.common.InputError` anywhere below; `main` prints it as one line
(`mv3d: error: ...`) and exits with code 2, never with a traceback. The library names settings by
their field names (`views 0: expected at least 1`); `flag_message` turns that name into the flag the
user typed (`--views 0: ...`).

Conventions every subcommand follows (tested in tests/test_cli.py): the output is `-o/--out PATH`,
placeholders are upper-case words (`PATH`, `N`, `SPEC`), defaults are shown by typer as
`[default: ...]` and not repeated in the help text, and every help ends with an example.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

import typer

from render.common import InputError

app = typer.Typer(
    name="mv3d",
    help="One image in, a consistent 360-degree orbit of views out, then a textured mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Subcommand modules, in the order `--help` lists them.
_COMMAND_MODULES = (
    "mv3d.cli.generate_cmd",
    "mv3d.cli.render_cmd",
    "mv3d.cli.train_cmd",
    "mv3d.cli.weights_cmd",
    "mv3d.cli.reconstruct_cmd",
    "mv3d.cli.eval_cmd",
    "mv3d.cli.demo_cmd",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

#: Fields whose flag is not `--` + the field name with dashes.
FIELD_FLAGS = {
    "orbit_kind": "--orbit",
    "fov_deg": "--fov",
    "ray": "--ray",
    "target_faces": "--faces",
    "out_dir": "--out",
    "config_yaml": "--config",
}


def _flag(name: str) -> str:
    return FIELD_FLAGS.get(name, "--" + name.replace("_", "-"))


def flag_message(exc: InputError) -> str:
    """The first line of `exc`, its leading field name (if it names one) and the settings its remedy
    mentions (`InputError.mentions`: `resume=True`, `out_dir`) replaced by their CLI flags."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    name = getattr(exc, "field", None)
    if name and message.startswith(name):
        message = _flag(name) + message[len(name) :]
    for mention in getattr(exc, "mentions", ()):
        # The remedy ends the message: only its last mention is replaced, never a path before it that
        # happens to hold the name. A boolean switch is `name=True` in Python, the bare flag in a shell.
        found = list(re.finditer(rf"(?<![\w/-]){re.escape(mention)}(=True)?(?![\w/])", message))
        if found:
            m = found[-1]
            message = message[: m.start()] + _flag(mention) + message[m.end() :]
    return message


def _version(value: bool) -> None:
    if value:
        from mv3d import __version__

        typer.echo(f"mv3d {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """One image in, a consistent 360-degree orbit of views out, then a textured mesh."""


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit."""
    typer.echo(f"mv3d: error: {message}", err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    # The hubs are unreachable from the machines mv3d targets first; never hang on them.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        app(args=argv, prog_name="mv3d", standalone_mode=True)
    except InputError as exc:
        fail(flag_message(exc))
    except KeyboardInterrupt:
        typer.echo("mv3d: interrupted", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
