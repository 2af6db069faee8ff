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
        from mv3d.generate import generate

        speed = {"offload": offload, "compile": compile_unet}
        if compile_unet:
            speed["compile_cache_dir"] = str(Path("~/.cache/mv3d/inductor").expanduser())
        generate(
            images,
            out,
            model=model,
            views=views,
            elevation=elevation,
            orbit=orbit,
            steps=steps,
            ensemble=ensemble,
            sampler=sampler,
            guidance=guidance,
            min_guidance=min_guidance,
            max_guidance=max_guidance,
            seed=seed,
            resolution=resolution,
            device=device,
            mesh=not no_mesh,
            progress=not quiet,
            log=typer.echo,
            dtype=dtype,
            speed=speed,
            matte=matte,
        )
