"""`mv3d convert-weights`: a Stability SVD / SV3D single-file checkpoint -> a model folder mv3d loads."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("convert-weights")
    def convert_weights(
        ckpt: Path = typer.Argument(
            ...,
            metavar="CKPT",
            help="Stability checkpoint (.safetensors): SVD, SVD-XT, SV3D_u or SV3D_p.",
            show_default=False,
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Model folder to write (diffusers layout + mv3d_model.json)."
        ),
        config: Path | None = typer.Option(
            None,
            "--config",
            help="Reference inference YAML (generative-models configs/inference/sv3d_p.yaml ...).",
            show_default="inferred from the tensor shapes",
        ),
        vae_from: Path | None = typer.Option(
            None,
            "--vae-from",
            help="Take the VAE encoder from this SVD/SV3D .safetensors file or diffusers VAE folder.",
        ),
        num_frames: int | None = typer.Option(
            None,
            "--num-frames",
            help="The model's default frame count.",
            show_default="21 for SV3D, 14 for SVD and SVD-XT (whose file looks like SVD's: give 25)",
        ),
        resolution: int = typer.Option(576, "--resolution", help="Image side in pixels the model works at."),
        dtype: str = typer.Option("float32", "--dtype", help="Saved weights: float32, float16 or bfloat16."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder that is not a converted model."
        ),
    ) -> None:
        """Convert a Stability single-file checkpoint CKPT into a model folder (UNet, VAE, CLIP image encoder).

        Example: mv3d convert-weights sv3d_p.safetensors -o models/sv3d_p --config sv3d_p.yaml
        """
        from render.common import MAX_IMAGE_SIDE, MAX_VIEWS, InputError, check_output, check_range

        check_output(out, "convert-weights", overwrite)

        if num_frames is not None:
            check_range("num_frames", num_frames, 1, MAX_VIEWS, "a frame count")
        check_range("resolution", resolution, 8, MAX_IMAGE_SIDE, "pixels")
        if resolution <= 0 or resolution % 8:
            raise InputError(f"--resolution {resolution}: expected a positive multiple of 8")
        from video_prior.convert import convert_checkpoint

        report = convert_checkpoint(
            ckpt,
            out,
            config_yaml=config,
            vae_from=vae_from,
            num_frames=num_frames,
            resolution=resolution,
            dtype=dtype,
            progress=True,
            overwrite=overwrite,
        )
        typer.echo(report.summary())
