"""`mv3d generate`: one image in, an orbit of views (and a mesh) out.

    from mv3d.generate import GenerateSettings, generate
    generate(["chair.png"], "outputs/chair", GenerateSettings(views=21, seed=0), model="default")

The package has four parts:

* `settings`: `GenerateSettings`, the settings of a run as one checked object (orbit, seed, sampling),
  and `build_orbit`;
* `views`: `ViewGenerator`, a loaded model that maps one framed RGBA image and an orbit to N RGBA views
  (also used by `mv3d eval`), and `resolve_device`;
* `record`: the output folders, `run.json` and resuming finished images;
* `job`: `generate`, the image -> views -> mesh job.

The matte of generated views is the pipeline's (`video_prior.matte`).
"""

from __future__ import annotations

from mv3d.generate.job import (
    INPUT_SIDE,
    TRAINING_BACKGROUND,
    GenerateInterrupted,
    generate,
    turntable_gif,
)
from mv3d.generate.record import RUN_FILE, GenerateResult, output_dirs, versions
from mv3d.generate.settings import (
    DEFAULT_GUIDANCE,
    DEFAULT_MAX_GUIDANCE,
    DEFAULT_MIN_GUIDANCE,
    DEFAULT_SAMPLER,
    ORBIT_KINDS,
    GenerateSettings,
    SettingError,
    build_orbit,
)
from mv3d.generate.views import DTYPES, ViewGenerator, resize_rgba, resolve_device
from video_prior.matte import ALPHA_HIGH, ALPHA_LOW, alpha_from_background, unmix_background

__all__ = [
    "ALPHA_HIGH",
    "ALPHA_LOW",
    "DEFAULT_GUIDANCE",
    "DEFAULT_MAX_GUIDANCE",
    "DEFAULT_MIN_GUIDANCE",
    "DEFAULT_SAMPLER",
    "DTYPES",
    "GenerateInterrupted",
    "GenerateResult",
    "GenerateSettings",
    "INPUT_SIDE",
    "ORBIT_KINDS",
    "RUN_FILE",
    "SettingError",
    "TRAINING_BACKGROUND",
    "ViewGenerator",
    "alpha_from_background",
    "build_orbit",
    "generate",
    "output_dirs",
    "resize_rgba",
    "resolve_device",
    "turntable_gif",
    "unmix_background",
    "versions",
]
