"""report.md and figures from a metrics.json dictionary (see `eval.runner` and `eval.layout`).

Figures (matplotlib, Agg backend, PNG, under REPORT_DIR/figures/):

* `sheet_<object>.png`: contact sheet per object: the input view, then the ground-truth orbit, the
  model's orbit and each baseline's, one row each, columns in azimuth order;
* `per_view.png`: per-view metrics over azimuth, mean over objects, one line per method;
* `histogram.png`: histograms of per-object novel-view scores, one colour per method.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eval.layout import GT_VIEWS, higher_is_better, safe_id
from render.common import atomic_output, atomic_write_text

#: Published novel-view rows on Google Scanned Objects, from the paper each row names (SVD: arXiv
#: 2311.15127; SV3D: arXiv 2403.12008).
PUBLISHED_VIEWS = [
    {"name": "SVD-MV (SVD paper, GSO, 50 objects, 21 views)", "lpips": 0.14, "psnr": 16.83, "clip_s": 0.89},
    {
        "name": "SV3D_p static orbit (SV3D paper, GSO, 300 objects)",
        "lpips": 0.08,
        "psnr": 21.26,
        "ssim": 0.88,
        "clip_s": 0.89,
    },
]
PUBLISHED_MESHES = [
    {"name": "SV3D_p meshes (SV3D paper, GSO, 50 objects)", "chamfer": 0.024, "volume_iou": 0.614},
    {"name": "SV3D meshes fitted to GT renders (SV3D paper)", "chamfer": 0.021, "volume_iou": 0.689},
]

VIEW_METRICS = ("psnr", "ssim", "lpips", "clip_s", "mask_iou", "reproj_err")
LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "clip_s": "CLIP-S",
    "mask_iou": "mask IoU",
    "reproj_err": "reproj. err",
    "reproj_self": "self reproj. err",
    "chamfer": "Chamfer",
    "volume_iou": "volume IoU",
    "normal_consistency": "normal cons.",
}


def _label(metric: str) -> str:
    if metric.startswith("f_score@"):
        return "F@" + metric.split("@", 1)[1]
    return LABELS.get(metric, metric.replace("_", " "))


def _arrow(metric: str) -> str:
    return "↑" if higher_is_better(metric) else "↓"


def _fmt(stats: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _present(agg: Mapping[str, Any], group: str, candidates) -> list[str]:
    return [m for m in candidates if any(m in (agg[meth].get(group) or {}) for meth in agg)]


def _table(
    metrics: Mapping[str, Any], group: str, columns: list[str], published: list[dict] | None
) -> list[str]:
    agg = metrics["aggregate"]
    # every row says which protocol made it (eval.protocols): numbers of two protocols do not compare
    protocol = (metrics.get("settings") or {}).get("protocol", "mv3d")
    head = "| method | protocol | n | " + " | ".join(f"{_label(c)} {_arrow(c)}" for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    digits = {
        c: 2 if c == "psnr" else 4 if c in ("chamfer", "reproj_err", "reproj_self") else 3 for c in columns
    }

    def row(name: str, stats: Mapping[str, Any]) -> str:
        # n: the objects the row's means are over; a metric with fewer values says so in its cell.
        counts = {c: (stats.get(c) or {}).get("n", 0) for c in columns}
        n = max(counts.values(), default=0)
        cells = [
            _fmt(stats.get(c), digits[c]) + (f" (n={counts[c]})" if 0 < counts[c] < n else "")
            for c in columns
        ]
        return f"| {name} | {protocol} | {n} | " + " | ".join(cells) + " |"

    for method in metrics["methods"]:
        lines.append(row(method, (agg.get(method) or {}).get(group) or {}))
    if group == "mesh" and (agg.get(GT_VIEWS) or {}).get("mesh"):
        lines.append(row("same reconstruction from the ground-truth views (ceiling)", agg[GT_VIEWS]["mesh"]))
    for pub in published or []:
        cells = [f"{pub[c]:g}" if c in pub else "–" for c in columns]
        lines.append(f"| *{pub['name']}* † | the paper's | – | " + " | ".join(cells) + " |")
    return lines


def render_markdown(metrics: Mapping[str, Any], figures: list[str] | None = None) -> str:
    """The report as Markdown text."""
    s = metrics["settings"]
    agg = metrics["aggregate"]
    n = len(metrics["objects"])
    lines = [
        "# mv3d evaluation report",
        "",
        f"Model: `{metrics['model']['name']}` (hash `{metrics['model'].get('hash') or 'n/a'}`). "
        f"{n} objects, {s['views']} views per orbit (static, elevation {s['elevation']:g}°), "
        f"{s['resolution']} px, renderer `{s['renderer']}`, seed {s['seed']}. "
        f"View 0 (azimuth 0) is the input.",
        "",
        f"Protocol `{s.get('protocol', 'mv3d')}`"
        + (
            f" ({metrics['protocol']['sources']}; its papers report the all-views table)"
            if s.get("protocol", "mv3d") != "mv3d"
            else ""
        )
        + ". Values are mean ± std over objects of each object's mean over views; n is the number of objects "
        "a row's means are over. Images are compared in [0, 1] "
        "on a white background. LPIPS: "
        + (f"`{s['lpips']}` backbone" if s.get("lpips") else "not computed (no weights given)")
        + "; CLIP-S: "
        + (f"`{s['clip']}`" if s.get("clip") else "not computed (no weights given)")
        + ".",
        "",
        "## Novel views (frames 1..N-1)",
        "",
    ]
    # The published metrics stay as columns even when not computed here, so the rows line up.
    present = set(_present(agg, "novel", VIEW_METRICS)) | {"psnr", "ssim", "lpips", "clip_s"}
    cols = [m for m in VIEW_METRICS if m in present]
    lines += _table(metrics, "novel", cols, PUBLISHED_VIEWS)
    lines += [
        "",
        "† Published numbers, **measured on different data** (Google Scanned Objects, 576 px, their own renders); "
        "shown for scale only, not as a like-for-like comparison.",
        "",
        "## All views (including the input view)",
        "",
    ]
    lines += _table(metrics, "all", _present(agg, "all", VIEW_METRICS), None)
    floor = [
        o.get("gt_reproj_err") for o in metrics["objects"].values() if o.get("gt_reproj_err") is not None
    ]
    lines += [
        "",
        "Reprojection error: mean absolute RGB difference (0-1) between each view and its neighbour warped into it "
        "through the ground-truth mesh, on pixels visible in both (no learned weights). "
        + (
            f"The ground-truth renders themselves score {np.mean(floor):.4f} (lighting and resampling only)."
            if floor
            else ""
        ),
    ]
    mesh_cols = _present(agg, "mesh", ["chamfer", "volume_iou", "normal_consistency"])
    mesh_cols += sorted(
        {m for meth in agg for m in (agg[meth].get("mesh") or {}) if m.startswith("f_score")},
        key=lambda m: float(m.split("@")[1]),
    )
    mesh_cols += _present(agg, "mesh", ["reproj_self"])
    if mesh_cols:
        lines += [
            "",
            "## Meshes",
            "",
            (
                f"Meshes made by `mv3d reconstruct --method {s['extra']['reconstruct_method']}` from each "
                "method's views. "
                if (s.get("extra") or {}).get("reconstruct_method")
                else ""
            )
            + "Unit-cube frame, no alignment. Chamfer: mean of both directions of mean L2 nearest-neighbour distance, "
            f"{s['mesh_points']} points per surface; F-score at the stated thresholds; volume IoU on a "
            f"{s['iou_resolution']}³ grid.",
            "",
        ]
        lines += _table(metrics, "mesh", mesh_cols, PUBLISHED_MESHES)
        lines += ["", "† Published numbers, **measured on different data** (GSO); for scale only."]
        no_mesh = [
            (oid, method, entry["mesh"]["failed"])
            for oid, obj in metrics["objects"].items()
            for method, entry in obj["methods"].items()
            if "failed" in (entry.get("mesh") or {})
        ]
        no_mesh += [
            (oid, "ground-truth views (ceiling)", obj["gt_views_mesh"]["failed"])
            for oid, obj in metrics["objects"].items()
            if "failed" in (obj.get("gt_views_mesh") or {})
        ]
        if no_mesh:
            lines += ["", f"Views that gave no mesh ({len(no_mesh)}; not in the means above):", ""]
            lines += [f"- `{oid}`, {method}: {msg}" for oid, method, msg in no_mesh]
    lines += ["", "## Per object (novel views)", ""]
    pcols = _present(agg, "novel", ["psnr", "ssim", "lpips", "mask_iou"])
    lines.append("| object | method | " + " | ".join(_label(c) for c in pcols) + " |")
    lines.append("|" + "---|" * (len(pcols) + 2))
    for oid, obj in metrics["objects"].items():
        for method, entry in obj["methods"].items():
            vals = [entry["novel"].get(c) for c in pcols]
            lines.append(
                f"| {oid} | {method} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in vals) + " |"
            )
    failed = metrics.get("failed") or {}
    if failed:
        lines += ["", f"## Objects that could not be loaded ({len(failed)}, not scored)", ""]
        lines += [f"- `{oid}`: {msg}" for oid, msg in failed.items()]
    not_found = metrics.get("not_found") or []
    if not_found:
        lines += ["", f"## Selected objects the sources do not hold ({len(not_found)}, not scored)", ""]
        lines += [f"- `{oid}`" for oid in not_found]
    if figures:
        lines += ["", "## Figures", ""]
        for f in figures:
            lines.append(f"![{Path(f).stem}]({f})")
            lines.append("")
    v = metrics.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)


def contact_sheet(object_dir: Path, methods: list[str], path: Path, max_columns: int = 11) -> None:
    """One object's sheet: input, ground truth and each method's orbit (columns subsampled to `max_columns`)."""
    from eval.view_metrics import to_tensor
    from render.dataset import read_orbit_dataset

    plt = _plt()
    rows = [("ground truth", read_orbit_dataset(object_dir / "gt"))]
    rows += [(m, read_orbit_dataset(object_dir / m)) for m in methods if (object_dir / m).is_dir()]
    n = len(rows[0][1])
    cols = np.unique(np.linspace(0, n - 1, min(n, max_columns)).round().astype(int))
    az = rows[0][1].orbit.azimuth_deg
    # Columns: row label, the input view (ground-truth row only), then the orbit.
    fig, axes = plt.subplots(
        len(rows),
        len(cols) + 2,
        figsize=(1.25 * (len(cols) + 2), 1.35 * len(rows)),
        squeeze=False,
        gridspec_kw={"width_ratios": [0.9, 1.0] + [1.0] * len(cols)},
    )
    for r, (name, ds) in enumerate(rows):
        imgs = to_tensor(ds.load_images()).permute(0, 2, 3, 1).numpy()
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].text(1.0, 0.5, name, ha="right", va="center", fontsize=8, transform=axes[r, 0].transAxes)
        if r == 0:
            axes[r, 1].imshow(imgs[0])
            axes[r, 1].set_title("input", fontsize=7)
        for c, idx in enumerate(cols):
            ax = axes[r, c + 2]
            ax.imshow(imgs[idx])
            if r == 0:
                ax.set_title(f"{az[idx]:.0f}°", fontsize=7)
    fig.suptitle(object_dir.name, fontsize=8)
    _save(fig, path)


def per_view_curves(metrics: Mapping[str, Any], path: Path) -> None:
    """Per-view metrics over azimuth (mean over objects) for the novel views, one panel per metric."""
    plt = _plt()
    objs = list(metrics["objects"].values())
    az = np.asarray(objs[0]["azimuth_deg"])
    present = [m for m in VIEW_METRICS if m in objs[0]["methods"][metrics["methods"][0]]["per_view"]]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        for method in metrics["methods"]:
            vals = np.array(
                [
                    [np.nan if v is None else v for v in o["methods"][method]["per_view"][metric]]
                    for o in objs
                ],
                float,
            )
            # Frame 0 is the input view: its scores (PSNR up to the 100 dB cap for "copy") would
            # flatten the curves of the views that matter.
            vals = vals[:, 1:]
            mean = np.nanmean(vals, axis=0) if np.isfinite(vals).any() else np.full(len(az) - 1, np.nan)
            ax.plot(az[1:], mean, marker=".", label=method)
        ax.set_xlabel("azimuth of the novel view (deg)")
        ax.set_title(f"{_label(metric)} {_arrow(metric)}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def histograms(metrics: Mapping[str, Any], path: Path) -> None:
    """Histograms of per-object novel-view scores, one panel per metric."""
    plt = _plt()
    objs = list(metrics["objects"].values())
    present = [
        m
        for m in ("psnr", "ssim", "lpips", "mask_iou")
        if m in objs[0]["methods"][metrics["methods"][0]]["novel"]
    ]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], present, strict=True):
        data = {
            meth: [
                o["methods"][meth]["novel"][metric]
                for o in objs
                if o["methods"][meth]["novel"].get(metric) is not None
            ]
            for meth in metrics["methods"]
        }
        values = (
            np.concatenate([np.asarray(v, float) for v in data.values() if v])
            if any(data.values())
            else np.zeros(1)
        )
        bins = np.linspace(values.min(), values.max() + 1e-9, 16)
        for meth, vals in data.items():
            ax.hist(vals, bins=bins, alpha=0.55, label=meth)
        ax.set_title(f"per-object {_label(metric)} {_arrow(metric)}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def write_report(
    metrics: Mapping[str, Any], out_dir: str | Path, figures: bool = True, max_sheets: int = 12
) -> Path:
    """Write OUT/report.md (and OUT/figures/*.png when `figures`); returns the report path."""
    out_dir = Path(out_dir)
    rel: list[str] = []
    if figures and metrics["objects"]:
        fig_dir = out_dir / "figures"
        per_view_curves(metrics, fig_dir / "per_view.png")
        histograms(metrics, fig_dir / "histogram.png")
        rel += ["figures/per_view.png", "figures/histogram.png"]
        for oid in list(metrics["objects"])[:max_sheets]:
            name = f"sheet_{safe_id(oid)}.png"
            contact_sheet(out_dir / "objects" / safe_id(oid), list(metrics["methods"]), fig_dir / name)
            rel.append(f"figures/{name}")
    path = out_dir / "report.md"
    atomic_write_text(path, render_markdown(metrics, rel))
    return path
