"""`mv3d generate IMAGE... --views N --out DIR`: one image in, an orbit of views and a mesh out."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        images: list[Path] = typer.Argument(
            ...,
            help="Input image(s): RGBA with a transparent background, or an object on a plain background.",
        ),
        views: int = typer.Option(
            21, "--views", "-n", help="Number of views in the orbit (frame 0 = input)."
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
        elevation: float = typer.Option(10.0, "--elevation", help="Elevation of the input view, degrees."),
        orbit: str = typer.Option("static", "--orbit", help="static, dynamic, or an orbit .json file."),
        steps: int | None = typer.Option(None, "--steps", help="Sampling steps (default: the model's)."),
        ensemble: int | None = typer.Option(
            None, "--ensemble", help="Samples averaged into the views (default: the model's)."
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
        seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same views on the same device."),
        resolution: int | None = typer.Option(
            None, "--resolution", help="View size in pixels (default: the model's)."
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
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    ) -> None:
        """Generate a 360-degree orbit of views (and a textured mesh) from one image of an object."""
        options = {"model": model, "device": device, "dtype": dtype, "offload": offload}
        options.update(compile_unet=compile_unet, no_mesh=no_mesh, quiet=quiet, matte=matte)
        sampling = {"steps": steps, "sampler": sampler, "guidance": guidance, "ensemble": ensemble}
        sampling.update(min_guidance=min_guidance, max_guidance=max_guidance)
        orbit_settings = {"views": views, "orbit": orbit, "elevation": elevation, "seed": seed}
        _generate(images, out, **options, **sampling, **orbit_settings, resolution=resolution)


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
    **settings,
) -> None:
    """Build the `GenerateSettings` from the sampling options, run the job, name flags in errors."""
    from mv3d.generate import GenerateSettings, SettingError, generate

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
            dtype=dtype,
            speed=speed,
            matte=matte,
        )
    except SettingError as exc:
        raise exc.renamed(flag(exc.field)) from exc


def flag(field: str) -> str:
    """The command-line flag of a settings field: ``min_guidance`` -> ``--min-guidance``."""
    return "--" + field.replace("_", "-")
