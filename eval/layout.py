"""What metrics.json holds and where an eval run keeps each object: names the runner, the report and
`compare` share (their own module, so that none of the three imports another for them).
"""

from __future__ import annotations

import hashlib
import re

#: Version of the metrics.json layout.
METRICS_FORMAT = 1

#: Aggregate key of meshes reconstructed from the ground-truth views (the reconstruction's ceiling).
GT_VIEWS = "gt-views"

#: Metric name -> True when higher is better. The report and `compare` read directions from here.
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "clip_s": True,
    "mask_iou": True,
    "reproj_err": False,
    "reproj_self": False,
    "chamfer": False,
    "volume_iou": True,
    "normal_consistency": True,
}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric (f_score@t is higher-better)."""
    return HIGHER_IS_BETTER.get(metric, True) if not metric.startswith("f_score") else True


def safe_id(object_id: str) -> str:
    """A folder name for an object id (specs contain ':' and '/')."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(object_id)).strip("._")
    return s or hashlib.sha1(str(object_id).encode()).hexdigest()[:12]
