"""The settings of one `mv3d generate` run, as one typed object from the CLI (or Python) to the pipeline.

    settings = GenerateSettings(views=21, seed=0, sampler="heun", steps=10)
    settings.build_orbit()          # the cameras
    settings.sampling()             # the keyword arguments of `MultiViewPipeline.__call__`

Bad values raise `SettingError`, which names the field (``views 0: expected ...``); the CLI maps fields
to its flags (``--views``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from render.cameras import DEFAULT_ELEVATION_DEG, Orbit, dynamic_orbit, static_orbit
from render.common import MAX_ENSEMBLE, MAX_SEED, MAX_STEPS, InputError

__all__ = [
    "DEFAULT_GUIDANCE",
    "DEFAULT_MAX_GUIDANCE",
    "DEFAULT_MIN_GUIDANCE",
    "DEFAULT_SAMPLER",
    "GenerateSettings",
    "ORBIT_KINDS",
    "SettingError",
    "build_orbit",
]

ORBIT_KINDS = ("static", "dynamic")
#: Sampling defaults (SV3D's reference): Euler, per-frame triangle guidance from 1.0 to 2.5.
DEFAULT_SAMPLER = "euler"
DEFAULT_GUIDANCE = "triangle"
DEFAULT_MIN_GUIDANCE = 1.0
DEFAULT_MAX_GUIDANCE = 2.5


class SettingError(InputError):
    """A bad value of a named setting: ``field value: expectation``.

    Attributes:
        field: the settings field ("views", "min_guidance", "device", ...); a command line names its flag.
        value: the value given.
        expectation: what was expected.
        mentions: settings its remedy names as the Python call spells them (`overwrite=True`).
    """

    def __init__(self, field: str, value: Any, expectation: str, mentions: tuple[str, ...] = ()):
        super().__init__(f"{field} {value}: {expectation}", field=field, mentions=mentions)
        self.value, self.expectation = value, expectation

    def renamed(self, name: str) -> InputError:
        """The same error with the field called `name` (e.g. the CLI flag ``--views``); the settings its
        remedy mentions stay `mentions`."""
        return InputError(f"{name} {self.value}: {self.expectation}", mentions=self.mentions)


def _whole(field: str, value: Any, minimum: int, what: str, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SettingError(field, value, f"expected {what}")
    if maximum is not None and value > maximum:
        raise SettingError(field, value, f"expected {what}")


def build_orbit(
    orbit: str | Path | Orbit = "static",
    views: int = 21,
    elevation: float = DEFAULT_ELEVATION_DEG,
    seed: int = 0,
) -> Orbit:
    """The cameras to generate: "static", "dynamic" (seeded), an `Orbit`, or a JSON file (`Orbit.to_dict`).

    A JSON orbit's own view count and elevations win over `views` and `elevation`.
    """
    if isinstance(orbit, Orbit):
        return orbit
    _whole("views", views, 1, "a positive whole number of views")
    if not -90.0 <= float(elevation) <= 90.0:
        raise SettingError("elevation", elevation, "expected degrees in [-90, 90]")
    if str(orbit) == "static":
        return static_orbit(views, float(elevation))
    if str(orbit) == "dynamic":
        return dynamic_orbit(views, float(elevation), seed=seed)
    path = Path(orbit)
    if path.suffix.lower() != ".json":
        raise SettingError("orbit", orbit, "expected static, dynamic or a .json orbit file")
    if not path.is_file():
        raise SettingError("orbit", orbit, "orbit file does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingError("orbit", orbit, f"not valid JSON ({exc})") from exc
    return Orbit.from_dict(data, source=str(path))


@dataclass(frozen=True)
class GenerateSettings:
    """What to generate and how to sample it; checked on construction.

    Attributes:
        views: number of views in the orbit (frame 0 = the input view); a JSON orbit's own count wins.
        orbit: "static", "dynamic", a JSON orbit file or an `Orbit`.
        elevation: elevation of the input view, degrees.
        seed: same seed, same views on the same device (also seeds a dynamic orbit).
        steps: sampling steps (None: the model's).
        sampler: a name in ``video_prior.samplers.SAMPLERS``.
        guidance: per-view guidance schedule, a name in ``video_prior.guidance.GUIDANCE_KINDS``.
        min_guidance, max_guidance: the schedule's range (both 1: no guidance).
        ensemble: samples averaged into the views (None: the model's).
        mirror_average: draw half of the ensemble for the input mirrored left-right and flip it back
            (the pipeline's `mirror_average`; None: the model's).
        resolution: view side in pixels (None: the model's); a multiple of the model's latent grid,
            checked when the model is loaded.
    """

    views: int = 21
    orbit: str | Path | Orbit = "static"
    elevation: float = DEFAULT_ELEVATION_DEG
    seed: int = 0
    steps: int | None = None
    sampler: str = DEFAULT_SAMPLER
    guidance: str = DEFAULT_GUIDANCE
    min_guidance: float = DEFAULT_MIN_GUIDANCE
    max_guidance: float = DEFAULT_MAX_GUIDANCE
    ensemble: int | None = None
    mirror_average: bool | None = None
    resolution: int | None = None

    def __post_init__(self) -> None:
        from video_prior.guidance import GUIDANCE_KINDS
        from video_prior.samplers import SAMPLERS

        if not isinstance(self.orbit, Orbit):
            _whole("views", self.views, 1, "a positive whole number of views")
            if str(self.orbit) not in ORBIT_KINDS and Path(self.orbit).suffix.lower() != ".json":
                raise SettingError("orbit", self.orbit, "expected static, dynamic or a .json orbit file")
        if not -90.0 <= float(self.elevation) <= 90.0:
            raise SettingError("elevation", self.elevation, "expected degrees in [-90, 90]")
        _whole("seed", self.seed, 0, "a whole number from 0 to 2**63 - 1", MAX_SEED)
        if self.steps is not None:
            _whole("steps", self.steps, 1, f"a whole number from 1 to {MAX_STEPS}", MAX_STEPS)
        if self.ensemble is not None:
            _whole(
                "ensemble",
                self.ensemble,
                1,
                f"a whole number of samples from 1 to {MAX_ENSEMBLE}",
                MAX_ENSEMBLE,
            )
        if self.mirror_average is not None and not isinstance(self.mirror_average, bool):
            raise SettingError("mirror_average", self.mirror_average, "expected true or false")
        if self.sampler not in SAMPLERS:
            raise SettingError("sampler", self.sampler, f"expected one of {', '.join(sorted(SAMPLERS))}")
        if self.guidance not in GUIDANCE_KINDS:
            raise SettingError("guidance", self.guidance, f"expected one of {', '.join(GUIDANCE_KINDS)}")
        for name in ("min_guidance", "max_guidance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (np.isfinite(float(value)) and float(value) >= 0):
                raise SettingError(name, value, "expected a non-negative number")
            object.__setattr__(self, name, float(value))
        if self.resolution is not None:
            _whole("resolution", self.resolution, 16, "a whole number of pixels, at least 16")

    @classmethod
    def from_options(cls, **options: Any) -> GenerateSettings:
        """Settings from keyword options where None means "the default" (as a command line gives them)."""
        return cls().updated(**options)

    def updated(self, **options: Any) -> GenerateSettings:
        """A copy with the given fields replaced; None leaves a field as it is."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown generate settings {unknown}: expected some of {sorted(known)}")
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def build_orbit(self) -> Orbit:
        """The cameras of these settings (`build_orbit`)."""
        return build_orbit(self.orbit, self.views, self.elevation, self.seed)

    def sampling(self) -> dict[str, Any]:
        """The keyword arguments of `video_prior.pipeline.MultiViewPipeline.__call__` these settings fix
        (steps, ensemble and mirror_average None: the model's)."""
        return {
            "num_inference_steps": self.steps,
            "sampler": self.sampler,
            "guidance": self.guidance,
            "min_guidance": self.min_guidance,
            "max_guidance": self.max_guidance,
            "ensemble": self.ensemble,
            "mirror_average": self.mirror_average,
        }
