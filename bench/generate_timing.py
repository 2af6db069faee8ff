"""The README's timing table: `mv3d generate examples/example.png` per stage, as a user runs it.

    python -m bench.generate_timing                 # 3 runs per thread setting, writes
                                                    # bench/results/generate_timing.{json,md}
    python -m bench.generate_timing --readme        # and replaces the table in README.md

Each run is the command itself in a fresh process (`python -m mv3d generate IMAGE -o TMP --quiet`) into
a new folder, so nothing is resumed; its run.json gives the stages (preprocess, load, sample, write,
mesh, their sum) and the process's wall time adds what a user also waits for (Python and torch imports).
The table shows the median over the runs and the machine with its load average before and after
(`bench.harness.environment`): on a shared machine the mesh stage, which is most of the job, is what
other work slows first. Each thread setting (`--threads`, default: OMP_NUM_THREADS unset, as a user
runs the command, torch then using every core; and 1) is one row: on a busy machine torch's threads
compete with other processes and one thread is faster.
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


def one_run(image: Path, extra: list[str], threads: str = "unset") -> dict[str, float]:
    """One fresh `mv3d generate` process (OMP_NUM_THREADS `threads`, or unset); seconds per stage
    (run.json) and the process's wall time."""
    with tempfile.TemporaryDirectory(prefix="mv3d-timing-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "mv3d", "generate", str(image), "-o", str(out), "--quiet", *extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("OMP_NUM_THREADS", None)
        if threads != "unset":
            env["OMP_NUM_THREADS"] = threads
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"mv3d generate failed ({proc.returncode}): {proc.stderr.strip()}")
        timings = json.loads((out / "run.json").read_text())["timings_s"]
    row = {name: float(timings.get(key, 0.0)) for key, name in STAGES.items()}
    row["process"] = wall
    return row


def table(
    rows: dict[str, list[dict[str, float]]], env_before: dict[str, Any], load_after: list[float] | None
) -> str:
    """The Markdown table (per thread setting: the median of its runs, and their range) with the machine
    and its load."""
    cols = [*STAGES.values(), "process"]
    lines = ["| OMP_NUM_THREADS | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for threads, runs in rows.items():
        med = [statistics.median(r[c] for r in runs) for c in cols]
        lines.append(f"| {threads}: median | " + " | ".join(f"{m:.1f}" for m in med) + " |")
        spread = [f"{min(r[c] for r in runs):.1f} - {max(r[c] for r in runs):.1f}" for c in cols]
        lines.append(f"| {threads}: min - max | " + " | ".join(spread) + " |")
    fmt = lambda la: "/".join(f"{x:.1f}" for x in la) if la else "unknown"  # noqa: E731
    n = {len(r) for r in rows.values()}
    machine = (
        f"{env_before['cpu']}, {env_before['usable_cpus']} usable cores; load average (1/5/15 min) "
        f"{fmt(env_before.get('load_average'))} before, {fmt(load_after)} after; {'/'.join(map(str, n))} "
        f"fresh runs per row, {time.strftime('%Y-%m-%d', time.gmtime())}, torch "
        f"{env_before['versions'].get('torch', '?')}"
    )
    return "\n".join(
        [
            *lines,
            "",
            f"Seconds. Machine: {machine}. `total` is the sum of the stages in run.json; `process` is the "
            "command's wall time, Python and torch imports included. Regenerate with "
            "`python -m bench.generate_timing --readme`.",
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
    parser.add_argument(
        "--runs", type=int, default=3, help="fresh runs per row; the table shows their median"
    )
    parser.add_argument(
        "--threads", nargs="+", default=["unset", "1"], help="OMP_NUM_THREADS values, one row each"
    )
    parser.add_argument("--readme", action="store_true", help="replace the table in README.md")
    parser.add_argument("extra", nargs="*", help="more `mv3d generate` options (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs: expected at least 1")
    env = environment()
    rows: dict[str, list[dict[str, float]]] = {t: [] for t in args.threads}
    for i in range(args.runs):  # interleaved, so that a change of load hits every row alike
        for threads in args.threads:
            rows[threads].append(one_run(args.image, args.extra, threads))
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in rows[threads][-1].items())
            print(f"run {i + 1}/{args.runs}, OMP_NUM_THREADS {threads}: {stages}", flush=True)
    load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = table(rows, env, load_after)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "command": f"mv3d generate {args.image.relative_to(ROOT) if args.image.is_relative_to(ROOT) else args.image}",
        "extra": args.extra,
        "runs": rows,
        "environment": env,
        "load_average_after": load_after,
    }
    atomic_write_json(RESULTS / "generate_timing.json", record)
    atomic_write_text(RESULTS / "generate_timing.md", text + "\n")
    print(text)
    if args.readme:
        replace_in_readme(ROOT / "README.md", text)


if __name__ == "__main__":
    main()
