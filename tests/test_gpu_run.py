"""bench.gpu_run: the prepared GPU run's dry run, as the GPU machine will invoke it, and its report.

The dry run is the same command line with --dry-run, run with only the packages of the GPU machine's
image and the carried wheels (bench/gpu_wheels.txt) importable, so that a missing wheel fails here
rather than in the few minutes of GPU time.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch  # noqa: F401 - imported once here rather than in every forked part

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_run  # noqa: E402

#: The Python distributions of the GPU machine's image (CPython 3.12 with torch 2.11, transformers 5,
#: accelerate, numpy 2, ...), as listed for it in 2026-11. Anything else must travel as a wheel.
DEVICE_IMAGE = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()

#: Makes every installed distribution that the GPU machine would not have unimportable (sys.modules
#: entry None: `import` fails and importlib.util.find_spec reports it absent, as on that machine).
SITECUSTOMIZE = """
import importlib.metadata as _md
import re as _re
import sys as _sys

_ALLOWED = {allowed!r}


def _norm(name):
    return _re.sub(r"[-_.]+", "-", name).lower()


for _module, _dists in _md.packages_distributions().items():
    if not any(_norm(d) in _ALLOWED for d in _dists):
        _sys.modules.setdefault(_module, None)
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_distributions() -> set[str]:
    """DEVICE_IMAGE with what those packages require at the versions installed here (which differ from the
    machine's: huggingface-hub 2 needs httpx2, 1.x there does not), normalised names."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_norm(n) for n in DEVICE_IMAGE]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


def carried_wheels() -> list[str]:
    """Distribution names in bench/gpu_wheels.txt."""
    lines = (ROOT / "bench" / "gpu_wheels.txt").read_text().splitlines()
    return [
        re.split(r"[=<>~!; ]", line.strip())[0] for line in lines if line.strip() and not line.startswith("#")
    ]


def _numbers(obj, path=""):
    """(path, value) of every number in a JSON tree."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


