"""ONNX Runtime runs the converted graphs, tiles and injected means included.

Only its CPU provider exists here; the CUDA and TensorRT providers share
this code path but are unmeasured until a GPU session runs bench/.
"""

from __future__ import annotations

from tests.engine.reference import psnr
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
