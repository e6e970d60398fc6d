"""ONNX Runtime runs the converted graphs, tiles and injected means included.

Only its CPU provider exists here; the CUDA provider shares this code path
and was measured on an H200 by bench/gpu/ (bench/README.md, "GPU check");
TensorRT has not met a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from tests.engine.reference import psnr
from upscayl_cloud.engine.backends import onnxruntime as onnxruntime_backend
from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.backends.onnx_models import onnx_bytes, onnx_feeds
from upscayl_cloud.engine.backends.onnxruntime import OnnxRuntimeNetwork, gpu_provider, runs_on
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings
from upscayl_cloud.engine.planes import Plane, to_float
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import upscale_plane


def test_tiled_real_cugan_matches_ncnn(photo, tmp_path):
    """Real-CUGAN 4x: four global-mean stages, injected means, and the
    nearest-neighbour residual, over several tiles."""
    key = "realcugan-se-up4x-conservative"
    results = []
    for backend in ("ncnn", "onnxruntime"):
        network = load_network(key, EngineSettings(threads=2, use_gpu=False, backend=backend))
        source = Plane.from_array(tmp_path / f"{backend}.raw", photo[40:120, 100:196])
        out = upscale_plane(network, source, tmp_path / f"{backend}-out.raw", 48)
        results.append(to_float(out.read_all()))
    assert load_network(key, EngineSettings(threads=2, backend="onnxruntime")).device.startswith(
        "CPU fp32"
    )
    assert psnr(results[1], results[0]) >= 60


@pytest.mark.parametrize(
    "key", ["realesrgan-x4plus-anime", "span-x4-ch48", "realcugan-se-up2x-conservative"]
)
def test_the_fp16_graph_for_cuda_is_the_same_network(key, photo):
    """The CUDA provider gets an fp16 graph (``half``). Here only the CPU
    provider exists, which computes fp16 nodes in fp32 behind casts, so this
    checks the conversion, not fp16 arithmetic: every weight is fp16, only
    the inputs and the output are cast, and the result is ncnn's (the GPU
    check in bench/gpu_check.py measures the arithmetic)."""
    spec = NETWORKS[key]
    injected = tuple(spec.global_pools[:1]) if spec.global_pools else ()
    model = onnx.load_from_string(onnx_bytes(key, (spec.output_blob,), injected, half=True))
    conv_weights = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert conv_weights and {types[name] for name in conv_weights} == {TensorProto.FLOAT16}
    assert sum(node.op_type == "Cast" for node in model.graph.node) == 2 + len(injected)
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in model.graph.input)

    edge = 40 + 2 * spec.context
    chw = np.ascontiguousarray(photo[60 : 60 + edge, 120 : 120 + edge].transpose(2, 0, 1))
    reference_net = NcnnNetwork(spec, threads=2, use_gpu=False)
    means = {name: reference_net.extract(chw, name, {}) for name in injected}
    reference = reference_net._forward(chw, spec.output_blob, means)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (result,) = session.run([spec.output_blob], onnx_feeds(spec.input_blob, chw, means))
    assert psnr(result[0], reference) >= 60


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="checks the CPU build's answers; a GPU build is checked by bench/gpu",
)
def test_a_provider_is_probed_not_taken_from_the_build_list():
    """The onnxruntime-gpu wheel lists TensorRT and CUDA whether or not their
    libraries load, and a session that cannot get a provider quietly uses
    the next one. The probe runs a real one-node graph and reads which
    provider the session got: the CPU one here, and no GPU one."""
    assert runs_on("CPUExecutionProvider")
    assert not runs_on("CUDAExecutionProvider")  # the CPU build has no CUDA
    assert gpu_provider() is None
    network = load_network("span-x2-ch48", EngineSettings(threads=2, backend="onnxruntime"))
    assert not network.on_gpu and network.device.startswith("CPU fp32")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="needs a session that falls back from CUDA, as the CPU build's do",
)
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_provider_that_falls_back_gets_a_graph_of_its_own(monkeypatch, photo):
    """A network told CUDA works (here a stand-in: the CPU build's sessions
    fall back to the CPU, as a GPU's do when its provider fails on a graph)
    builds the fp16 graph for CUDA; the session that runs on the CPU
    instead is built again from the fp32 graph and says so."""
    built = []

    def recording(*args, **kwargs):  # the real converter, its calls noted
        built.append(kwargs.get("half", False))
        return onnx_bytes(*args, **kwargs)

    monkeypatch.setattr(onnxruntime_backend, "onnx_bytes", recording)
    network = OnnxRuntimeNetwork(NETWORKS["span-x2-ch48"], threads=2, use_gpu=False)
    network._provider = "CUDAExecutionProvider"
    chw = np.ascontiguousarray(photo[:32, :32].transpose(2, 0, 1))
    result = network.run(chw)
    assert built == [True, False]
    assert not network.on_gpu and network.device.startswith("CPU fp32")
    network.run(chw)
    assert built == [True, False]  # the session is kept
    assert result.shape == (3, 64, 64)


def test_a_tensorrt_cache_folder_that_cannot_be_made_costs_only_the_cache(tmp_path, caplog):
    """TensorRT's engine folder could not be created (its parent is a file;
    a read-only mount, another account's folder): every session failed.
    TensorRT then runs without its engine cache, warned once. No GPU here:
    the provider's options are what is checked."""
    (tmp_path / "not-a-folder").write_bytes(b"")
    folder = tmp_path / "not-a-folder" / "tensorrt"
    network = OnnxRuntimeNetwork(
        NETWORKS["span-x2-ch48"], threads=1, use_gpu=False, cache_dir=folder
    )
    network._provider = "TensorrtExecutionProvider"  # as on a GPU with TensorRT
    with caplog.at_level(logging.WARNING):
        chosen = [network._providers() for _ in range(2)]
    assert chosen[0] == chosen[1]
    assert chosen[0][0] == ("TensorrtExecutionProvider", {"trt_fp16_enable": True})
    warnings = [
        record.getMessage() for record in caplog.records if str(folder) in record.getMessage()
    ]
    assert len(warnings) == 1 and "Not a directory" in warnings[0]


def test_cuda_sessions_choose_convolutions_by_heuristic_in_channels_last():
    """ONNX Runtime's default times every cuDNN algorithm at each new input
    shape: 8-10 s for realesrgan-x4plus's first tile on an H200, against
    1.2-1.5 s by heuristic, with calls as fast after; channels-last
    convolutions were 1.15-1.4x faster there (bench/README.md). No GPU
    here: the provider options are what is checked."""
    network = OnnxRuntimeNetwork(NETWORKS["span-x2-ch48"], threads=1, use_gpu=False)
    network._provider = "CUDAExecutionProvider"  # as on an NVIDIA GPU
    assert network._providers() == [
        ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1"}),
        "CPUExecutionProvider",
    ]
    network._provider = "TensorrtExecutionProvider"  # CUDA as TensorRT's fallback too
    assert ("CUDAExecutionProvider", onnxruntime_backend.CUDA_OPTIONS) in network._providers()


@pytest.mark.parametrize(
    ("found", "probed", "runs"),
    [
        ("CUDAExecutionProvider", [], True),
        ("TensorrtExecutionProvider", ["CUDAExecutionProvider"], True),
        (None, [], False),
    ],
)
def test_auto_asks_whether_cuda_itself_runs(monkeypatch, found, probed, runs):
    """Fake: no GPU here, so the provider probe's answers are faked. Where
    the probe stopped at TensorRT, CUDA is probed on its own; where it found
    nothing, CUDA is not probed twice."""
    asked: list[str] = []

    def fake_runs_on(provider: str) -> bool:
        asked.append(provider)
        return True

    monkeypatch.setattr(onnxruntime_backend, "gpu_provider", lambda: found)
    monkeypatch.setattr(onnxruntime_backend, "runs_on", fake_runs_on)
    onnxruntime_backend.cuda_runs.cache_clear()
    try:
        assert onnxruntime_backend.cuda_runs() is runs
    finally:
        onnxruntime_backend.cuda_runs.cache_clear()
    assert asked == probed