@pytest.mark.slow
def test_dry_run_as_invoked_on_the_device(tmp_path):
    """`python -m bench.gpu_run OUT --dry-run` from the repository root, with the device's packages only:
    every part ok, the report's figures numeric, only the two report files in OUT."""
    site = tmp_path / "site"
    site.mkdir()
    allowed = device_distributions() | {_norm(n) for n in [*carried_wheels(), "mv3d"]}
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(allowed=sorted(allowed)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "bench.gpu_run", str(out), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_run.json", "gpu_run.md"]
    report = json.loads((out / "gpu_run.json").read_text())
    assert report["schema"] == gpu_run.SCHEMA and report["dry_run"] is True
    assert list(report["parts"]) == list(gpu_run.PART_ORDER)
    for name, part in report["parts"].items():
        assert part["status"] == "ok", (name, part["errors"])
        assert part["results"], name
    # figures: every number finite; each generation row has all stages, a floor and a memory figure
    numbers = list(_numbers(report))
    assert numbers and all(math.isfinite(v) for _, v in numbers), [
        p for p, v in numbers if not math.isfinite(v)
    ]
    labels = {r["label"] for r in report["generation"]}
    assert labels == {
        "diffusers",
        "mv3d eager",
        "mv3d eager sv3d_p",
        "mv3d compile",
        "mv3d compile + CUDA graphs",
    }
    for row in report["generation"]:
        assert row["steps"] in (4, 2)
        assert set(row["stages_s"]) == {"clip", "vae_encode", "unet", "vae_decode", "total"}
        assert all(v >= 0 for v in row["stages_s"].values()) and row["total_s"] > 0
        assert row["floor_s"] > 0 and row["time_over_floor"] > 0 and row["peak_allocated_gib"] > 0
        if row["conditioning"] == "svd":
            assert row["speedup_vs_diffusers"] > 0
    assert [r["offload"] for r in report["low_memory"]] == ["none", "model", "sequential"]
    assert report["training"]["step_s_median"] > 0 and report["training"]["time_over_floor"] > 0
    assert report["mesh"]["second"]["faces"] > 0 and report["mesh"]["views"]["size"] == 64
    assert report["default_model"]["second"]["mesh"] is True
    assert set(report["goals"]) == set(gpu_run.GOALS)
    assert all(g["value"] is not None for g in report["goals"].values())
    md = (out / "gpu_run.md").read_text()
    assert md.startswith("**DRY RUN")
    for heading in (
        "## Parts",
        "## Generation",
        "## Low-memory modes",
        "## Training step",
        "## Mesh stage",
        "## Default model",
        "## Goals",
    ):
        assert heading in md
    assert md.count("| ok |") == len(gpu_run.PART_ORDER)


def _records(**over) -> dict[str, dict]:
    """Part records as the parts write them: FLOPs, a diffusers and an mv3d row, a low-memory run."""

    def row(label, steps, total, unet, cond="svd"):
        stages = {"clip": 0.1, "vae_encode": 0.2, "unet": unet, "vae_decode": 0.5, "total": total}
        return {
            "label": label,
            "conditioning": cond,
            "steps": steps,
            "stages_s": stages,
            "peak_allocated_gib": 20.0,
        }

    def mesh_call(wall):
        return {"wall_s": wall, "stages_s": {"field": wall - 1, "total": wall}, "faces": 100, "warnings": []}

    flops = {"svd": {"clip": 1e12, "vae_encode": 1e12, "unet_forward_cfg": 10e12, "vae_decode": 8e12}}
    recs = {
        "flops": {
            "status": "ok",
            "results": {"peak_tflops": 100.0, "generation": flops, "train_forward": 50e12},
        },
        "gen_eager": {
            "status": "ok",
            "results": {"runs": [row("diffusers", 50, 30.0, 28.0), row("mv3d eager", 50, 10.0, 9.0)]},
        },
        "gen_compile": {"status": "timeout", "results": {"runs": [row("mv3d compile", 50, 7.0, 5.2)]}},
        "lowmem": {
            "status": "partial",
            "results": {
                "runs": [
                    {**row("model offload", 25, 9.0, 8.0), "offload": "model", "peak_allocated_gib": 10.0},
                    {**row("no offload", 25, 5.0, 4.0), "offload": "none", "peak_allocated_gib": 4.0},
                ]
            },
        },
        "train": {"status": "ok", "results": {"step_s_median": 3.0}},
        "mesh": {"status": "ok", "results": {"first": mesh_call(9.0), "second": mesh_call(4.0)}},
    }
    recs.update(over)
    return recs


def test_report_floor_ratios_and_goals():
    """floor = (CLIP + encode + steps x CFG forward + decode) / peak; a timed-out part's rows still count."""
    settings = gpu_run.Settings.full()
    report = gpu_run.build_report(_records(), settings, {"environment": {}})
    rows = {r["label"]: r for r in report["generation"]}
    floor = (1 + 1 + 10 * 50 + 8) / 100  # TFLOP / (TFLOP/s)
    assert rows["mv3d eager"]["floor_s"] == pytest.approx(floor)
    assert rows["mv3d compile"]["time_over_floor"] == pytest.approx(7.0 / floor)
    assert rows["mv3d compile"]["unet_over_floor"] == pytest.approx(5.2 / 5.0)
    assert rows["mv3d eager"]["speedup_vs_diffusers"] == pytest.approx(3.0)
    assert rows["diffusers"]["speedup_vs_diffusers"] == pytest.approx(1.0)
    assert (
        report["training"]["floor_s"] == pytest.approx(1.5) and report["training"]["time_over_floor"] == 2.0
    )
    g = report["goals"]
    assert g["floor_50"]["value"] == pytest.approx(7.0 / floor) and g["floor_50"]["met"] is False
    assert g["floor_50"]["source"] == "mv3d compile"
    assert g["vs_diffusers_50"]["value"] == pytest.approx(30.0 / 7.0) and g["vs_diffusers_50"]["met"] is True
    # the low-memory goal looks at the offload modes only: 10 GiB = 10.7 GB, under 12
    assert g["low_memory_peak"]["value"] == pytest.approx(10 * 2**30 / 1e9) and g["low_memory_peak"]["met"]
    assert g["mesh_stage"]["value"] == 4.0 and g["mesh_stage"]["met"] is True
    md = gpu_run.render_markdown(report)
    assert "| gen_compile | timeout |" in md and "3.00x" in md


def test_report_without_flops_or_parts_says_not_measured():
    boom = {"part": {"error": "PackageNotFoundError: no 'requests'\nTry: pip install | x"}}
    recs = _records(flops={"status": "failed", "results": {}, "errors": boom})
    del recs["mesh"]
    report = gpu_run.build_report(recs, gpu_run.Settings.full(), {"environment": {}})
    assert all("floor_s" not in r for r in report["generation"])
    assert report["goals"]["floor_50"]["met"] is None and report["goals"]["floor_50"]["value"] is None
    assert report["goals"]["mesh_stage"]["source"] == "not measured"
    assert report["goals"]["vs_diffusers_50"]["met"] is True  # needs no FLOP count
    md = gpu_run.render_markdown(report)
    assert "| flops | failed | – | – | part: PackageNotFoundError: no 'requests' Try: pip install / x |" in md


def _part_ok(settings, rec, work):
    rec.put("value", 1.0)


def _part_slow(settings, rec, work):
    rec.put("before", 2.0)
    rec.measure("skipped", lambda: rec.put("never", 0.0), min_left_s=1e6)
    time.sleep(60)


def _part_raises(settings, rec, work):
    rec.measure("guarded", lambda: 1 / 0)
    rec.put("after", 3.0)
    raise RuntimeError("the part broke")


def _part_dies(settings, rec, work):
    os._exit(7)


def test_parts_are_isolated_and_timed_out(tmp_path, monkeypatch):
    """A hang is killed at its budget keeping what it saved; a failed measurement, a raising part and a
    dying process do not stop the parts after them; a part the global budget cannot fit is skipped."""
    parts = {"flops": _part_slow, "gen_eager": _part_raises, "train": _part_dies, "mesh": _part_ok}
    monkeypatch.setattr(gpu_run, "PARTS", {**gpu_run.PARTS, **parts})
    monkeypatch.setattr(gpu_run, "KILL_GRACE_S", 0.5)
    budgets = {"flops": 2.0, "gen_eager": 30.0, "train": 30.0, "mesh": 30.0, "default_model": 30.0}
    settings = gpu_run.dataclasses.replace(
        gpu_run.Settings.dry(), budgets=budgets, budget_s=200.0, min_part_s=1.0
    )
    seen = []
    recs = gpu_run.run_parts(
        ["flops", "gen_eager", "train", "mesh"], settings, tmp_path, on_part=lambda r: seen.append(len(r))
    )
    assert recs["flops"]["status"] == "timeout" and recs["flops"]["results"] == {"before": 2.0}
    assert recs["flops"]["errors"]["skipped"]["error"].startswith("skipped:")
    assert recs["gen_eager"]["status"] == "failed" and recs["gen_eager"]["results"] == {"after": 3.0}
    assert "ZeroDivisionError" in recs["gen_eager"]["errors"]["guarded"]["error"]
    assert "the part broke" in recs["gen_eager"]["errors"]["part"]["error"]
    assert recs["train"]["status"] == "crashed" and "exit code 7" in recs["train"]["errors"]["part"]["error"]
    assert recs["mesh"]["status"] == "ok" and recs["mesh"]["results"] == {"value": 1.0}
    assert recs["default_model"]["status"] == "skipped"  # not asked for
    assert seen == [1, 2, 3, 4]  # the report is rewritten after every part that ran

    tight = gpu_run.dataclasses.replace(settings, budget_s=gpu_run.REPORT_RESERVE_S + 0.5)
    recs = gpu_run.run_parts(["mesh"], tight, tmp_path)
    assert recs["mesh"]["status"] == "skipped" and "no time left" in recs["mesh"]["notes"][0]


def test_bad_arguments_get_one_line_and_exit_2(tmp_path, capsys):
    assert gpu_run.main([str(tmp_path / "o"), "--parts", "gen_eager,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --parts") and "nope" in err and len(err.splitlines()) == 1
    (tmp_path / "file").write_text("x")
    assert gpu_run.main([str(tmp_path / "file"), "--dry-run"]) == 2
    assert "not a folder" in capsys.readouterr().err
    for bad in ("nope=10", "gen_cudagraphs=0", "gen_cudagraphs=ten", "gen_cudagraphs"):
        assert gpu_run.main([str(tmp_path / "o"), "--dry-run", "--part-budget", bad]) == 2
        assert capsys.readouterr().err.startswith(f"error: --part-budget {bad}:")
    assert not (tmp_path / "o").exists()


def test_part_budget_replaces_a_parts_own_limit(tmp_path, monkeypatch):
    # A stand-in part: forking a real one from this (threaded) test process can hang; the dry run as the
    # device invokes it is tested in its own process above.
    monkeypatch.setattr(gpu_run, "PARTS", {**gpu_run.PARTS, "default_model": _part_ok})
    out = tmp_path / "o"
    args = [str(out), "--dry-run", "--parts", "default_model", "--part-budget", "default_model=123"]
    assert gpu_run.main(args) == 0
    report = json.loads((out / "gpu_run.json").read_text())
    assert report["parts"]["default_model"]["budget_s"] == 123.0
    assert report["parts"]["default_model"]["status"] == "ok"


def test_a_part_runs_in_a_spawned_process_as_on_cuda(tmp_path, monkeypatch):
    """On CUDA each part is spawned (a forked one cannot use a driver its parent touched: seen on an H200);
    a spawned part imports everything itself, so the part must work from a fresh interpreter."""
    cuda = gpu_run.dataclasses.replace(gpu_run.Settings.dry(), device="cuda")
    assert gpu_run._start_method(cuda) == "spawn" and gpu_run._start_method(gpu_run.Settings.dry()) == "fork"
    monkeypatch.setattr(gpu_run, "_start_method", lambda settings: "spawn")
    settings = gpu_run.Settings.dry()
    rec = gpu_run.run_part("flops", settings, tmp_path, gpu_run.time.monotonic() + 120)
    assert rec["status"] == "ok", rec["errors"]
    assert rec["results"]
