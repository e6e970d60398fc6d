"""ncnn's look for a Vulkan GPU (``backends.ncnn.gpu_count``), and what
precision it is asked for."""

from __future__ import annotations

import platform
import subprocess
import sys

import ncnn
import numpy as np

from upscayl_cloud.engine.backends.ncnn import FP16_OPTIONS, NcnnNetwork
from upscayl_cloud.engine.networks import NETWORKS

SCRIPT = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="%(levelname)s %(message)s")
from upscayl_cloud.engine.backends.ncnn import gpu_count
print("count", gpu_count(), gpu_count())
"""


def test_the_gpu_probe_writes_to_the_log_not_to_stderr() -> None:
    """A fresh process, so ncnn looks for Vulkan here for the first time:
    on a machine without it, its nine "dlopen failed" lines must not reach
    the terminal as if something had gone wrong."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr == ""
    count = int(done.stdout.split("count ")[1].split()[0])
    assert f"count {count} {count}" in done.stdout
    if count == 0:
        assert "DEBUG ncnn: " in done.stdout
        assert "INFO ncnn sees no Vulkan GPU" in done.stdout


def test_fp32_asked_for_switches_fp16_off_and_changes_nothing_on_x86() -> None:
    """fp32 switches off ncnn's fp16 options (they matter on a Vulkan GPU,
    checked by bench/gpu_check.py --precisions auto,fp32, and on ARM CPUs);
    an x86 CPU computes in fp32 either way: its answers stay the same to
    the bit."""
    spec = NETWORKS["span-x2-ch48"]
    chw = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
    auto = NcnnNetwork(spec, threads=2, use_gpu=False)
    fp32 = NcnnNetwork(spec, threads=2, use_gpu=False, precision="fp32")
    assert fp32.device == auto.device and "fp32" in fp32.device
    if platform.machine() in ("x86_64", "AMD64"):
        assert np.array_equal(fp32.run(chw), auto.run(chw))
    assert not any(getattr(fp32._net.opt, name) for name in FP16_OPTIONS)
    assert all(getattr(ncnn.Net().opt, name) for name in FP16_OPTIONS)  # ncnn's defaults
