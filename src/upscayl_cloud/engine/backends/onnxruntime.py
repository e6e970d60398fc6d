"""ONNX Runtime on an NVIDIA GPU: TensorRT in fp16, else CUDA in fp16.

The GPU alternative to ncnn's Vulkan path. TensorRT builds an engine per
input shape, which is slow (seconds to minutes), so its engines are cached
in the cache folder; the tiler's one-shape-per-image keeps their number low.
Without a GPU provider the CPU provider runs, which is correct but slower
than ncnn there (bench/README.md): ``auto`` never picks this backend for a
CPU.

Measured on an NVIDIA H200 (bench/README.md, "GPU check"): the CUDA
provider in fp16 ran a 1024² pass at 4x 1.7-2.6x as fast as ncnn's Vulkan
path on the same GPU, within 1.3 dB of it against the CPU's fp32 result
(nearer for x4plus and AnimeVideo v3); ``auto`` uses it. TensorRT has not
met a GPU here: it runs only where the backend is named. The
``onnxruntime-gpu`` wheel is an optional install (``pip install
upscayl-cloud[cuda]``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from upscayl_cloud.engine.backends.base import Network, cpu_device
from upscayl_cloud.engine.backends.disk_cache import warn_unusable
from upscayl_cloud.engine.backends.onnx_models import onnx_bytes, onnx_feeds
from upscayl_cloud.engine.convert.to_onnx import IR_VERSION, OPSET
from upscayl_cloud.engine.networks import NetworkSpec

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
#: The CUDA provider's options, each measured on an H200 (bench/README.md,
#: "GPU time breakdown"):
#: - cuDNN's heuristic choice of convolution algorithms instead of ONNX
#:   Runtime's default exhaustive search, which times every algorithm at each
#:   new input shape: that first call took 8.3-10.5 s for realesrgan-x4plus
#:   (every image size with one tile is a new shape), the heuristic's
#:   1.2-1.5 s, and its calls were within 7 % or faster afterwards;
#: - channels-last convolutions (``prefer_nhwc``), the tensor cores' own
#:   layout: 1.4x faster on the GPU for realesrgan-x4plus, 1.15-1.2x for the
#:   compact networks.
CUDA_OPTIONS: dict[str, object] = {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1"}


@cache
def gpu_provider() -> str | None:
    """The best NVIDIA provider that really runs here, if any.

    The ``onnxruntime-gpu`` wheel lists TensorRT and CUDA whether or not
    their libraries load; a session asked for a provider that cannot load
    prints an error and carries on with the next one, so a list alone would
    label CPU (or CUDA) work as TensorRT. Each is tried on a one-node graph,
    once per process: the first onnxruntime network (or ``models backends``)
    pays for loading the GPU libraries, and for TensorRT an engine build of
    that one node, seconds at most.
    """
    available = ort.get_available_providers()
    if not any(name in available for name in GPU_PROVIDERS):
        return None
    if hasattr(ort, "preload_dlls"):
        # The CUDA and cuDNN libraries of the nvidia-* wheels (the ``cuda``
        # extra) are not on the loader's path by themselves.
        try:
            ort.preload_dlls()
        except Exception as exc:  # missing libraries show up in runs_on
            log.warning("onnxruntime could not preload the CUDA libraries: %s", exc)
    return next((name for name in GPU_PROVIDERS if name in available and runs_on(name)), None)


@cache
def cuda_runs() -> bool:
    """Whether the CUDA provider really runs here, TensorRT or not (what
    ``auto`` uses: the measured path)."""
    provider = gpu_provider()  # loads the CUDA libraries first, and probes
    if provider == "TensorrtExecutionProvider":
        return runs_on("CUDAExecutionProvider")  # the probe stopped at TensorRT
    return provider == "CUDAExecutionProvider"


def runs_on(provider: str) -> bool:
    """Whether a session asked for ``provider`` really gets it."""
    one_conv = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])],
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    one_conv.ir_version = IR_VERSION
    try:
        session = ort.InferenceSession(
            one_conv.SerializeToString(), providers=[provider, "CPUExecutionProvider"]
        )
        session.run(None, {"x": np.ones((1, 1, 8, 8), dtype=np.float32)})
    except Exception as exc:  # any failure to load or run means: not here
        log.warning("onnxruntime cannot use %s here: %s", provider, exc)
        return False
    return session.get_providers()[0] == provider


class OnnxRuntimeNetwork(Network):
    backend = "onnxruntime"

    def __init__(
        self,
        spec: NetworkSpec,
        threads: int,
        use_gpu: bool = True,
        precision: str = "auto",
        cache_dir: Path | None = None,
        provider: str | None = None,
    ) -> None:
        """``provider``: the GPU provider to use (``auto`` asks for CUDA);
        None: the best that runs here, TensorRT first."""
        super().__init__(spec)
        self._threads = threads
        self._provider = (provider or gpu_provider()) if use_gpu else None
        self._fp16 = precision != "fp32"
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, tuple[str, ...]], ort.InferenceSession] = {}

    @property
    def device(self) -> str:
        if self._provider == "TensorrtExecutionProvider":
            return f"NVIDIA GPU (TensorRT, {'fp16' if self._fp16 else 'fp32'})"
        if self._provider == "CUDAExecutionProvider":
            return f"NVIDIA GPU (CUDA, {'fp16' if self._half else 'fp32'})"
        return cpu_device("fp32", self._threads)

    @property
    def _half(self) -> bool:
        """TensorRT lowers an fp32 graph to fp16 itself (``trt_fp16_enable``);
        the CUDA provider runs the types the graph declares, so it gets an
        fp16 graph."""
        return self._fp16 and self._provider == "CUDAExecutionProvider"

    @property
    def on_gpu(self) -> bool:
        return self._provider is not None

    def release_memory(self) -> None:
        """Sessions keep their arena for the next call: GPU memory is not
        shared with the pipeline's planes, and the CPU provider is not a
        production path (``select``)."""

    def _forward(
        self, chw: np.ndarray, blob: str, injected: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        feeds = onnx_feeds(self.spec.input_blob, chw, injected)
        session = self._session(blob, tuple(sorted(injected)))
        (result,) = session.run([blob], feeds)
        return np.asarray(result[0])

    def _session(self, output: str, injected: tuple[str, ...]) -> ort.InferenceSession:
        with self._lock:
            session = self._sessions.get((output, injected))
            if session is None:
                session = self._new_session(output, injected)
                while self._check_provider(session.get_providers()):
                    # The graph and options were for the provider asked for
                    # (an fp16 graph for CUDA); the one that runs it gets its
                    # own. Providers only fall back, so this ends.
                    session = self._new_session(output, injected)
                self._sessions[(output, injected)] = session
                log.info("loaded %s (onnxruntime, %s)", self.spec.key, self.device)
            return session

    def _new_session(self, output: str, injected: tuple[str, ...]) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        data = onnx_bytes(self.spec.key, (output,), injected, half=self._half)
        return ort.InferenceSession(data, options, providers=self._providers())

    def _check_provider(self, used: list[str]) -> bool:
        """Keep ``device`` and ``on_gpu`` true to what the session got: a
        provider that fails on this graph falls back to the next one.
        True when it did."""
        actual = next((name for name in used if name in GPU_PROVIDERS), None)
        if actual == self._provider:
            return False
        log.warning(
            "%s: onnxruntime runs on %s, not %s",
            self.spec.key,
            actual or "the CPU",
            self._provider,
        )
        self._provider = actual
        return True

    @staticmethod
    def _cache_usable(folder: Path) -> bool:
        """Whether TensorRT may keep its engines in ``folder``: one that
        cannot be created (a file in its path; its parent on a read-only
        mount, or another account's) costs engine builds, not every task."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            warn_unusable(folder, exc)
            return False
        return True

    def _providers(self) -> list[str | tuple[str, dict[str, object]]]:
        chosen: list[str | tuple[str, dict[str, object]]] = []
        if self._provider == "TensorrtExecutionProvider":
            trt: dict[str, object] = {"trt_fp16_enable": self._fp16}
            if self._cache_dir is not None and self._cache_usable(self._cache_dir):
                trt |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(self._cache_dir),
                }
            chosen.append(("TensorrtExecutionProvider", trt))
        if self._provider is not None:
            chosen.append(("CUDAExecutionProvider", CUDA_OPTIONS))
        chosen.append("CPUExecutionProvider")
        return chosen
