"""The reconstruction method "nerfstudio": hand the views to nerfstudio (an external tool) and read its mesh back.

An orbit dataset already is a nerfstudio dataset (transforms.json with OpenGL camera-to-world
matrices). The views are copied into a working folder with per-frame alpha masks (`mask_path`, which
nerfstudio's parser reads), then `ns-train nerfacto` and `ns-export poisson` run as subprocesses. The
dataparser is told not to re-centre, re-orient or re-scale the poses, so the exported mesh is already in
the dataset's world frame. nerfstudio is never a dependency of mv3d: it pulls 2.6 GB, numpy<2 and
torchvision, and wants CUDA, so it lives in its own environment whose `ns-train` is on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import trimesh

from render.common import InputError
from render.dataset import OrbitDataset
from render.images import load_rgba

INSTALL_HINT = (
    "nerfstudio is not installed (no 'ns-train' on PATH): install it in its own environment on a CUDA "
    "machine (pip install nerfstudio, see docs.nerf.studio) and put its bin folder on PATH, "
    "or use the method 'field'"
)


def available() -> bool:
    return shutil.which("ns-train") is not None and shutil.which("ns-export") is not None


def write_nerfstudio_dataset(ds: OrbitDataset, out_dir: Path) -> Path:
    """Copy the views of `ds` into `out_dir` as a nerfstudio dataset with alpha masks; returns out_dir."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "images").mkdir(exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    meta = json.loads(json.dumps(ds.meta))
    for i, (frame, path) in enumerate(zip(meta["frames"], ds.image_paths, strict=True)):
        rgba = load_rgba(path, (ds.intrinsics.width, ds.intrinsics.height))
        name = f"{i:03d}.png"
        Image.fromarray(rgba, "RGBA").save(out_dir / "images" / name)
        Image.fromarray(((rgba[..., 3] > 127) * 255).astype(np.uint8), "L").save(out_dir / "masks" / name)
        frame["file_path"] = f"images/{name}"
        frame["mask_path"] = f"masks/{name}"
    (out_dir / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise InputError(f"'{cmd[0]}' failed with exit code {proc.returncode}; its output is in {log}")


def nerfstudio_mesh(
    ds: OrbitDataset, work_dir: Path, iterations: int = 5000, device: str = "cuda"
) -> trimesh.Trimesh:
    """Train nerfacto on `ds` and export a Poisson mesh, in the dataset's world frame."""
    if not available():
        raise InputError(INSTALL_HINT)
    data = write_nerfstudio_dataset(ds, work_dir / "data")
    log = work_dir / "nerfstudio.log"
    runs = work_dir / "runs"
    _run(
        [
            "ns-train", "nerfacto",
            "--data", str(data),
            "--output-dir", str(runs),
            "--experiment-name", "mv3d",
            "--timestamp", "run",
            "--max-num-iterations", str(iterations),
            "--viewer.quit-on-train-completion", "True",
            "--pipeline.model.predict-normals", "True",
            "--pipeline.model.background-color", "white",
            "--machine.device-type", "cuda" if device.startswith("cuda") else device,
            "nerfstudio-data",
            "--orientation-method", "none",
            "--center-method", "none",
            "--auto-scale-poses", "False",
        ],
        log,
    )  # fmt: skip
    config = runs / "mv3d" / "nerfacto" / "run" / "config.yml"
    if not config.is_file():
        raise InputError(f"nerfstudio finished without writing {config}; see {log}")
    mesh_dir = work_dir / "mesh"
    _run(
        [
            "ns-export", "poisson",
            "--load-config", str(config),
            "--output-dir", str(mesh_dir),
            "--bounding-box-min", "-0.6", "-0.6", "-0.6",
            "--bounding-box-max", "0.6", "0.6", "0.6",
        ],
        log,
    )  # fmt: skip
    ply = mesh_dir / "poisson_mesh.ply"
    if not ply.is_file():
        raise InputError(f"nerfstudio's export wrote no {ply.name} in {mesh_dir}; see {log}")
    mesh = trimesh.load(ply, force="mesh", process=True)
    # nerfstudio maps world points p to scale * (T p) before training (identity here, as asked above,
    # but read back and undone so that a changed default cannot move the mesh).
    tf = runs / "mv3d" / "nerfacto" / "run" / "dataparser_transforms.json"
    if tf.is_file():
        info = json.loads(tf.read_text())
        m = np.eye(4)
        m[:3, :4] = np.asarray(info["transform"], float)
        m = np.diag([float(info.get("scale", 1.0))] * 3 + [1.0]) @ m
        mesh.apply_transform(np.linalg.inv(m))
    return mesh
