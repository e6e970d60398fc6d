"""What ``auto`` picks, and the refusals of a backend that cannot run."""

from __future__ import annotations

import sys

import pytest

from upscayl_cloud.engine.backends import select
from upscayl_cloud.engine.backends.openvino import native_bf16


@pytest.fixture(autouse=True)
def _fresh_choice():
    select._auto.cache_clear()
    yield
    select._auto.cache_clear()


def test_a_named_backend_is_used_as_named():
    assert select.resolve("ncnn", use_gpu=True) == select.Choice("ncnn", "set by configuration")
    assert select.resolve("openvino", use_gpu=False).backend == "openvino"


def test_an_unknown_backend_is_refused():
    with pytest.raises(select.BackendUnavailableError, match="unknown backend"):
        select.resolve("tensorflow", use_gpu=False)


def test_auto_on_this_cpu_follows_its_bf16_support():
    choice = select.resolve("auto", use_gpu=False)
    assert choice.backend == ("openvino" if native_bf16() else "ncnn")
    assert choice.reason


def test_auto_prefers_ncnn_on_a_vulkan_gpu(monkeypatch):
    """Fake: no GPU can be provided here, so ncnn's device count is faked."""
    from upscayl_cloud.engine.backends import ncnn

    monkeypatch.setattr(ncnn, "gpu_count", lambda: 1)
    assert select.resolve("auto", use_gpu=True).backend == "ncnn"
    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=False).backend == (
        "openvino" if native_bf16() else "ncnn"
    )


def test_auto_prefers_onnxruntime_where_it_runs_on_an_nvidia_gpu(monkeypatch):
    """Fake: no GPU here, so the provider probe's answer and ncnn's device
    count are faked. ONNX Runtime's CUDA path beat ncnn's Vulkan path on
    the same GPU (bench/README.md), so it wins where it really runs; where
    it does not (no onnxruntime-gpu, or its libraries fail), ncnn's Vulkan
    path stays; without ``use_gpu`` neither is asked."""
    from upscayl_cloud.engine.backends import ncnn, onnxruntime

    monkeypatch.setattr(ncnn, "gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "gpu_provider", lambda: "CUDAExecutionProvider")
    choice = select.resolve("auto", use_gpu=True)
    assert choice.backend == "onnxruntime" and "CUDAExecutionProvider" in choice.reason
    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=False).backend == (
        "openvino" if native_bf16() else "ncnn"
    )

    def broken() -> str:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(onnxruntime, "gpu_provider", broken)
    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=True).backend == "ncnn"


def test_a_missing_package_is_reported_not_crashed_on(monkeypatch):
    """Fake: the package is installed here, so its import is made to fail."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(select.BackendUnavailableError, match="openvino package"):
        select.resolve("openvino", use_gpu=False)
    rows = {row.backend: row for row in select.report(threads=2, use_gpu=False)}
    assert rows["openvino"].available is False
    assert rows["ncnn"].available and rows["ncnn"].device == "CPU fp32, 2 threads"
