"""`mv3d generate IMAGE... --views N --out DIR`: one image in, an orbit of views and a mesh out."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _default_model_facts() -> str:
    """What the default model fixes and was trained on, for the help (read from its mv3d_model.json;
    no torch import, so `mv3d --help` stays fast)."""
    try:
        info = json.loads(
            (Path(__file__).resolve().parents[1] / "default_model" / "mv3d_model.json").read_text()
        )
    except (OSError, ValueError):
        return "none: no default model in this installation"
    facts = [f"{info.get('num_frames')} views (fixed)", f"{info.get('resolution')} px"]
    facts[-1] += " (fixed)" if info.get("fixed_resolution") else ""
    steps = f"{info.get('default_steps')} step"
    if info.get("trained_steps"):
        steps += " (trained for it)"
    draws = f"{info.get('default_ensemble')} averaged draws"
    if info.get("default_mirror_average"):
        draws += " (half of them for the input mirrored)"
    facts += [steps, draws]
    if info.get("trained_elevation_deg"):
        low, high = info["trained_elevation_deg"]
        facts.append(f"trained at elevations {low:g} to {high:g} deg")
    return ", ".join(facts)


HELP = """Generate a 360-degree orbit of views (and a textured mesh) from one image of an object.

Options left out take the model's values; every option is checked against the model before it loads.
The default model: {facts}.

Rerunning the same command resumes: finished images are kept, the views of a killed or interrupted run
are reused (only the mesh is computed), and a finished folder made with other settings is refused
unless --overwrite.

