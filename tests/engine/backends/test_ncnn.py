"""ncnn's look for a Vulkan GPU (``backends.ncnn.gpu_count``)."""

from __future__ import annotations

import subprocess
import sys

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
