"""ncnn, Upscayl's own engine: the CPU, or a GPU through Vulkan.

Loading realesrgan-x4plus reads 33 MB and builds its layers, so each network
is loaded once per process and shared: ncnn's ``Net`` is safe to run from
several threads, each with its own ``Extractor``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping

import ncnn
import numpy as np

from upscayl_cloud.engine.backends.base import Network, cpu_device
from upscayl_cloud.engine.networks import NetworkSpec
from upscayl_cloud.engine.weights import locate

log = logging.getLogger(__name__)


#: What ncnn writes to the C stderr when it looks for Vulkan and finds none.
_NO_VULKAN = re.compile(r"dlopen failed|vulkan", re.IGNORECASE)

_gpu_lock = threading.Lock()


@functools.cache
def gpu_count() -> int:
    """Vulkan devices ncnn can use (0 where libvulkan or a GPU is missing).

    ncnn's first look for Vulkan prints nine lines ("dlopen failed
    libvulkan.so.1 ...") on the C stderr of every machine without a GPU
    driver, which read as errors at each start of a CPU-only server: they
    go to the log at debug level, and anything else written meanwhile (the
    GPUs ncnn found, another thread's output) at info. The count cannot
    change while a process runs, so it is asked once.
    """
    with _gpu_lock, _c_stderr_captured() as captured:
        count = int(ncnn.get_gpu_count())
    for line in captured.decode(errors="replace").splitlines():
        log.log(logging.DEBUG if _NO_VULKAN.search(line) else logging.INFO, "ncnn: %s", line)
    if not count:
        log.info("ncnn sees no Vulkan GPU: networks run on the CPU")
    return count


@contextlib.contextmanager
def _c_stderr_captured() -> Iterator[bytearray]:
    """What C code writes to file descriptor 2 meanwhile, instead of there."""
    captured = bytearray()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured += sink.read()


#: ncnn's options that let a GPU store, pack and compute in half precision.
FP16_OPTIONS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")


class NcnnNetwork(Network):
    backend = "ncnn"

    def __init__(
        self, spec: NetworkSpec, threads: int, use_gpu: bool, precision: str = "auto"
    ) -> None:
        super().__init__(spec)
        files = locate(spec.distribution, spec.stem)
        self._gpu = use_gpu and gpu_count() > 0
        self._threads = threads
        self._net = ncnn.Net()
        self._net.opt.num_threads = threads
        self._net.opt.use_vulkan_compute = self._gpu
        self._gpu_fp32 = self._gpu and precision == "fp32"
        if precision == "fp32":
            # ncnn stores and computes in fp16 wherever the device can (a
            # Vulkan GPU, as Upscayl runs it; ARM CPUs with fp16): fp32 asked
            # for is fp32 there too. On x86 CPUs it changes nothing.
            for option in FP16_OPTIONS:
                setattr(self._net.opt, option, False)
        # Our own pools, so their memory can be handed back between passes:
        # with ncnn's built-in ones every network keeps its peak (1.3 GB for
        # x4plus on a 160^2 tile) for as long as the process lives.
        self._blob_pool = ncnn.PoolAllocator()
        self._workspace_pool = ncnn.PoolAllocator()
        self._net.opt.blob_allocator = self._blob_pool
        self._net.opt.workspace_allocator = self._workspace_pool
        if self._net.load_param(str(files.param)) != 0 or self._net.load_model(str(files.bin)) != 0:
            raise RuntimeError(f"ncnn could not load {spec.key} from {files.param.parent}")
        log.info("loaded %s (ncnn, %s)", spec.key, self.device)

    @property
    def device(self) -> str:
        if self._gpu:
            return "Vulkan GPU, fp32" if self._gpu_fp32 else "Vulkan GPU, fp16"
        return cpu_device("fp32", self._threads)

    @property
    def on_gpu(self) -> bool:
        return self._gpu

    def release_memory(self) -> None:
        """Blocks in use by a call running in another thread are not affected."""
        self._blob_pool.clear()
        self._workspace_pool.clear()

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        # ncnn.Mat wraps the numpy buffer without copying it: every array
        # handed to the extractor must stay referenced until extract returns.
        arrays = {self.spec.input_blob: np.ascontiguousarray(chw, dtype=np.float32)}
        arrays.update(
            (name, np.ascontiguousarray(value, dtype=np.float32).reshape(-1))
            for name, value in injected.items()
        )
        mats = {name: ncnn.Mat(array) for name, array in arrays.items()}
        with self._net.create_extractor() as ex:
            for name, mat in mats.items():
                ex.input(name, mat)
            status, out = ex.extract(blob)
            result = np.array(out, copy=True)
        del mats, arrays
        if status != 0:
            raise RuntimeError(f"ncnn failed on {self.spec.key} at {blob} (status {status})")
        return result
