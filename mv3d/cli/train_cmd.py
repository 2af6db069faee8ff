"""`mv3d train`: finetune or train the multi-view video prior on orbit datasets (thin over video_prior.train)."""

from __future__ import annotations

from pathlib import Path

import typer

from render.common import InputError, resolve_device


def register(app: typer.Typer) -> None:
    @app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    )
    def train_command(
        ctx: typer.Context,
        config: Path = typer.Argument(
            ..., metavar="CONFIG", help="Training config (YAML), e.g. configs/tiny.yaml."
        ),
        data: list[Path] = typer.Option(
            ...,
            "--data",
            help="Orbit dataset folder, or a folder of them; several may follow one --data.",
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Run folder: checkpoints, samples, logs, the final model."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
        max_steps: int | None = typer.Option(None, "--max-steps", help="Override the config's max_steps."),
        precompute: bool = typer.Option(
            False,
            "--precompute",
            help="Write the latent + CLIP cache of every object for the config's model and resolution, then exit "
            "(set data.use_cache: true to train from it).",
        ),
        seed: int | None = typer.Option(None, "--seed", help="Override the config's seed."),
        init_from: Path | None = typer.Option(
            None,
            "--init-from",
            help="Start from this model folder (a trained or converted model; 'default': the shipped model) "
            "instead of the config's 'model' or 'init_from': a second training stage on new data.",
        ),
        device: str = typer.Option("auto", "--device", help="For --precompute: cpu, cuda, or auto."),
    ) -> None:
        """Train the video prior described by CONFIG on orbit datasets; --resume continues a run.

        Multi-GPU / multi-node: `accelerate launch [--multi_gpu --num_processes N] -m mv3d train ...`;
        several CPU processes: `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m mv3d train ...`.

        Example: mv3d train configs/tiny.yaml --data data/train -o runs/tiny --max-steps 20
        """
        # Extra positional words after `--data A` are more data folders (`--data A B C`).
        extra = [a for a in ctx.args]
        stray = [a for a in extra if a.startswith("-")]
        if stray:
            raise InputError(f"unknown option {stray[0]}: see `mv3d train --help`")
        data_dirs = list(data) + [Path(a) for a in extra]

        from video_prior.train import TrainConfig

        cfg = TrainConfig.from_yaml(config)
        if seed is not None:
            cfg.seed = int(seed)
        if init_from is not None:
            cfg.model, cfg.init_from = None, str(init_from)
        if cfg.init_from == "default":
            # as `--model default`: the model shipped inside the package, wherever pip put it
            from mv3d.models import resolve_model

            cfg.init_from = str(resolve_model("default"))
        if max_steps is not None and max_steps < 1:
            raise InputError(f"--max-steps {max_steps}: expected a positive number of steps")
        if precompute:
            _precompute(cfg, data_dirs, device)
            return

        from video_prior.train import latest_checkpoint, train

        try:
            result = train(cfg, data_dirs, out, resume=resume, max_steps=max_steps)
        except KeyboardInterrupt:  # one line, what was kept, exit 130 (as `mv3d generate`)
            ckpt = latest_checkpoint(out)
            kept = (
                f"{ckpt} is kept: rerun the same command with --resume to continue from it"
                if ckpt is not None
                else "no checkpoint was written yet: rerun the same command to start again"
            )
            typer.echo(f"mv3d: interrupted: {kept}", err=True)
            raise SystemExit(130) from None
        if result.model_dir is not None:
            last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
            typer.echo(f"trained to step {result.steps}{last}; model: {result.model_dir}")


def _precompute(cfg, data_dirs: list[Path], device: str) -> None:
    from video_prior.data import precompute
    from video_prior.train import build_model

    device = resolve_device(device)
    components, _ = build_model(cfg)
    for name in ("vae", "image_encoder"):
        components[name].to(device)
    written = precompute(data_dirs, components, cfg.data.resolution)
    typer.echo(f"wrote {len(written)} cache files at resolution {cfg.data.resolution}")
