"""Which backend ``auto`` means on this machine, and what each would use.

The rule follows the measurements in bench/README.md:

1. An NVIDIA GPU that ONNX Runtime's CUDA provider really runs on (the
   ``cuda`` extra's ``onnxruntime-gpu``, and ``use_gpu``): ONNX Runtime on
   CUDA. On an H200 it ran a 1024² pass at 4x (fp16) 1.7-2.6x as fast as
   ncnn's Vulkan path on the same GPU, within 1.3 dB of it against the
   CPU's fp32 result, 5-12 dB nearer for x4plus and AnimeVideo v3
   (bench/README.md, "GPU check"). TensorRT, which builds an engine per
   tile shape, has not been measured: it runs only where ``onnxruntime``
   is named.
2. Any other GPU that ncnn sees through Vulkan (and ``use_gpu``): ncnn,
   Upscayl's own GPU path, which works on every vendor's GPU.
3. A CPU with bf16 instructions (AMX or AVX-512-BF16), which OpenVINO uses
   by default: OpenVINO, several times faster than ncnn's fp32 there.
4. Otherwise ncnn on the CPU: without bf16 it was the fastest of all the
   runtimes measured (issue #8's table), and it has the smallest footprint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from upscayl_cloud.engine.backends.base import cpu_device

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("ncnn", "openvino", "onnxruntime")
CHOICES: tuple[str, ...] = ("auto", *BACKENDS)


class BackendUnavailableError(RuntimeError):
    """The configured backend cannot run here (its package is missing)."""


@dataclass(frozen=True)
class Choice:
    backend: str
    reason: str
    #: ONNX Runtime's provider, where ``auto`` chose it: the one measured.
    #: None: the backend's own choice (for ONNX Runtime, TensorRT first).
    provider: str | None = None


@dataclass(frozen=True)
class BackendReport:
    """One row of ``upscayl-cloud models backends``."""

    backend: str
    available: bool
    device: str


def resolve(backend: str, use_gpu: bool) -> Choice:
    """The backend to run, with the reason, for the configured name."""
    if backend not in CHOICES:
        raise BackendUnavailableError(f"unknown backend {backend!r}: one of {list(CHOICES)}")
    if backend != "auto":
        check_available(backend)
        return Choice(backend, "set by configuration")
    return _auto(use_gpu)


@cache
def _auto(use_gpu: bool) -> Choice:
    from upscayl_cloud.engine.backends.ncnn import gpu_count

    if use_gpu and _onnxruntime_cuda():
        return Choice(
            "onnxruntime",
            "onnxruntime's CUDA provider runs on this NVIDIA GPU: 1.7-2.6x ncnn's "
            "Vulkan path on the same GPU (measured on an H200); TensorRT, not "
            "measured here, only with the backend named onnxruntime",
            provider="CUDAExecutionProvider",
        )
    if use_gpu and gpu_count() > 0:
        return Choice("ncnn", "ncnn sees a Vulkan GPU (Upscayl's own GPU path)")
    if _openvino_bf16():
        return Choice(
            "openvino",
            "the CPU has bf16 instructions (AMX or AVX-512-BF16): OpenVINO runs bf16 "
            "there, several times faster than ncnn's fp32",
        )
    return Choice("ncnn", "no GPU and no bf16 instructions: ncnn's fp32 CPU path is fastest")


def _onnxruntime_cuda() -> bool:
    """Whether ONNX Runtime's CUDA provider really runs here; False, with
    the reason logged, where onnxruntime is missing or broken."""
    try:
        from upscayl_cloud.engine.backends.onnxruntime import cuda_runs

        return cuda_runs()
    except Exception:
        log.warning("onnxruntime is unusable here; auto does not use it", exc_info=True)
        return False


def _openvino_bf16() -> bool:
    """False, with the reason logged, where OpenVINO is missing or broken:
    ``auto`` then falls back to ncnn rather than failing every task."""
    try:
        from upscayl_cloud.engine.backends.openvino import native_bf16

        return native_bf16()
    except Exception:
        log.warning("OpenVINO is unusable here; auto falls back to ncnn", exc_info=True)
        return False


def check_available(backend: str) -> None:
    try:
        if backend == "openvino":
            import openvino  # noqa: F401
        elif backend == "onnxruntime":
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the {backend} backend needs the {backend} package, which is not installed"
        ) from exc


def report(
    threads: int, use_gpu: bool, streams: int = 1, selected: Choice | None = None
) -> list[BackendReport]:
    """What each backend would run on here (nothing is loaded or compiled):
    named, or as ``selected`` runs it (``auto`` asks ONNX Runtime for CUDA
    even where TensorRT would load)."""
    rows = []
    for backend in BACKENDS:
        try:
            check_available(backend)
        except BackendUnavailableError as exc:
            rows.append(BackendReport(backend, False, str(exc)))
            continue
        if selected is not None and selected.backend == backend and selected.provider:
            device = f"NVIDIA GPU ({selected.provider})"
        else:
            device = _device(backend, threads, use_gpu, streams)
        rows.append(BackendReport(backend, True, device))
    return rows


def _device(backend: str, threads: int, use_gpu: bool, streams: int) -> str:
    if backend == "ncnn":
        from upscayl_cloud.engine.backends.ncnn import gpu_count

        return "Vulkan GPU" if use_gpu and gpu_count() else cpu_device("fp32", threads)
    if backend == "openvino":
        return cpu_device("bf16" if _openvino_bf16() else "fp32", threads, streams)
    from upscayl_cloud.engine.backends.onnxruntime import gpu_provider

    provider = gpu_provider() if use_gpu else None
    return f"NVIDIA GPU ({provider})" if provider else cpu_device("fp32", threads)
