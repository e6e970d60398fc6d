"""ncnn, Upscayl's own engine: the CPU, or a GPU through Vulkan.

Loading realesrgan-x4plus reads 33 MB and builds its layers, so each network
is loaded once per process and shared: ncnn's ``Net`` is safe to run from
several threads, each with its own ``Extractor``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import ncnn
import numpy as np

from upscayl_cloud.engine.backends.base import Network, cpu_device
from upscayl_cloud.engine.networks import NetworkSpec
from upscayl_cloud.engine.weights import locate

log = logging.getLogger(__name__)


def gpu_count() -> int:
    """Vulkan devices ncnn can use (0 where libvulkan or a GPU is missing)."""
    return int(ncnn.get_gpu_count())


class NcnnNetwork(Network):
    backend = "ncnn"

    def __init__(self, spec: NetworkSpec, threads: int, use_gpu: bool) -> None:
        super().__init__(spec)
        files = locate(spec.distribution, spec.stem)
        self._gpu = use_gpu and gpu_count() > 0
        self._threads = threads
        self._net = ncnn.Net()
        self._net.opt.num_threads = threads
        self._net.opt.use_vulkan_compute = self._gpu
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
        return "Vulkan GPU, fp16" if self._gpu else cpu_device("fp32", self._threads)

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
