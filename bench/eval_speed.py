"""`mv3d eval`'s time per object, before and after, and whether the numbers it reports are the same.

Runs the same `mv3d eval` command with two versions of the code, alternately (A B A B ...), each run in
a fresh process writing a fresh report folder (eval reuses the results of an existing one):

- "before": the code at a git revision (`--baseline-rev`, exported with `git archive`: the whole tree,
  since eval touches rendering, generation, reconstruction and the metrics);
- "after": this checkout.

Both run from the repository root, so relative paths in the command (a `--no-camera-model` folder)
mean the same files and are recorded the same in metrics.json. Each run's wall seconds per object are
reported with the medians and the ratio of the medians; then every run's metrics.json is compared with
the first "before" run's, every field but `versions` (floats bit for bit), and every mesh file byte for
byte: a speed-up must not change a number. Alternating keeps load from other jobs on a shared machine
from favouring one version; quote medians. Writes `--results` (JSON) with `bench.harness.environment()`.

    python -m bench.eval_speed --work /tmp/eval_speed --runs 3 -- --objects FURNITURE_DIR \\
        --select OBJECTS.txt --model default --seed 0 --baselines copy,no-camera \\
        --no-camera-model recipes/default_model/no_camera_model --reconstruct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import environment
from render.common import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
#: `mv3d eval ARGS`, run as `python -P -c WORKER ARGS` with PYTHONPATH the version's code: -P keeps the
#: working directory (the repository root, this checkout) off sys.path, so "before" imports its own code.
WORKER = "import sys; from mv3d.cli import main; main(sys.argv[1:])"


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two metrics.json values differ: every field but `versions`, floats bit for bit."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k == "versions":
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: in one run only")
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        same = a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    else:
        same = type(a) is type(b) and a == b
    return [] if same else [f"{path}: {a!r} vs {b!r}"]


def mesh_digests(report: Path) -> dict[str, str]:
    """sha256 of every method's mesh file in a report folder, by relative path."""
    return {
        str(p.relative_to(report)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((report / "objects").glob("*/*_mesh.ply"))
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-rev", default="HEAD", help="git revision of the 'before' code")
    ap.add_argument("--runs", type=int, default=3, help="runs of each version")
    ap.add_argument("--work", type=Path, required=True, help="folder for the code export and the reports")
    ap.add_argument("--results", type=Path, default=None, help="JSON to write (default WORK/eval_speed.json)")
    ap.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then the `mv3d eval` arguments, no --out")
    args = ap.parse_args()
    eval_args = [a for a in args.eval_args if a != "--"]
    if "--out" in eval_args or "-o" in eval_args:
        ap.error("the bench gives every run its own --out")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    before = work / f"code_{args.baseline_rev}"
    if not before.is_dir():
        before.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.baseline_rev], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    versions = {"before": before, "after": REPO}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in versions}
    for i in range(args.runs):
        for name, code in versions.items():
            out = work / f"{name}_{i}_{time.strftime('%H%M%S')}"
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-P", "-c", WORKER, "eval", *eval_args, "--out", str(out)],
                cwd=REPO,
                check=True,
                env={**os.environ, "PYTHONPATH": str(code)},
            )
            wall = time.perf_counter() - start
            n = len(json.loads((out / "metrics.json").read_text())["objects"])
            runs[name].append({"report": str(out), "wall_s": wall, "objects": n, "s_per_object": wall / n})
            print(f"{name} run {i}: {wall:.1f} s, {wall / n:.2f} s per object", flush=True)
    ref = Path(runs["before"][0]["report"])
    ref_metrics, ref_meshes = json.loads((ref / "metrics.json").read_text()), mesh_digests(ref)
    for name in versions:
        for run in runs[name]:
            report = Path(run["report"])
            found = differences(ref_metrics, json.loads((report / "metrics.json").read_text()))
            run["differences"] = found[:20]  # the first few: one changed setting differs everywhere
            run["meshes_differ"] = [k for k, v in mesh_digests(report).items() if ref_meshes.get(k) != v]
    med = {name: statistics.median(r["s_per_object"] for r in runs[name]) for name in versions}
    result = {
        "environment": environment(),
        "baseline_rev": args.baseline_rev,
        "eval_args": eval_args,
        "runs": runs,
        "median_s_per_object": med,
        "after_over_before": med["after"] / med["before"],
        "identical": all(not r["differences"] and not r["meshes_differ"] for rs in runs.values() for r in rs),
    }
    atomic_write_json(args.results or work / "eval_speed.json", result)
    print(
        f"median s per object: before {med['before']:.2f}, after {med['after']:.2f} "
        f"(after / before {result['after_over_before']:.3f}); numbers identical: {result['identical']}"
    )


if __name__ == "__main__":
    main()
