"""One loaded ncnn network, shared by every caller in the process.

Loading realesrgan-x4plus reads 33 MB and builds its layers, so each network
is loaded once per process (``load_network``) and shared: ncnn's ``Net`` is
safe to run from several threads, each with its own ``Extractor``. Vulkan is
used when ncnn sees a GPU and the operator allows it; otherwise the CPU, with
as many threads as configured.

Some networks crash the whole process (a segmentation fault inside ncnn) when
called with a size they cannot take, so every call's geometry is checked here
before ncnn sees it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import ncnn
import numpy as np

from upscayl_cloud.engine.networks import NETWORKS, NetworkSpec
from upscayl_cloud.engine.weights import locate

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[tuple[str, int, bool], NetworkRunner] = {}


def gpu_count() -> int:
    """Vulkan devices ncnn can use (0 where libvulkan or a GPU is missing)."""
    return int(ncnn.get_gpu_count())


class NetworkRunner:
    """Runs one network on one tile at a time: ``3 x H x W`` floats in 0..1."""

    def __init__(self, spec: NetworkSpec, threads: int, use_gpu: bool) -> None:
        files = locate(spec.distribution, spec.stem)
        self.spec = spec
        self.on_gpu = use_gpu and gpu_count() > 0
        self._net = ncnn.Net()
        self._net.opt.num_threads = threads
        self._net.opt.use_vulkan_compute = self.on_gpu
        # Our own pools, so their memory can be handed back between passes:
        # with ncnn's built-in ones every network keeps its peak (1.3 GB for
        # x4plus on a 160^2 tile) for as long as the process lives.
        self._blob_pool = ncnn.PoolAllocator()
        self._workspace_pool = ncnn.PoolAllocator()
        self._net.opt.blob_allocator = self._blob_pool
        self._net.opt.workspace_allocator = self._workspace_pool
        if self._net.load_param(str(files.param)) != 0 or self._net.load_model(str(files.bin)) != 0:
            raise RuntimeError(f"ncnn could not load {spec.key} from {files.param.parent}")

        log.info(
            "loaded %s (%s, %d threads)", spec.key, "vulkan" if self.on_gpu else "cpu", threads
        )

    def release_memory(self) -> None:
        """Give the pooled working memory back (blocks in use by a call
        running in another thread are not affected)."""
        self._blob_pool.clear()
        self._workspace_pool.clear()

    def check_input(self, height: int, width: int) -> None:
        """Refuse a size the network cannot take, before ncnn crashes on it."""
        spec = self.spec
        for edge in (height, width):
            core = edge - 2 * spec.context
            if core < spec.align or core % spec.align:
                raise ValueError(
                    f"{spec.key} cannot take a {width}x{height} input: the size less "
                    f"2x{spec.context} context must be a positive multiple of {spec.align}"
                )

    def run(self, chw: np.ndarray, injected: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Infer one tile. ``injected`` overrides intermediate blobs by name
        (used to give Real-CUGAN's tiles the whole image's global means)."""
        _, height, width = chw.shape
        self.check_input(height, width)
        status, result = self._forward(chw, self.spec.output_blob, injected or {})
        if status != 0:
            raise RuntimeError(f"ncnn failed on {self.spec.key} (status {status})")
        if self.spec.nearest_residual:
            result += _nearest(chw, self.spec.context, self.spec.scale)
        expected = (
            3,
            self.spec.scale * (height - 2 * self.spec.context),
            self.spec.scale * (width - 2 * self.spec.context),
        )
        if result.shape != expected:
            raise RuntimeError(f"{self.spec.key} returned {result.shape}, expected {expected}")
        return result

    def extract(self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the network only as far as ``blob`` and return it."""
        _, height, width = chw.shape
        self.check_input(height, width)
        status, result = self._forward(chw, blob, injected)
        if status != 0:
            raise RuntimeError(f"ncnn failed on {self.spec.key} at {blob} (status {status})")
        return result

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> tuple[int, np.ndarray]:
        # ncnn.Mat wraps the numpy buffer without copying it: every array
        # handed to the extractor must stay referenced until extract returns.
        arrays = {self.spec.input_blob: np.ascontiguousarray(chw, dtype=np.float32)}
        arrays.update(
            (name, np.ascontiguousarray(value, dtype=np.float32))
            for name, value in injected.items()
        )
        mats = {name: ncnn.Mat(array) for name, array in arrays.items()}
        with self._net.create_extractor() as ex:
            for name, mat in mats.items():
                ex.input(name, mat)
            status, out = ex.extract(blob)
            result = np.array(out, copy=True)
        del mats, arrays
        return status, result


def _nearest(chw: np.ndarray, context: int, scale: int) -> np.ndarray:
    """The input without its context, upscaled by pixel repetition."""
    core = chw[:, context : chw.shape[1] - context, context : chw.shape[2] - context]
    return np.repeat(np.repeat(core, scale, axis=1), scale, axis=2)


def load_network(key: str, threads: int, use_gpu: bool) -> NetworkRunner:
    """The process-wide runner for ``key``, loaded on first use."""
    cache_key = (key, threads, use_gpu)
    with _lock:
        runner = _loaded.get(cache_key)
        if runner is None:
            runner = NetworkRunner(NETWORKS[key], threads, use_gpu)
            _loaded[cache_key] = runner
        return runner
