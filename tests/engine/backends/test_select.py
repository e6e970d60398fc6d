"""What ``auto`` picks, and the refusals of a backend that cannot run."""

from __future__ import annotations

import sys

import pytest

from upscayl_cloud.engine import runner
from upscayl_cloud.engine.backends import select
from upscayl_cloud.engine.backends.openvino import native_bf16
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.runner import load_network


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
    """Fake: no GPU can be provided here, so ncnn's device count is faked
    (and ONNX Runtime's CUDA made absent, as on a GPU of another vendor)."""
    from upscayl_cloud.engine.backends import ncnn, onnxruntime

    monkeypatch.setattr(ncnn, "gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "cuda_runs", lambda: False)
    assert select.resolve("auto", use_gpu=True).backend == "ncnn"
    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=False).backend == (
        "openvino" if native_bf16() else "ncnn"
    )


def test_auto_runs_onnxruntime_on_cuda_where_cuda_runs(monkeypatch):
    """Fake: no GPU here, so the CUDA probe's answer and ncnn's device count
    are faked. ONNX Runtime's CUDA path beat ncnn's Vulkan path on the same
    GPU (bench/README.md), so ``auto`` takes it where it really runs, on
    CUDA even where TensorRT would load (TensorRT is not measured); where
    it does not run (no onnxruntime-gpu, or its libraries fail), ncnn's
    Vulkan path stays; without ``use_gpu`` neither is asked."""
    from upscayl_cloud.engine.backends import ncnn, onnxruntime

    monkeypatch.setattr(runner, "_loaded", {})  # these fakes' networks stay in this test
    monkeypatch.setattr(ncnn, "gpu_count", lambda: 1)
    monkeypatch.setattr(onnxruntime, "cuda_runs", lambda: True)
    monkeypatch.setattr(onnxruntime, "gpu_provider", lambda: "TensorrtExecutionProvider")
    choice = select.resolve("auto", use_gpu=True)
    assert (choice.backend, choice.provider) == ("onnxruntime", "CUDAExecutionProvider")
    assert "CUDA" in choice.reason and "TensorRT, not measured" in choice.reason
    network = load_network("span-x2-ch48", EngineSettings(threads=1, use_gpu=True))
    assert network.backend == "onnxruntime" and network._provider == "CUDAExecutionProvider"
    assert "TensorrtExecutionProvider" not in str(network._providers())
    named = load_network("span-x2-ch48", EngineSettings(threads=1, backend="onnxruntime"))
    assert named is not network and named._provider == "TensorrtExecutionProvider"
    # `models backends`: the selected row says what auto runs, not what naming it would.
    devices = {r.backend: r.device for r in select.report(1, use_gpu=True, selected=choice)}
    assert devices["onnxruntime"] == "NVIDIA GPU (CUDAExecutionProvider)"
    devices = {r.backend: r.device for r in select.report(1, use_gpu=True)}
    assert devices["onnxruntime"] == "NVIDIA GPU (TensorrtExecutionProvider)"

    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=False).backend == (
        "openvino" if native_bf16() else "ncnn"
    )

    def broken() -> bool:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(onnxruntime, "cuda_runs", broken)
    select._auto.cache_clear()
    assert select.resolve("auto", use_gpu=True) == select.Choice(
        "ncnn", "ncnn sees a Vulkan GPU (Upscayl's own GPU path)"
    )


def test_a_missing_package_is_reported_not_crashed_on(monkeypatch):
    """Fake: the package is installed here, so its import is made to fail."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(select.BackendUnavailableError, match="openvino package"):
        select.resolve("openvino", use_gpu=False)
    rows = {row.backend: row for row in select.report(threads=2, use_gpu=False)}
    assert rows["openvino"].available is False
    assert rows["ncnn"].available and rows["ncnn"].device == "CPU fp32, 2 threads"
