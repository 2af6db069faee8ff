"""The README's timing table: `mv3d generate examples/example.png` per stage, as a user runs it.

    python -m bench.generate_timing                 # 3 runs, writes bench/results/generate_timing.{json,md}
    python -m bench.generate_timing --readme        # and replaces the table in README.md

Each run is the command itself in a fresh process (`python -m mv3d generate IMAGE -o TMP --quiet`) into
a new folder, so nothing is resumed; its run.json gives the stages (preprocess, load, sample, write,
mesh, their sum) and the process's wall time adds what a user also waits for (Python and torch imports).
The table shows the median over the runs and the machine with its load average before and after
(`bench.harness.environment`): on a shared machine the mesh stage, which is most of the job, is what
other work slows first. The runs inherit this process's environment: leave OMP_NUM_THREADS unset to
time the command as a user runs it (torch then uses every core).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import environment
from render.common import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: run.json's stage names -> the table's.
STAGES = {
    "preprocess": "preprocess",
    "load_model": "load",
    "sample": "sample",
    "write": "write",
    "reconstruct": "mesh",
    "total": "total",
}
BEGIN, END = "<!-- generate-timing:begin -->", "<!-- generate-timing:end -->"


def one_run(image: Path, extra: list[str]) -> dict[str, float]:
    """One fresh `mv3d generate` process; seconds per stage (run.json) and the process's wall time."""
    with tempfile.TemporaryDirectory(prefix="mv3d-timing-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "mv3d", "generate", str(image), "-o", str(out), "--quiet", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"mv3d generate failed ({proc.returncode}): {proc.stderr.strip()}")
        timings = json.loads((out / "run.json").read_text())["timings_s"]
    row = {name: float(timings.get(key, 0.0)) for key, name in STAGES.items()}
    row["process"] = wall
    return row


def table(rows: list[dict[str, float]], env_before: dict[str, Any], load_after: list[float] | None) -> str:
    """The Markdown table (median of `rows`) with the machine and its load."""
    cols = [*STAGES.values(), "process"]
    med = {c: statistics.median(r[c] for r in rows) for c in cols}
    spread = {c: (min(r[c] for r in rows), max(r[c] for r in rows)) for c in cols}
    head = "| stage | " + " | ".join(cols) + " |"
    rule = "|---|" + "---:|" * len(cols)
    line = "| seconds (median) | " + " | ".join(f"{med[c]:.1f}" for c in cols) + " |"
    rng = "| min - max | " + " | ".join(f"{spread[c][0]:.1f} - {spread[c][1]:.1f}" for c in cols) + " |"
    load = env_before.get("load_average")
    fmt = lambda la: "/".join(f"{x:.1f}" for x in la) if la else "unknown"  # noqa: E731
    machine = (
        f"{env_before['cpu']}, {env_before['usable_cpus']} usable cores, OMP_NUM_THREADS "
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average (1/5/15 min) {fmt(load)} before, {fmt(load_after)} after; "
        f"{len(rows)} runs, {time.strftime('%Y-%m-%d', time.gmtime())}, torch "
        f"{env_before['versions'].get('torch', '?')}"
    )
    return "\n".join(
        [
            head,
            rule,
            line,
            rng,
            "",
            f"Machine: {machine}. `total` is the sum of the stages in run.json; `process` is the command's wall "
            "time, Python and torch imports included. Regenerate with `python -m bench.generate_timing "
            "--readme`.",
        ]
    )


def replace_in_readme(readme: Path, text: str) -> None:
    """Put `text` between the README's timing markers."""
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers to put the table between")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "example.png")
    parser.add_argument("--runs", type=int, default=3, help="fresh runs; the table shows their median")
    parser.add_argument("--readme", action="store_true", help="replace the table in README.md")
    parser.add_argument("extra", nargs="*", help="more `mv3d generate` options (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs: expected at least 1")
    env = environment()
    rows = []
    for i in range(args.runs):
        rows.append(one_run(args.image, args.extra))
        print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v:.1f}s" for k, v in rows[-1].items()))
    load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = table(rows, env, load_after)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "command": f"mv3d generate {args.image.relative_to(ROOT) if args.image.is_relative_to(ROOT) else args.image}",
        "extra": args.extra,
        "runs": rows,
        "environment": env,
        "load_average_after": load_after,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    atomic_write_json(RESULTS / "generate_timing.json", record)
    atomic_write_text(RESULTS / "generate_timing.md", text + "\n")
    print(text)
    if args.readme:
        replace_in_readme(ROOT / "README.md", text)


if __name__ == "__main__":
    main()
