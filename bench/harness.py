"""What every benchmark shares: the machine it ran on, and wall time per pipeline stage.

Benchmarks are modules run from the repository root (`python -m bench.render_throughput`); each writes
its measured figures to `bench/results/` (JSON, sometimes Markdown) together with `environment()`, so a
number always says where, when and by which command it was measured.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from typing import Any

from render.common import versions


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(cuda: bool | None = None) -> str:
    """The GPU's name when `cuda` (default: when torch sees one), else the CPU's."""
    import torch

    if cuda is None:
        cuda = torch.cuda.is_available()
    return torch.cuda.get_device_name(0) if cuda else cpu_model()


def command() -> str:
    """The command line that is running, as typed from the repository root (`python -m bench.X ARGS`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", *sys.argv[:1]]
    return shlex.join([*head, *sys.argv[1:]])


def environment() -> dict[str, Any]:
    """Where, when and how a measurement was taken: date (UTC), command, device, cores, threads, load,
    platform and package versions."""
    import torch

    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "command": command(),
        "device": device_name(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "versions": versions(),
    }


class StageTimer:
    """Wall time of CLIP, VAE encode, UNet steps and VAE decode inside one pipeline call.

    CLIP and the VAE are timed by wrapping the image encoder's forward and the VAE's encode/decode; the
    UNet stage is the time between the end of the last VAE encode and the start of the first decode
    (the sampling loop, sampler arithmetic included), which also works for a compiled UNet. On CUDA every
    boundary synchronises, so a stage's time is its kernels' time.

    Args:
        comps: {"image_encoder": module, "vae": module} (more keys are ignored).
        cuda: synchronise CUDA at every boundary.
    """

    def __init__(self, comps: dict[str, Any], cuda: bool = False):
        self.comps, self.cuda, self.events = comps, cuda, []
        self._saved: list[tuple[object, str, object]] = []

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _wrap(self, obj: object, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        def timed(*a, **kw):
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._sync()
                self.events.append((name, t0, time.perf_counter()))

        self._saved.append((obj, attr, fn))
        setattr(obj, attr, timed)

    def __enter__(self) -> StageTimer:
        self.events = []
        self._wrap(self.comps["image_encoder"], "forward", "clip")
        self._wrap(self.comps["vae"], "encode", "vae_encode")
        self._wrap(self.comps["vae"], "decode", "vae_decode")
        self._sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.t1 = time.perf_counter()
        for obj, attr, _ in self._saved:
            delattr(obj, attr)  # back to the class's method
        self._saved = []

    def totals(self) -> dict[str, float]:
        """Seconds in CLIP, VAE encode and VAE decode (the wrapped calls only)."""
        s = {name: 0.0 for name in ("clip", "vae_encode", "vae_decode")}
        for name, a, b in self.events:
            s[name] += b - a
        return s

    def stages(self) -> dict[str, float]:
        """`totals` plus the UNet stage (last encode end to first decode start) and the whole call."""
        s = self.totals()
        enc_end = max(b for n, _, b in self.events if n == "vae_encode")
        dec_start = min(a for n, a, _ in self.events if n == "vae_decode")
        s["unet"] = dec_start - enc_end
        s["total"] = self.t1 - self.t0
        return s


#: Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, for a GPU's compute floor. The
#: first key found in the device name wins: PCIe and NVL cards come before their SXM namesakes.
BF16_DENSE_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "4090": 165.0,
}


def datasheet_peak_tflops(device_name: str) -> float | None:
    """The datasheet bf16 dense peak of the GPU `device_name` names (`BF16_DENSE_PEAK_TFLOPS`), or None."""
    return next((v for k, v in BF16_DENSE_PEAK_TFLOPS.items() if k in device_name), None)