Example: mv3d generate examples/example.png -o outputs/example
"""


def register(app: typer.Typer) -> None:
    @app.command("generate", help=HELP.format(facts=_default_model_facts()))
    def generate_cmd(
        images: list[Path] = typer.Argument(
            ...,
            metavar="IMAGE",
            help="Input image(s): RGBA with a transparent background, or an object on a plain background.",
        ),
        views: int | None = typer.Option(
            None,
            "--views",
            "-n",
            help="Number of views in the orbit (frame 0 = input); a model with a fixed count takes only that.",
            show_default="the model's fixed count, else 21",
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Output folder (default outputs/<image stem>; several images: DIR/<stem>/).",
        ),
        model: str = typer.Option(
            "default", "--model", help="'default' (the embedded model) or a model folder."
        ),
        elevation: float = typer.Option(
            10.0,
            "--elevation",
            help="Elevation of the input view, degrees (a warning outside the model's trained range).",
        ),
        orbit: str = typer.Option("static", "--orbit", help="static, dynamic, or an orbit .json file."),
        steps: int | None = typer.Option(
            None,
            "--steps",
            help="Sampling steps (default: the model's; a warning if the model was trained for another count).",
        ),
        ensemble: int | None = typer.Option(
            None, "--ensemble", help="Draws averaged into the views (default: the model's)."
        ),
        mirror_average: bool | None = typer.Option(
            None,
            "--mirror-average/--no-mirror-average",
            help="Draw half of the ensemble for the input mirrored left-right and flip it back "
            "(test-time augmentation at the same cost; default: the model's).",
        ),
        sampler: str | None = typer.Option(None, "--sampler", help="euler (default), heun or dpmpp2m."),
        guidance: str | None = typer.Option(
            None, "--guidance", help="Per-view guidance: triangle (default), constant or linear."
        ),
        min_guidance: float | None = typer.Option(
            None, "--min-guidance", help="Lowest guidance scale (1.0)."
        ),
        max_guidance: float | None = typer.Option(
            None, "--max-guidance", help="Highest guidance scale (2.5)."
        ),
        seed: int = typer.Option(
            0, "--seed", help="Random seed, 0 to 2**63 - 1: same seed, same views on the same device."
        ),
        resolution: int | None = typer.Option(
            None,
            "--resolution",
            help="View size in pixels (default: the model's; refused for a model that works at one size; "
            "never upsampled).",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        dtype: str | None = typer.Option(
            None, "--dtype", help="float32, bfloat16 or float16 (default: float16 on cuda, float32 on cpu)."
        ),
        offload: str = typer.Option(
            "none", "--offload", help="none, model (per network) or sequential (per layer): less GPU memory."
        ),
        compile_unet: bool = typer.Option(
            False, "--compile", help="torch.compile the UNet (cached in ~/.cache/mv3d/inductor)."
        ),
        matte: str = typer.Option(
            "auto",
            "--matte",
            help="Matte of an opaque image: auto (color on a plain background, else learned), learned "
            "(the shipped ISNet), color (distance from the border colour) or none. An RGBA file's alpha wins.",
        ),
        no_mesh: bool = typer.Option(False, "--no-mesh", help="Skip the reconstruction (no mesh.glb)."),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Replace a finished output folder made with other settings (otherwise refused).",
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        """Generate a 360-degree orbit of views (and a textured mesh) from one image (help: HELP)."""
        options = {"model": model, "device": device, "dtype": dtype, "offload": offload}
        options.update(
            compile_unet=compile_unet, no_mesh=no_mesh, quiet=quiet, matte=matte, overwrite=overwrite
        )
        sampling = {"steps": steps, "sampler": sampler, "guidance": guidance, "ensemble": ensemble}
        sampling.update(min_guidance=min_guidance, max_guidance=max_guidance, mirror_average=mirror_average)
        if views is None:  # a model of a fixed view count (SV3D's 21, SVD's 14, SVD-XT's 25) takes that
            views = _model_views(model)
        orbit_settings = {"views": views, "orbit": orbit, "elevation": elevation, "seed": seed}
        _generate(images, out, **options, **sampling, **orbit_settings, resolution=resolution)


def _model_views(model: str) -> int | None:
    """The fixed view count of the model `model` names (its mv3d_model.json, no weights), else None
    (`GenerateSettings`' 21); a model that cannot be read is reported by the job itself."""
    from mv3d.generate.views import model_limits
    from render.common import InputError

    try:
        return model_limits(model)[1].num_frames
    except InputError:  # SettingError included
        return None


def _generate(
    images: list[Path],
    out: Path | None,
    model: str,
    device: str,
    dtype: str | None,
    offload: str,
    compile_unet: bool,
    no_mesh: bool,
    quiet: bool,
    matte: str,
    overwrite: bool,
    **settings,
) -> None:
    """Build the `GenerateSettings` from the sampling options and run the job. Its errors name the Python
    fields (`SettingError`); `mv3d.cli.main` turns them and the remedies' mentions into flags."""
    from mv3d.generate import GenerateSettings, generate

    speed = {"offload": offload, "compile": compile_unet}
    if compile_unet:
        speed["compile_cache_dir"] = str(Path("~/.cache/mv3d/inductor").expanduser())
    try:
        generate(
            images,
            out,
            GenerateSettings.from_options(**settings),
            model=model,
            device=device,
            mesh=not no_mesh,
            progress=not quiet,
            log=typer.echo,
            warn=lambda line: typer.echo(_flag_warning(line), err=True),
            dtype=dtype,
            speed=speed,
            matte=matte,
            overwrite=overwrite,
        )
    except KeyboardInterrupt as exc:  # one line, what was kept (`GenerateInterrupted`), exit 130
        kept = str(exc) or "nothing was written"
        typer.echo(f"mv3d: interrupted: {kept}", err=True)
        raise SystemExit(130) from None


def _flag_warning(line: str) -> str:
    """``warning: steps 10: ...`` -> ``mv3d: warning: --steps 10: ...``."""
    body = line.removeprefix("warning: ")
    field = body.split(" ", 1)[0]
    if field.isidentifier():
        body = flag(field) + body[len(field) :]
    return f"mv3d: warning: {body}"


def flag(field: str) -> str:
    """The command-line flag of a settings field: ``min_guidance`` -> ``--min-guidance``."""
    return "--" + field.replace("_", "-")
