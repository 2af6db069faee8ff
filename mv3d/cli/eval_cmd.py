"""`mv3d eval`: benchmark a model (and baselines) on ground-truth orbits, or compare two runs."""

from __future__ import annotations

from pathlib import Path

import typer

from render.common import InputError, resolve_device


def _load_generator(model: str, device: str, field: str = "model"):
    """The model's view generator; `field` names the setting in errors ("no_camera_model": the flag
    `--no-camera-model`, not `--model`)."""
    from mv3d.generate import ViewGenerator

    try:
        return ViewGenerator.load(model, device)
    except InputError as exc:
        message = str(exc)
        if field == "model" or exc.field != "model" or not message.startswith("model"):
            raise
        raise InputError(field + message[len("model") :], field=field) from None


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        sources: list[str] = typer.Argument(
            None,
            metavar="SOURCES",
            help="More objects (after --objects), space separated.",
            show_default=False,
        ),
        objects: list[str] = typer.Option(
            None,
            "--objects",
            help="Objects to evaluate: mesh files, folders, Sweet Home 3D catalogues (.sh3f, sweethome3d.jar), procedural:N:SEED[:plain], "
            "objaverse selections, a GSO folder (as render-dataset). Several may follow one --objects.",
            show_default=False,
        ),
        out: Path = typer.Option(
            None, "--out", "-o", help="Report folder (metrics.json, report.md, figures/, objects/)."
        ),
        model: str = typer.Option(
            "default", "--model", help="'default' (the embedded model) or a model folder."
        ),
        views: int = typer.Option(21, "--views", help="Views per orbit (view 0 is the input)."),
        elevation: float = typer.Option(10.0, "--elevation", help="Orbit elevation in degrees."),
        up_axis: str | None = typer.Option(
            None,
            "--up-axis",
            help="Up axis of every mesh file and folder among the objects: y or z.",
            show_default="y for glTF, z otherwise",
        ),
        select: str | None = typer.Option(
            None,
            "--select",
            help="Keep only the objects a file lists: FILE (one object id per line) or FILE.json:KEY "
            "(e.g. recipes/default_model/sweethome3d_split.json:test).",
        ),
        resolution: int = typer.Option(
            None,
            "--resolution",
            help="Ground-truth and scoring resolution in pixels.",
            show_default="the model's view size",
        ),
        baselines: str = typer.Option(
            "copy", "--baselines", help="Comma-separated: copy, no-camera ('' for none)."
        ),
        no_camera_model: str = typer.Option(
            None,
            "--no-camera-model",
            help="For the no-camera baseline: a separately trained model without camera conditioning.",
            show_default="--model with every camera set to the input's",
        ),
        reconstruct: bool = typer.Option(
            False, "--reconstruct", help="Also mesh each method's views and score the meshes."
        ),
        reconstruct_method: str | None = typer.Option(
            None,
            "--reconstruct-method",
            help="With --reconstruct: a mv3d reconstruct method (field, hull), the same for every method "
            "scored.",
            show_default="the model's default_mesh_method, else field",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed passed to every generation."),
        lpips_weights: Path = typer.Option(
            None,
            "--lpips-weights",
            help="Folder with alexnet-owt-7be5be79.pth + alex.pth (or vgg16-397923af.pth + vgg.pth) for LPIPS.",
        ),
        lpips_net: str = typer.Option("alex", "--lpips-net", help="LPIPS backbone: alex or vgg."),
        clip: Path = typer.Option(
            None, "--clip", help="Local CLIP vision weights (transformers folder) for CLIP-S."
        ),
        renderer: str = typer.Option("fast", "--renderer", help="Ground-truth renderer: fast or blender."),
        device: str = typer.Option(
            "auto", "--device", help="Torch device for the model and metrics (auto, cpu, cuda)."
        ),
        compare: tuple[Path, Path] | None = typer.Option(
            None,
            "--compare",
            help="Compare two runs: --compare A/metrics.json B/metrics.json.",
            show_default=False,
        ),
        method: str = typer.Option("ours", "--method", help="With --compare: the method to compare."),
        protocol: str = typer.Option(
            "mv3d",
            "--protocol",
            help="mv3d (its own benchmark) or syncdreamer: the GSO protocol papers report (16 views at 30° "
            "elevation, 256 px, PSNR/SSIM/LPIPS-VGG over all views; meshes: Chamfer, F-score@0.1/0.2/0.5, "
            "volume IoU at 64³); it fixes --views, --elevation, --resolution and the LPIPS backbone.",
        ),
    ) -> None:
        """Score generated orbits against ground-truth renders (PSNR, SSIM, LPIPS, CLIP-S, mask IoU, meshes).

        Example: mv3d eval --objects procedural:8:2 -o reports/heldout --model default --baselines copy
        """
        if compare is not None and compare[0] is not None:
            from eval.compare import compare as run_compare
            from eval.compare import format_comparison

            if objects or sources:
                raise InputError("--compare takes two metrics.json files and no objects")
            if out is not None:
                raise InputError(f"--out {out}: --compare prints its table and writes no report")
            rows = run_compare(compare[0], compare[1], method=method)
            typer.echo(f"A: {compare[0]}\nB: {compare[1]}\nmethod: {method}\n")
            typer.echo(format_comparison(rows))
            return
        all_sources = list(objects or []) + list(sources or [])
        if not all_sources:
            raise InputError(
                "no objects: expected --objects SOURCES... (mesh files, folders, procedural:N:SEED, ...)"
            )
        if out is None:
            raise InputError("no report folder: expected --out PATH")
        if method != "ours":
            raise InputError(f"--method {method}: only with --compare (a run scores every method)")
        if reconstruct_method is not None and not reconstruct:
            raise InputError(f"--reconstruct-method {reconstruct_method}: only with --reconstruct")
        from eval.runner import check_report_folder

        check_report_folder(out)  # before any work: never replace files that eval did not write
        from render.meshes import check_up_axis

        up_axis = check_up_axis(up_axis, "--up-axis")
        names = [b.strip() for b in baselines.split(",") if b.strip()]

        from eval.runner import BASELINES, run_benchmark

        for b in names:
            if b not in BASELINES:
                raise InputError(
                    f"--baselines: unknown baseline '{b}': expected names from {', '.join(BASELINES)}"
                )
        device = resolve_device(device, "device")
        from eval.protocols import get_protocol

        lpips_net = get_protocol(protocol).lpips_net or lpips_net
        lpips_model = clip_scorer = None
        if lpips_weights is not None:
            from eval.lpips import LPIPS

            lpips_model = LPIPS.from_dir(lpips_net, lpips_weights).to(device)
        if clip is not None:
            from eval.view_metrics import CLIPScorer

            clip_scorer = CLIPScorer.from_pretrained(clip, device=device)
        gen = _load_generator(model, device)
        provided = {}
        if "no-camera" in names:
            provided["no-camera"] = (
                _load_generator(no_camera_model, device, "no_camera_model")
                if no_camera_model is not None
                else gen.without_cameras()
            )
        elif no_camera_model is not None:
            raise InputError("--no-camera-model is given but --baselines does not name no-camera")
        extra = {"device": device}
        if "no-camera" in names:
            extra["no_camera"] = (
                {"model": no_camera_model, "hash": getattr(provided["no-camera"], "model_hash", None)}
                if no_camera_model is not None
                else "--model with every camera at the input's"
            )
        reconstruct_fn = None
        if reconstruct:
            # What `mv3d generate` would mesh this model's views with: the model's choice unless named.
            from mv3d.generate.job import mesh_options
            from mv3d.reconstruct import mesh_function

            model_choice = mesh_options(None, gen.pipeline.info.default_mesh_method, model).get("method")
            reconstruct_method = reconstruct_method or model_choice or "field"
            extra["reconstruct_method"] = reconstruct_method
            reconstruct_fn = mesh_function(reconstruct_method, seed, device, "reconstruct_method")
        metrics = run_benchmark(
            all_sources,
            out,
            gen,
            views=views,
            elevation=elevation,
            resolution=resolution,
            baselines=names,
            reconstruct_fn=reconstruct_fn,
            seed=seed,
            baseline_generators=provided,
            renderer=renderer,
            lpips_model=lpips_model,
            clip_scorer=clip_scorer,
            model_name=model,
            model_hash=getattr(gen, "model_hash", None),
            clip_path=str(clip) if clip is not None else None,
            extra_settings=extra,
            up_axis=up_axis,
            select=select,
            protocol=protocol,
        )
        agg = metrics["aggregate"]
        group = metrics["protocol"]["headline"]  # the view group the protocol's papers report
        for name in metrics["methods"]:
            scores = agg.get(name, {}).get(group, {})
            parts = [f"{k} {v['mean']:.4g}" for k, v in scores.items() if v.get("mean") is not None]
            n = max((v.get("n", 0) for v in scores.values()), default=0)
            typer.echo(
                f"{name}: " + ", ".join(parts) + f" ({group} views, mean over {n} object{'s' * (n != 1)})"
            )
        if metrics["failed"] or metrics["not_found"]:
            typer.echo(
                f"not scored: {len(metrics['failed'])} objects that could not be loaded, "
                f"{len(metrics['not_found'])} selected objects the sources do not hold (listed in the report)"
            )
        typer.echo(f"report: {Path(out) / 'report.md'}")
