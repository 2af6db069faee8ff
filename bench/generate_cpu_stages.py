"""Per-stage timings of `mv3d generate` on this CPU, and a torch.profiler table of the sampling stage.

    python -m bench.generate_cpu_stages                   # the embedded default model when present
    python -m bench.generate_cpu_stages --model PATH      # any model folder

Stages: preprocess (matte, frame, resize), load model, sample (split into CLIP, VAE encode, UNet steps,
VAE decode), write (views, transforms.json, GIF), reconstruct (mesh). The model is, in this order: the
given folder; the embedded default model (mv3d/default_model/) when it has weights; a random model built
from configs/default_model.yaml (the default model's size) when this installation can build it; else the
tiny test config at 64 px and 21 views. The output and the JSON say which.

The sampling stage is then profiled with torch.profiler (CPU): the top operators by self time go to
the markdown report, so that a stage slower than its arithmetic shows.

Writes bench/results/generate_cpu_stages.json and bench/results/generate_cpu_stages.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.harness import StageTimer, environment
from render.common import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def pick_model(model: str | None, workdir: Path) -> tuple[Path, str]:
    """(model folder, how it was chosen)."""
    from mv3d.models import default_model_dir, resolve_model

    if model:
        return resolve_model(model), f"given: {model}"
    try:
        return resolve_model("default"), f"embedded default model ({default_model_dir()})"
    except Exception:  # noqa: BLE001 - absent default model: fall through to the random stand-ins
        pass
    from video_prior.components import tiny_config
    from video_prior.pipeline import MultiViewPipeline

    yaml_path = ROOT / "configs" / "default_model.yaml"
    if yaml_path.is_file():
        try:
            import yaml

            cfg = yaml.safe_load(yaml_path.read_text())["model"]
            pipe = MultiViewPipeline.from_config(cfg, seed=0)
            return pipe.save_pretrained(workdir / "model"), (
                "RANDOM weights, default-model size (configs/default_model.yaml): no embedded model yet"
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a VAE type this checkout does not have yet
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            why = f"configs/default_model.yaml cannot be built here ({first})"
    else:
        why = "no configs/default_model.yaml"
    pipe = MultiViewPipeline.from_config(tiny_config(num_frames=21, sample_size=64), seed=0)
    return pipe.save_pretrained(workdir / "model"), (
        f"RANDOM weights, tiny test config at 64 px, 21 views: no embedded model, {why}"
    )


def test_image(path: Path, size: int = 256) -> Path:
    """An RGBA PNG of a simple two-coloured object on a transparent background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rectangle([size * 0.3, size * 0.25, size * 0.7, size * 0.8], fill=(200, 60, 40, 255))
    d.ellipse([size * 0.35, size * 0.1, size * 0.65, size * 0.4], fill=(40, 90, 200, 255))
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--views", type=int, default=21)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--no-mesh", action="store_true")
    p.add_argument("--top", type=int, default=20, help="operators in the profile table")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="folder for generate_cpu_stages.{json,md}",
    )
    args = p.parse_args(argv)

    from mv3d.generate import ViewGenerator, build_orbit, generate

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_path, model_note = pick_model(args.model, tmp)
        print(f"model: {model_note}")
        image = test_image(tmp / "object.png")

        t = time.perf_counter()
        gen = ViewGenerator.load(model_path, device="cpu", steps=args.steps)
        load_s = time.perf_counter() - t
        pipe = gen.pipeline
        # 1. the whole job, as `mv3d generate` runs it (preprocess, sample, write, reconstruct)
        with StageTimer({"image_encoder": pipe.image_encoder, "vae": pipe.vae}) as sub:
            res = generate(
                [image], tmp / "out", views=args.views, generator=gen, mesh=not args.no_mesh, progress=False
            )[0]
        # generate() was handed the loaded model, so its own "load_model" is ~0: use the load timed here
        timings = {**res.timings, "load_model": load_s}
        timings.pop("total", None)
        timings = {
            k: timings[k]
            for k in ("preprocess", "load_model", "sample", "write", "reconstruct")
            if k in timings
        }
        sub_s = sub.totals()
        sample = {**sub_s, "unet_steps_and_rest": timings["sample"] - sum(sub_s.values())}
        timings["total"] = sum(v for k, v in timings.items())

        # 2. profile of the sample stage alone (same input, same settings)
        from torch.profiler import ProfilerActivity, profile

        print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), flush=True)
        from PIL import Image

        pre_rgba = np.asarray(Image.open(res.out_dir / "input.png"))
        orbit = build_orbit("static", args.views, 10.0, 0)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            gen(pre_rgba, orbit, seed=0)
        table = prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=50
        )
        prof_total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6

    result = {
        "environment": environment(),
        "model": model_note,
        "unet_params": sum(q.numel() for q in pipe.unet.parameters()),
        "views": args.views,
        "resolution": gen.resolution,
        "steps": gen.steps,
        "sampler": gen.config.sampler,
        "cfg": pipe.denoiser.guided,
        "mesh": not args.no_mesh,
        "stages_s": {k: round(v, 3) for k, v in timings.items()},
        "sample_breakdown_s": {k: round(v, 3) for k, v in sample.items()},
        "profile_self_cpu_total_s": round(prof_total, 3),
    }
    print("\nstage               seconds")
    for k, v in timings.items():
        print(f"{k:18s} {v:8.2f}")
    print("sample stage split: " + ", ".join(f"{k} {v:.2f} s" for k, v in sample.items()))
    print(table)

    env = result["environment"]
    md = [
        "# `mv3d generate` on the CPU: per-stage timings and a profile of the sampling stage",
        "",
        f"Device: {env['device']}, {env['threads']} threads, torch {env['versions']['torch']}.  ",
        f"Model: {model_note} ({result['unet_params'] / 1e6:.2f} M UNet parameters), {args.views} views at "
        f"{gen.resolution} px, {gen.steps} {gen.config.sampler} steps.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in timings.items()],
        "",
        "Sample stage split: " + ", ".join(f"{k} {v:.2f} s" for k, v in sample.items()) + ".",
        "",
        "## torch.profiler, sample stage (top operators by self CPU time)",
        "",
        "```",
        table,
        "```",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "generate_cpu_stages.json", result)
    atomic_write_text(args.out / "generate_cpu_stages.md", "\n".join(md))
    print(f"wrote {args.out / 'generate_cpu_stages.json'} and .md")
    return result


if __name__ == "__main__":
    main()
