"""bench/ runs as modules (`python -m bench.X`) over one small harness: environment capture and a stage timer."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import bench
from bench.harness import StageTimer, environment


class _Module:
    def forward(self, x):
        return x + 1


class _VAE:
    def encode(self, x):
        return x * 2

    def decode(self, x):
        return x - 1


def test_stage_timer_wraps_and_restores_the_methods():
    enc, vae = _Module(), _VAE()
    with StageTimer({"image_encoder": enc, "vae": vae}) as timer:
        assert enc.forward(1) == 2 and vae.encode(3) == 6 and vae.decode(5) == 4
    assert [name for name, _, _ in timer.events] == ["clip", "vae_encode", "vae_decode"]
    assert "forward" not in vars(enc) and "encode" not in vars(vae)  # the class's methods are back
    stages = timer.stages()
    assert set(stages) == {"clip", "vae_encode", "vae_decode", "unet", "total"}
    assert all(v >= 0 for v in stages.values()) and stages["total"] >= stages["clip"]
    assert set(timer.totals()) == {"clip", "vae_encode", "vae_decode"}


def test_environment_names_the_machine_and_versions():
    env = environment()
    assert env["cpu_count"] >= 1 and env["threads"] >= 1
    assert {"python", "torch", "numpy"} <= set(env["versions"])
    assert env["date_utc"][:2] == "20" and env["command"].startswith("python")


def test_every_benchmark_imports_as_a_module_without_path_patching():
    names = [m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])]
    assert "harness" in names and "render_throughput" in names
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        assert "sys.path.insert" not in Path(module.__file__).read_text()
