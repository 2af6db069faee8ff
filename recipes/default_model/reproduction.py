"""Does a rerun of the recipe follow the committed run? Training losses compared step by step.

    python -m recipes.default_model.reproduction REFERENCE.jsonl RUN/metrics.jsonl [--min-steps N]

Both files are `mv3d train` metrics logs (one JSON object a line, `step` and `loss` on the logged lines).
Every step logged in both is compared; the run reproduces the reference when all of them are equal to
the bit (same config, same seed, same data and the same CPU kernels give the same float32 arithmetic), and
at least `--min-steps` steps were compared. With `--rtol R` a run whose every loss is within R of the
reference's (relative) also counts, as reproduced to float32 rounding: another CPU's kernels may sum in
another order, and such one-ulp differences grow slowly (about 1e-6 relative after 450 steps of stage 1,
measured), where another config, seed or data differs by orders of magnitude more from the first logged
step. Prints one line; exit 0 when reproduced, 1 when not, 2 for bad input. `check_reproduction.sh`
runs the recipe's first steps in a fresh clone and calls this on `reference/stage1_metrics.jsonl` (the
committed stage 1 run of v2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from render.common import InputError

#: a metrics log longer than this is not an `mv3d train` log of this recipe (stage 1 logs 800 lines)
MAX_LOG_BYTES = 64 << 20


def read_losses(path: Path) -> dict[int, float]:
    """{step: loss} of the logged lines of one metrics.jsonl; `InputError` for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected an mv3d train metrics.jsonl")
    if path.stat().st_size > MAX_LOG_BYTES:
        raise InputError(
            f"{path}: {path.stat().st_size} bytes; expected a metrics log under {MAX_LOG_BYTES} bytes"
        )
    losses: dict[int, float] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: not JSON ({exc.msg}); expected one JSON object a line") from exc
        if not isinstance(row, dict) or "loss" not in row:
            continue  # other records (samples, checkpoints) carry no loss
        step, loss = row.get("step"), row["loss"]
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(loss, (int, float)):
            raise InputError(
                f"{path}:{n}: step {step!r}, loss {loss!r}; expected an integer step and a number"
            )
        # A resumed run logs the steps after its checkpoint again: the last value is the one that counts.
        losses[step] = float(loss)
    return losses


def difference(a: float, b: float) -> float:
    """|a - b|, where a NaN in both is the same arithmetic (0) and a NaN against a number is inf (so that
    max() over steps cannot skip it, as it skips a NaN)."""
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def compare(reference: dict[int, float], run: dict[int, float]) -> tuple[list[int], float, int | None]:
    """(steps in common, largest absolute loss difference, first step that differs or None)."""
    common = sorted(set(reference) & set(run))
    diffs = [difference(reference[s], run[s]) for s in common]
    first = next((s for s, d in zip(common, diffs, strict=True) if d != 0.0), None)
    return common, max(diffs, default=0.0), first


def largest_relative(reference: dict[int, float], run: dict[int, float], steps: list[int]) -> float:
    """The largest `difference` / |reference| over `steps` (inf where they differ and the reference is 0)."""
    worst = 0.0
    for s in steps:
        d = difference(reference[s], run[s])
        worst = max(worst, d / abs(reference[s]) if reference[s] != 0 else (math.inf if d else 0.0))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path, help="the committed run's metrics.jsonl")
    ap.add_argument("run", type=Path, help="the rerun's metrics.jsonl")
    ap.add_argument("--min-steps", type=int, default=10, help="fewest logged steps that must be compared")
    ap.add_argument(
        "--rtol",
        type=float,
        default=0.0,
        help="also accept losses within this relative difference (float32 rounding; default 0: to the bit)",
    )
    args = ap.parse_args(argv)
    try:
        if args.min_steps < 1:
            raise InputError(f"--min-steps {args.min_steps}: expected at least 1")
        if not 0.0 <= args.rtol < 1e-2:  # rounding is far below 1e-2; more would pass another config
            raise InputError(f"--rtol {args.rtol}: expected a relative tolerance in [0, 0.01)")
        reference, run = read_losses(args.reference), read_losses(args.run)
        common, worst, first = compare(reference, run)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = len(common)
    if n < args.min_steps:
        print(f"not reproduced: {n} logged steps in common with the reference, {args.min_steps} needed")
        return 1
    if first is not None:
        relative = largest_relative(reference, run, common)
        if relative <= args.rtol:
            print(
                f"reproduced to float32 rounding: {n} logged steps (up to step {common[-1]}) within "
                f"{relative:.3g} of the reference's (relative; --rtol {args.rtol:g}), equal to the bit up to "
                f"step {max((s for s in common if s < first), default=0)}"
            )
            return 0
        print(
            f"not reproduced: {n} logged steps compared, the first difference at step {first}, largest {worst:.3g}"
            f" ({relative:.3g} relative)"
        )
        return 1
    print(
        f"reproduced: the losses of {n} logged steps (up to step {common[-1]}) equal the reference's to the bit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
