"""The ONNX graphs built from the ncnn files compute what ncnn computes.

ONNX Runtime's CPU provider (fp32) runs the converted graph; plain ncnn
runs the original files; both see the same real photo. Issue #8 asks for
PSNR >= 60 dB on every catalog network: fp32 against fp32, the only
difference is the order of floating-point sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.engine.reference import psnr
from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.convert.ncnn_files import NcnnFormatError
from upscayl_cloud.engine.convert.to_onnx import UnsupportedLayerError, build_onnx
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.weights import locate

RRDB = {"realesrgan-x4plus", "realesrgan-x4plus-anime", "realsr-df2k-x4"}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _crop(photo: np.ndarray, key: str) -> np.ndarray:
    """A real-photo input the network accepts: 2 x context + a multiple of align."""
    spec = NETWORKS[key]
    core = 40 if key in RRDB else 64
    edge = core + 2 * spec.context
    return np.ascontiguousarray(photo[50 : 50 + edge, 100 : 100 + edge].transpose(2, 0, 1))


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_every_network_converts_to_the_same_function(key, photo):
    spec = NETWORKS[key]
    files = locate(spec.distribution, spec.stem)
    model = build_onnx(files.param, files.bin, spec.input_blob, [spec.output_blob])
    onnx.checker.check_model(model)
    chw = _crop(photo, key)
    converted = _session(model).run(None, {spec.input_blob: chw[None]})[0][0]
    original = NcnnNetwork(spec, threads=2, use_gpu=False)._forward(chw, spec.output_blob, {})
    assert converted.shape == original.shape
    assert psnr(np.clip(converted, 0, 1), np.clip(original, 0, 1)) >= 60


def test_a_cut_graph_returns_an_inner_blob_and_takes_injected_ones(photo):
    """Real-CUGAN's tiles need ``gap0`` computed, then the final output with
    every ``gapN`` given: both cuts agree with ncnn doing the same."""
    key = "realcugan-se-up2x-conservative"
    spec = NETWORKS[key]
    files = locate(spec.distribution, spec.stem)
    chw = _crop(photo, key)
    ncnn_net = NcnnNetwork(spec, threads=2, use_gpu=False)

    first = build_onnx(files.param, files.bin, spec.input_blob, ["gap0"])
    gap0 = _session(first).run(None, {spec.input_blob: chw[None]})[0]
    assert gap0.shape == (1, 64, 1, 1)
    assert np.allclose(gap0.reshape(-1), ncnn_net._forward(chw, "gap0", {}), atol=1e-5)

    # Means from elsewhere (here: scaled), as the tiler injects the image's.
    injected = {f"gap{i}": ncnn_net._forward(chw, f"gap{i}", {}) * 0.9 for i in range(4)}
    final = build_onnx(files.param, files.bin, spec.input_blob, ["out0"], injected=list(injected))
    feeds = {spec.input_blob: chw[None]} | {k: v.reshape(1, -1, 1, 1) for k, v in injected.items()}
    converted = _session(final).run(None, feeds)[0][0]
    original = ncnn_net._forward(chw, "out0", injected)
    assert psnr(np.clip(converted, 0, 1), np.clip(original, 0, 1)) >= 60
    # The injected means matter: without them the output differs.
    plain = ncnn_net._forward(chw, "out0", {})
    assert psnr(np.clip(plain, 0, 1), np.clip(original, 0, 1)) < 60


def test_an_operator_without_a_translation_is_refused_by_name(tmp_path: Path):
    param = tmp_path / "n.param"
    param.write_text("7767517\n2 2\nInput in 0 1 data\nSoftmax sm 1 1 data out 0=0\n")
    (tmp_path / "n.bin").write_bytes(b"")
    with pytest.raises(UnsupportedLayerError, match="Softmax"):
        build_onnx(param, tmp_path / "n.bin", "data", ["out"])


def test_weights_no_layer_reads_are_refused(tmp_path: Path):
    """A .bin that does not match its .param is refused, not half-used."""
    param = tmp_path / "n.param"
    param.write_text("7767517\n2 2\nInput in 0 1 data\nPReLU p 1 1 data out 0=1\n")
    (tmp_path / "n.bin").write_bytes(np.float32([0.1, 0.2]).tobytes())
    with pytest.raises(NcnnFormatError, match="no layer read"):
        build_onnx(param, tmp_path / "n.bin", "data", ["out"])


def _run_tiny(tmp_path: Path, body: str, weights: bytes, x: np.ndarray) -> np.ndarray:
    """Convert a hand-written ncnn graph (input ``data``, output ``out``) and run it."""
    lines = body.strip().splitlines()
    param = tmp_path / "t.param"
    param.write_text(f"7767517\n{len(lines) + 1} 9\nInput in 0 1 data\n" + "\n".join(lines) + "\n")
    (tmp_path / "t.bin").write_bytes(weights)
    model = build_onnx(param, tmp_path / "t.bin", "data", ["out"])
    return _session(model).run(None, {"data": x})[0]


def test_ncnn_defaults_that_files_leave_out(tmp_path: Path):
    """ncnn's tools omit parameters at their default: an Eltwise without
    ``0=`` multiplies, and a Crop end of -233 runs to the end."""
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(1, 3, 4, 5) / 10
    product = _run_tiny(tmp_path, "Split s 1 2 data a b\nEltwise e 2 1 a b out", b"", x)
    assert np.allclose(product, x * x)
    crop = _run_tiny(
        tmp_path, "Crop c 1 1 data out -23309=2,1,-233 -23310=2,-233,3 -23311=2,1,2", b"", x
    )
    assert np.array_equal(crop, x[:, :, 1:, :3])


def test_injecting_a_blob_no_layer_makes_is_refused(tmp_path: Path):
    param = tmp_path / "n.param"
    param.write_text("7767517\n2 2\nInput in 0 1 data\nSigmoid s 1 1 data out\n")
    (tmp_path / "n.bin").write_bytes(b"")
    with pytest.raises(NcnnFormatError, match="cannot inject"):
        build_onnx(param, tmp_path / "n.bin", "data", ["out"], injected=["gap9"])
