"""Compare two evaluation runs object by object: `mv3d eval --compare A/metrics.json B/metrics.json`.

For each metric of one method (default "ours") in the novel-view and mesh groups, the per-object
values of the objects both runs scored are paired, and the change B - A is tested with the Wilcoxon
signed-rank test (scipy, two-sided; exact for small samples). A change is called "better" or "worse"
only when p < alpha, in the metric's own direction (`eval.layout.HIGHER_IS_BETTER`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from render.common import InputError


@dataclass
class MetricComparison:
    """One row: metric `group/metric`, paired over `n` objects."""

    group: str
    metric: str
    n: int
    mean_a: float
    mean_b: float
    mean_diff: float  # mean over objects of (b - a)
    p_value: float | None  # None when undefined (fewer than 2 pairs, or all differences zero)
    verdict: str  # "better", "worse" or "no significant change"


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a metrics.json written by `eval.runner.run_benchmark` (a report folder also works)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise InputError(f"{path}: no such metrics file: expected REPORT_DIR/metrics.json from `mv3d eval`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "objects" not in data or "mv3d_eval_format" not in data:
        raise InputError(f"{path}: not an mv3d eval metrics.json (no 'mv3d_eval_format' / 'objects')")
    return data


def _values(data: dict, method: str, group: str, metric: str) -> dict[str, float]:
    out = {}
    for oid, obj in data["objects"].items():
        v = ((obj.get("methods", {}).get(method) or {}).get(group) or {}).get(metric)
        if v is not None and math.isfinite(v):
            out[oid] = float(v)
    return out


def compare(
    a: str | Path | dict, b: str | Path | dict, method: str = "ours", alpha: float = 0.05
) -> list[MetricComparison]:
    """Paired comparison of run B against run A, one row per metric both runs have."""
    from scipy.stats import wilcoxon

    from eval.layout import higher_is_better

    da = a if isinstance(a, dict) else load_metrics(a)
    db = b if isinstance(b, dict) else load_metrics(b)
    for name, d in (("A", da), ("B", db)):
        if not any(method in o.get("methods", {}) for o in d["objects"].values()):
            raise InputError(f"run {name} has no results for method '{method}'")
    common = sorted(set(da["objects"]) & set(db["objects"]))
    if not common:
        raise InputError("the two runs share no object: expected evaluations of the same objects")
    rows = []
    for group in ("novel", "mesh"):
        metrics = set()
        for d in (da, db):
            for o in d["objects"].values():
                metrics |= set((o.get("methods", {}).get(method) or {}).get(group) or {})
        for metric in sorted(metrics):
            va, vb = _values(da, method, group, metric), _values(db, method, group, metric)
            ids = [i for i in common if i in va and i in vb]
            if not ids:
                continue
            x = np.array([va[i] for i in ids])
            y = np.array([vb[i] for i in ids])
            d = y - x
            p = None
            if len(ids) >= 2 and np.any(d != 0):
                p = float(wilcoxon(y, x).pvalue)
            verdict = "no significant change"
            if p is not None and p < alpha:
                up = float(np.median(d)) > 0 if np.median(d) != 0 else float(d.mean()) > 0
                verdict = "better" if up == higher_is_better(metric) else "worse"
            rows.append(
                MetricComparison(
                    group, metric, len(ids), float(x.mean()), float(y.mean()), float(d.mean()), p, verdict
                )
            )
    return rows


def format_comparison(rows: list[MetricComparison], a_name: str = "A", b_name: str = "B") -> str:
    """A plain-text table of `compare` rows."""
    head = f"{'metric':<26}{'n':>4}{a_name[:12]:>14}{b_name[:12]:>14}{'B - A':>12}{'p':>9}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        p = "n/a" if r.p_value is None else f"{r.p_value:.3g}"
        lines.append(
            f"{r.group + '/' + r.metric:<26}{r.n:>4}{r.mean_a:>14.4f}{r.mean_b:>14.4f}{r.mean_diff:>+12.4f}{p:>9}  {r.verdict}"
        )
    lines.append("Paired Wilcoxon signed-rank test over objects both runs scored (two-sided).")
    return "\n".join(lines)
