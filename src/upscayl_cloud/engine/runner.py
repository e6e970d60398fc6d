"""The process-wide loaded networks, one per network and backend setting.

Loading is the expensive part (realesrgan-x4plus reads 33 MB; OpenVINO also
compiles), so each network is loaded once per process and shared between
threads. The backend comes from the settings (``backends.select``).
"""

from __future__ import annotations

import logging
import threading

from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.backends.select import Choice, resolve
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict[tuple[object, ...], Network] = {}


def load_network(key: str, settings: EngineSettings) -> Network:
    """The shared network ``key`` on the backend ``settings`` select."""
    choice = resolve(settings.backend, settings.use_gpu)
    cache_key = (
        key,
        choice.backend,
        choice.provider,
        settings.threads,
        settings.concurrency,
        settings.use_gpu,
        settings.precision,
        settings.cache_dir,
        settings.tile_memory_mb,
    )
    with _lock:
        network = _loaded.get(cache_key)
        if network is None:
            network = _create(key, choice, settings)
            _loaded[cache_key] = network
            log.info("%s runs on %s (%s: %s)", key, choice.backend, network.device, choice.reason)
        return network


def _create(key: str, choice: Choice, settings: EngineSettings) -> Network:
    spec = NETWORKS[key]
    backend = choice.backend
    if backend == "openvino":
        from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork

        cache = settings.cache_dir / "openvino" if settings.cache_dir else None
        return OpenVinoNetwork(
            spec,
            settings.threads,
            settings.precision,
            cache,
            settings.cache_max_mb,
            streams=settings.concurrency,
            keep_memory_mb=settings.tile_memory_mb,
        )
    if backend == "onnxruntime":
        from upscayl_cloud.engine.backends.onnxruntime import OnnxRuntimeNetwork

        cache = settings.cache_dir / "tensorrt" if settings.cache_dir else None
        return OnnxRuntimeNetwork(
            spec, settings.threads, settings.use_gpu, settings.precision, cache, choice.provider
        )
    from upscayl_cloud.engine.backends.ncnn import NcnnNetwork

    return NcnnNetwork(spec, settings.threads, settings.use_gpu, settings.precision)
