"""Fewer steps at equal quality? Euler-50 (SV3D's reference) vs Heun and DPM-Solver++(2M) at 10/15/25 steps.

    python -m bench.sampler_steps --model default                       # the embedded default model
    python -m bench.sampler_steps --model tiny --objects 1 --views 4    # smoke test: random tiny model

For each (sampler, steps) it loads `mv3d.generate.ViewGenerator.load(model, steps=..., sampler=...)` and
runs eval's benchmark (`eval.runner.run_benchmark`) on held-out procedural objects (procedural seed
`--seed-objects`, not a training seed), then prints one table: PSNR / SSIM / mask IoU on the novel views
(mean over objects), the UNet evaluations per image (Heun costs 2 per step but the last) and the wall time.
Compare rows against Euler-50: a configuration is "equal quality" when its metrics are within the
object-to-object spread of Euler-50's.

With `--model tiny` the numbers mean nothing (random weights): it only checks that the script runs end
to end; defaults must not be set from them. Writes bench/results/sampler_steps_<model>.json (+ .md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from render.common import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = [("euler", 50)] + [(s, n) for s in ("heun", "dpmpp2m") for n in (10, 15, 25)]
METRICS = ("psnr", "ssim", "mask_iou")


def network_evals(sampler: str, steps: int) -> int:
    """UNet evaluations per image (per CFG batch): Heun's second-order correction skips the last step."""
    return 2 * steps - 1 if sampler == "heun" else steps


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="'default', a model folder, or 'tiny' (smoke test)")
    p.add_argument("--objects", type=int, default=8)
    p.add_argument("--seed-objects", type=int, default=90210, help="procedural seed of the held-out objects")
    p.add_argument("--views", type=int, default=21)
    p.add_argument("--device", default="auto")
    p.add_argument("--configs", default=None, help="e.g. 'euler:50,heun:10' (default: the full grid)")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="folder for sampler_steps_<model>.{json,md}",
    )
    args = p.parse_args(argv)

    from eval.runner import run_benchmark
    from mv3d.generate import ViewGenerator

    configs = CONFIGS
    if args.configs:
        configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        smoke = model == "tiny"
        if smoke:
            from video_prior.components import tiny_config
            from video_prior.pipeline import MultiViewPipeline

            model = str(
                MultiViewPipeline.from_config(tiny_config(sample_size=32), seed=0).save_pretrained(
                    Path(tmp) / "tiny"
                )
            )
        for sampler, steps in configs:
            gen = ViewGenerator.load(model, device=args.device, steps=steps, sampler=sampler)
            t = time.perf_counter()
            metrics = run_benchmark(
                [f"procedural:{args.objects}:{args.seed_objects}"],
                Path(tmp) / f"{sampler}-{steps}",
                gen,
                views=args.views,
                baselines=(),
                figures=False,
                progress=False,
                model_name=f"{args.model} {sampler}-{steps}",
            )
            wall = time.perf_counter() - t
            novel = metrics["aggregate"]["ours"]["novel"]
            row = {
                "sampler": sampler,
                "steps": steps,
                "unet_evals": network_evals(sampler, steps),
                "wall_s": wall,
                "objects": len(metrics["objects"]),
                **{m: novel.get(m, {}).get("mean") for m in METRICS},
                **{f"{m}_std": novel.get(m, {}).get("std") for m in METRICS},
            }
            rows.append(row)
            print(
                f"{sampler:8s} {steps:3d} steps ({row['unet_evals']:3d} evals): "
                + "  ".join(f"{m} {row[m]:.4f}" if row[m] is not None else f"{m} n/a" for m in METRICS)
                + f"  {wall:.1f} s"
            )

    note = (
        "SMOKE TEST on a random tiny model: the numbers carry no information about sampler quality"
        if smoke
        else f"model {args.model}, {args.objects} held-out procedural objects (seed {args.seed_objects})"
    )
    head = "| sampler | steps | UNet evals | " + " | ".join(METRICS) + " | wall s |"
    lines = [f"# Samplers and step counts\n\n{note}; {args.views} views, novel-view metrics.\n", head]
    lines.append("|" + "---|" * (4 + len(METRICS)))
    for r in rows:
        vals = " | ".join(f"{r[m]:.4f} ± {r[m + '_std']:.4f}" if r[m] is not None else "n/a" for m in METRICS)
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['unet_evals']} | {vals} | {r['wall_s']:.1f} |")
    print("\n" + "\n".join(lines))
    name = "tiny_smoke" if smoke else Path(str(args.model)).name
    result = {"note": note, "views": args.views, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"sampler_steps_{name}.json", result)
    atomic_write_text(args.out / f"sampler_steps_{name}.md", "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
