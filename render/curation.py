"""Curation: which objects are fit to train on, and why the others were dropped.

The SVD paper's finding is that data curation decides the quality of the finetuned model; SV3D and
its successors drop Objaverse objects that are non-permissively licensed, animated, tiny in the frame,
flat, or badly framed. Three checks run at three moments of a render job, each returning `None`
(keep) or a short reason that starts with the filter's name:

- `check_source(src, cfg)`: before loading, from the source's metadata (Objaverse annotations):
  `licence: by-nc`, `faces: 3000000 > 500000` (annotated count), `animated: 2 animations`.
- `check_mesh(mesh, cfg)`: after loading: `faces: 8 < 12`, `animated: ...`, `multi-scene: 3 scenes`
  (from the glTF header of GLB/glTF files), `flat: thickness 0.004 < 0.01`.
- `check_renders(rgba, cfg)`: after rendering the orbit: `empty: view 3 has no opaque pixel`,
  `tiny: silhouette covers 0.2% < 1%`, `cropped: silhouette touches the image border in view 5`,
  `off-centre: silhouette centre 0.21 from the image centre > 0.15`, `flat: ...`.

The job records the reason (or None) per object in its manifest; `summarize` counts what each filter
removed. Every threshold is a `CurationConfig` field; a filter is disabled by setting its field to
None (or an empty/false value, as documented per field).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from render.common import InputError

if TYPE_CHECKING:
    from render.meshes import LoadedMesh
    from render.sources import ObjectSource

# Creative Commons licences that allow commercial use and derivatives (Objaverse's licence codes).
PERMISSIVE_LICENCES = ("cc0", "by", "by-sa")
ALL_CC_LICENCES = ("cc0", "by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
FILTERS = ("licence", "faces", "animated", "multi-scene", "flat", "empty", "tiny", "cropped", "off-centre")


@dataclass
class CurationConfig:
    """Thresholds of the curation filters. `None` disables a numeric filter.

    Attributes:
        licences: licence codes accepted (lower case, Objaverse's: cc0, by, by-sa, by-nd, by-nc,
            by-nc-sa, by-nc-nd). Default: the CC licences that allow commercial use and derivatives.
            None accepts every licence.
        require_licence: reject sources whose metadata has no licence at all. The user's own files
            carry no licence key and are only rejected when this is True; an Objaverse object whose
            annotation lacks one (`licence: None`) is rejected whenever `licences` is set.
        min_faces, max_faces: bounds on the triangle count (annotated count before loading, the
            loaded scene's count after).
        reject_animated: drop objects with animations or skins.
        reject_multi_scene: drop glTF files that hold more than one scene (only one would be rendered).
        min_thickness: smallest extent over largest extent of the normalised object's bounding box;
            below it the object is a plane (a floor, a picture, a scan of terrain).
        min_coverage: smallest fraction of the image the silhouette may cover, mean over views.
        alpha_threshold: alpha (0-255) above which a pixel belongs to the silhouette.
        max_centre_offset: largest distance of the silhouette's bounding-box centre from the image
            centre, as a fraction of the image size, in any view.
        reject_cropped: drop objects whose silhouette touches the image border in any view.
        min_view_coverage_ratio: smallest ratio of the least to the most covered view; a plane seen
            edge-on in some views falls below it.
        min_silhouette_thinness: the silhouette's thinness is sqrt(l2 / l1) of its second moments
            (1 for a disc, 0 for a line); an object thin in *every* view is flat (a horizontal sheet
            seen from a low elevation) or a stick.
    """

    licences: tuple[str, ...] | None = PERMISSIVE_LICENCES
    require_licence: bool = False
    min_faces: int | None = 12
    max_faces: int | None = 500_000
    reject_animated: bool = True
    reject_multi_scene: bool = True
    min_thickness: float | None = 0.01
    min_coverage: float | None = 0.01
    alpha_threshold: int = 127
    max_centre_offset: float | None = 0.15
    reject_cropped: bool = True
    min_view_coverage_ratio: float | None = 0.05
    min_silhouette_thinness: float | None = 0.08

    @classmethod
    def disabled(cls) -> CurationConfig:
        """A config that keeps everything."""
        return cls(
            licences=None,
            require_licence=False,
            min_faces=None,
            max_faces=None,
            reject_animated=False,
            reject_multi_scene=False,
            min_thickness=None,
            min_coverage=None,
            max_centre_offset=None,
            reject_cropped=False,
            min_view_coverage_ratio=None,
            min_silhouette_thinness=None,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["licences"] is not None:
            d["licences"] = list(d["licences"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurationConfig:
        """Inverse of `to_dict`; unknown keys are an `InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"unknown curation setting(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}"
            )
        data = dict(data)
        if data.get("licences") is not None:
            data["licences"] = tuple(str(x).lower() for x in data["licences"])
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        """`InputError` for a threshold out of its range (max_faces=-1 or min_coverage=2 rejected
        every object, each with a reason that hid the typo)."""
        fractions = (
            "min_thickness",
            "min_coverage",
            "max_centre_offset",
            "min_view_coverage_ratio",
            "min_silhouette_thinness",
        )
        for name in fractions:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(
                    f"bad curation setting {name}={value}: expected a fraction in [0, 1] or 'none'"
                )
        for name in ("min_faces", "max_faces"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"bad curation setting {name}={value}: expected a face count >= 0 or 'none'")
        if self.min_faces is not None and self.max_faces is not None and self.min_faces > self.max_faces:
            raise InputError(
                f"bad curation settings min_faces={self.min_faces} max_faces={self.max_faces}: "
                "expected min_faces <= max_faces"
            )
        if not 0 <= self.alpha_threshold < 255:
            raise InputError(
                f"bad curation setting alpha_threshold={self.alpha_threshold}: expected an alpha in [0, 254]"
            )

    @classmethod
    def from_cli(
        cls, overrides: list[str] | None = None, base: CurationConfig | None = None
    ) -> CurationConfig:
        """Apply `KEY=VALUE` overrides (e.g. from repeated `--curation` options) to `base`.

        Values: integers and floats as written; `none`/`off` disables a filter; `true`/`false` for
        switches; `licences=cc0,by` (or `licences=any`). The special item `off` disables everything
        (then later items re-enable single filters).
        """
        cfg = dataclasses.replace(base) if base is not None else cls()
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for item in overrides or []:
            if item.strip().lower() in ("off", "none"):
                cfg = cls.disabled()
                continue
            key, eq, value = item.partition("=")
            key, value = key.strip().replace("-", "_"), value.strip()
            if not eq or key not in types:
                raise InputError(
                    f"bad curation setting {item!r}; expected KEY=VALUE with KEY one of {', '.join(sorted(types))}, or 'off'"
                )
            setattr(cfg, key, _parse_value(item, key, value, str(types[key])))
        return cfg


def _parse_value(item: str, key: str, value: str, type_name: str) -> Any:
    low = value.lower()
    if key == "licences":
        if low in ("any", "all", "none", "off"):
            return None
        return tuple(v.strip().lower() for v in value.split(",") if v.strip())
    if "bool" in type_name:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", "none"):
            return False
        raise InputError(f"bad curation setting {item!r}: expected true or false")
    if low in ("none", "off") and "None" in type_name:
        return None
    try:
        return int(value) if "int" in type_name else float(value)
    except ValueError:
        kind = "an integer" if "int" in type_name else "a number"
        raise InputError(f"bad curation setting {item!r}: expected {kind} or 'none'") from None


# --------------------------------------------------------------------------------------------------
# Before loading
# --------------------------------------------------------------------------------------------------


def check_source(src: ObjectSource, cfg: CurationConfig) -> str | None:
    """Reject from metadata alone (cheap: nothing is loaded or downloaded)."""
    meta = src.meta or {}
    if cfg.licences is not None and ("licence" in meta or cfg.require_licence):
        licence = meta.get("licence")
        if licence is None:
            return "licence: unknown"
        if str(licence).lower() not in cfg.licences:
            return f"licence: {licence}"
    faces = meta.get("face_count")
    if isinstance(faces, (int, float)):
        reason = _face_bounds(int(faces), cfg)
        if reason:
            return reason
    animations = meta.get("animation_count")
    if cfg.reject_animated and isinstance(animations, (int, float)) and animations > 0:
        return f"animated: {int(animations)} animation(s)"
    return None


def _face_bounds(n: int, cfg: CurationConfig) -> str | None:
    if cfg.min_faces is not None and n < cfg.min_faces:
        return f"faces: {n} < {cfg.min_faces}"
    if cfg.max_faces is not None and n > cfg.max_faces:
        return f"faces: {n} > {cfg.max_faces}"
    return None


# --------------------------------------------------------------------------------------------------
# After loading
# --------------------------------------------------------------------------------------------------


def gltf_header(path: str | Path) -> dict | None:
    """The JSON part of a GLB or glTF file, read without loading buffers; None if not glTF/unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".gltf":
            return json.loads(path.read_text(encoding="utf-8"))
        if path.suffix.lower() != ".glb":
            return None
        with open(path, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20 or head[:4] != b"glTF":
                return None
            chunk_len, chunk_type = struct.unpack("<II", head[12:20])
            if chunk_type != 0x4E4F534A or chunk_len > 256 * 1024 * 1024:  # b"JSON"
                return None
            return json.loads(fh.read(chunk_len).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def scene_face_count(scene: Any) -> int:
    """Triangles drawn by a trimesh Scene (instances counted) or Trimesh; point clouds count 0."""
    if hasattr(scene, "graph"):
        total = 0
        for node in scene.graph.nodes_geometry:
            _, geom_name = scene.graph[node]
            faces = getattr(scene.geometry.get(geom_name), "faces", None)
            total += 0 if faces is None else len(faces)
        return total
    faces = getattr(scene, "faces", None)
    return 0 if faces is None else len(faces)


def check_mesh(mesh: LoadedMesh, cfg: CurationConfig) -> str | None:
    """Reject from the loaded, normalised object: face bounds, animation, several scenes, flatness."""
    reason = _face_bounds(scene_face_count(mesh.scene), cfg)
    if reason:
        return reason
    header = gltf_header(mesh.source) if isinstance(mesh.source, (str, Path)) else None
    if header is not None:
        if cfg.reject_animated:
            if header.get("animations"):
                return f"animated: {len(header['animations'])} animation(s)"
            if header.get("skins"):
                return f"animated: {len(header['skins'])} skin(s)"
        scenes = header.get("scenes") or []
        if cfg.reject_multi_scene and len(scenes) > 1:
            return f"multi-scene: {len(scenes)} scenes"
    if cfg.min_thickness is not None:
        bounds = np.asarray(mesh.scene.bounds, dtype=np.float64)
        extents = bounds[1] - bounds[0]
        if extents.max() > 0:
            thickness = float(extents.min() / extents.max())
            if thickness < cfg.min_thickness:
                return f"flat: thickness {thickness:.4f} < {cfg.min_thickness:g}"
    return None


# --------------------------------------------------------------------------------------------------
# After rendering
# --------------------------------------------------------------------------------------------------


def silhouette_stats(rgba: np.ndarray, alpha_threshold: int = 127) -> dict[str, np.ndarray]:
    """Per-view silhouette measures of (N, H, W, 4) uint8 renders.

    Returns a dict of (N,) arrays: `coverage` (fraction of pixels), `offset` (distance of the mask's
    bounding-box centre from the image centre, in image sizes; nan for empty views), `touches_border`
    (bool), `thinness` (sqrt of the ratio of the mask's second-moment eigenvalues; nan if empty).
    """
    rgba = np.asarray(rgba)
    if rgba.ndim == 3:
        rgba = rgba[None]
    if rgba.ndim != 4 or rgba.shape[-1] != 4:
        raise ValueError(f"expected (N, H, W, 4) RGBA renders, got shape {rgba.shape}")
    n, h, w, _ = rgba.shape
    masks = rgba[..., 3] > alpha_threshold
    coverage = masks.reshape(n, -1).mean(1)
    offset = np.full(n, np.nan)
    thinness = np.full(n, np.nan)
    border = np.zeros(n, dtype=bool)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        cx = (xs.min() + xs.max() + 1) / 2 / w - 0.5
        cy = (ys.min() + ys.max() + 1) / 2 / h - 0.5
        offset[i] = float(np.hypot(cx, cy))
        border[i] = bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
        if len(xs) >= 3:
            cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0  # pixel extent
            ev = np.linalg.eigvalsh(cov)
            thinness[i] = float(np.sqrt(max(ev[0], 0.0) / ev[1]))
        else:
            thinness[i] = 0.0
    return {"coverage": coverage, "offset": offset, "touches_border": border, "thinness": thinness}


def check_renders(rgba: np.ndarray, cfg: CurationConfig) -> str | None:
    """Reject from the rendered orbit (N, H, W, 4) uint8, straight alpha: empty or tiny silhouette,
    silhouette cut by the border or off-centre, flat object."""
    s = silhouette_stats(rgba, cfg.alpha_threshold)
    cov = s["coverage"]
    empty = np.nonzero(cov == 0)[0]
    if len(empty):
        return f"empty: view {int(empty[0])} has no opaque pixel"
    if cfg.min_coverage is not None and cov.mean() < cfg.min_coverage:
        return f"tiny: silhouette covers {100 * cov.mean():.2f}% < {100 * cfg.min_coverage:g}%"
    if cfg.reject_cropped and s["touches_border"].any():
        return f"cropped: silhouette touches the image border in view {int(np.argmax(s['touches_border']))}"
    if cfg.max_centre_offset is not None and np.nanmax(s["offset"]) > cfg.max_centre_offset:
        i = int(np.nanargmax(s["offset"]))
        return (
            f"off-centre: silhouette centre {s['offset'][i]:.3f} of the image size from the image centre "
            f"in view {i} > {cfg.max_centre_offset:g}"
        )
    if cfg.min_view_coverage_ratio is not None and len(cov) > 1:
        ratio = float(cov.min() / cov.max())
        if ratio < cfg.min_view_coverage_ratio:
            return (
                f"flat: least/most covered view {ratio:.3f} < {cfg.min_view_coverage_ratio:g} (seen edge-on)"
            )
    if cfg.min_silhouette_thinness is not None:
        thin = float(np.nanmax(s["thinness"]))
        if thin < cfg.min_silhouette_thinness:
            return f"flat: silhouette thinness {thin:.3f} < {cfg.min_silhouette_thinness:g} in every view"
    return None


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def filter_name(reason: str) -> str:
    """The filter a reason comes from: the text before the first ':'."""
    return reason.split(":", 1)[0].strip()


def summarize(reasons: list[str | None]) -> dict[str, Any]:
    """What each filter removed: `{"total", "kept", "rejected", "by_filter": {name: count}}`.

    `by_filter` lists filters in decreasing count (ties by name), so the report reads top-down.
    """
    counts = Counter(filter_name(r) for r in reasons if r)
    by_filter = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    rejected = sum(counts.values())
    return {
        "total": len(reasons),
        "kept": len(reasons) - rejected,
        "rejected": rejected,
        "by_filter": by_filter,
    }


__all__ = [
    "ALL_CC_LICENCES",
    "FILTERS",
    "PERMISSIVE_LICENCES",
    "CurationConfig",
    "check_mesh",
    "check_renders",
    "check_source",
    "gltf_header",
    "scene_face_count",
    "silhouette_stats",
    "summarize",
]
