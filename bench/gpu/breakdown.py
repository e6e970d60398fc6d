"""Where a GPU pass's time goes, per tile size: network calls against the pipeline.

bench/gpu_check.py times the engine's whole pass over a 1024² input (tiling,
reads, writes, the network) at one tile size. Its first run on an H200 had
ONNX Runtime's CUDA provider 1.3-1.8x faster than ncnn's Vulkan path, but
both far from the H100's dense-fp16 bound (issue #8). This splits that time
for each network, backend and tile size:

- ``call_s``: one ``Network.run`` on a tile of that shape, host memory in
  and out (what the pipeline calls), median of a few after a first call;
- ``first_call_s``: that first call (with ONNX Runtime's default, its CUDA
  provider searched cuDNN's convolution algorithms at each new shape);
- ``device_only_s`` (ONNX Runtime): the same session with the input already
  on the GPU and the output left there (IO binding), i.e. without the host
  copies, the fp32 casts' transfers and the engine's numpy work;
- ``nhwc_*``, ``exhaustive_*`` (ONNX Runtime, ``--variants``): a session
  with other CUDA provider options: channels-last convolutions
  (``prefer_nhwc``), or the default exhaustive cuDNN search that the
  engine's ``CUDA_OPTIONS`` replace by cuDNN's heuristic;
- ``pipeline_s``: ``upscale_plane`` over the whole 1024² input, median of 2;
- ``network_share``: ``tiles x call_s / pipeline_s``, how much of the pass
  the network calls are.

Writes the JSON after every row, so a run stopped at its limit keeps what it
measured. Run on the lent machine through ``device.sh`` (``KIT_SCRIPT``)::

    KIT_SCRIPT=bench/gpu/breakdown.py bash bench/gpu/device.sh run

Here, without a GPU, it runs on the CPU fallbacks (small sizes only)::

    PYTHONPATH=src python bench/gpu/breakdown.py --out /tmp/b.json --edge 64 --tiles 32,64
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from upscayl_cloud.engine.backends import onnxruntime as engine_ort
from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.backends.onnx_models import onnx_bytes, onnx_feeds
from upscayl_cloud.engine.geometry import plan_tiles
from upscayl_cloud.engine.options import EngineSettings, available_cores
from upscayl_cloud.engine.planes import Plane
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import tile_rule, upscale_plane

#: H100 dense fp16 bound for a 1024² input at 4x (issue #8).
H100_FP16_BOUND_S = {"realesrgan-x4plus": 0.038, "realesr-animevideov3-x4": 0.0013}
NETWORKS = ("realesrgan-x4plus", "realesr-animevideov3-x4", "span-x4-ch48")


def median_time(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photo(edge: int) -> np.ndarray:
    from skimage import data

    big = np.asarray(data.astronaut(), dtype=np.float32) / 255
    reps = math.ceil(edge / 512)
    return np.tile(big, (reps, reps, 1))[:edge, :edge]


def tile_input(network: Network, edge: int, tile: int) -> tuple[int, np.ndarray]:
    """How many tiles a pass over ``edge``² takes, and the first one's input."""
    tiles = plan_tiles(edge, edge, tile, tile_rule(network))
    s = tiles[0].source
    rng = np.random.default_rng(0)
    chw = rng.random((3, s.y1 - s.y0, s.x1 - s.x0), dtype=np.float32)
    return len(tiles), chw


def onnx_device_only(network: Network, chw: np.ndarray, repeats: int) -> float | None:
    """The engine's own session, input on the GPU and output left there."""
    spec = network.spec
    session = network._session(spec.output_blob, ())
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return None
    return bound_run_time(session, spec.input_blob, spec.output_blob, chw, repeats)


def bound_run_time(
    session: ort.InferenceSession,
    input_name: str,
    output_name: str,
    chw: np.ndarray,
    repeats: int,
    where: str = "cuda",
) -> float:
    """Median time of ``session`` with its input and output bound on ``where``
    (``cpu`` only to check this code without a GPU)."""
    feeds = onnx_feeds(input_name, chw, {})
    value = ort.OrtValue.ortvalue_from_numpy(feeds[input_name], where, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, value)
    binding.bind_output(output_name, where, 0)

    def once() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    once()
    return median_time(once, repeats)


def variant_row(
    network: Network, chw: np.ndarray, repeats: int, name: str, options: dict[str, str]
) -> dict[str, float]:
    """First call and device-only time of a session with other CUDA options."""
    spec = network.spec
    data = onnx_bytes(spec.key, (spec.output_blob,), (), half=network._half)
    providers = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    session = ort.InferenceSession(data, ort.SessionOptions(), providers=providers)
    feeds = onnx_feeds(spec.input_blob, chw, {})
    start = time.perf_counter()
    session.run([spec.output_blob], feeds)
    first = time.perf_counter() - start
    device = bound_run_time(session, spec.input_blob, spec.output_blob, chw, repeats)
    return {f"{name}_first_call_s": first, f"{name}_device_only_s": device}


#: CUDA provider options tried beside the engine's own (``CUDA_OPTIONS``).
VARIANTS = {
    "exhaustive": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
    "nhwc": {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1"},
}


def measure(
    network: Network, edge: int, tile: int, work: Path, repeats: int, variants: list[str]
) -> dict:
    count, chw = tile_input(network, edge, tile)
    row: dict = {"tiles": count, "tile_input": list(chw.shape[1:]), "device": network.device}
    start = time.perf_counter()
    network.run(chw)
    row["first_call_s"] = time.perf_counter() - start
    row["call_s"] = median_time(lambda: network.run(chw), repeats)
    if network.backend == "onnxruntime" and network.on_gpu:
        # Each extra is a result of its own: its failure keeps the rest.
        try:
            row["device_only_s"] = onnx_device_only(network, chw, repeats)
        except Exception as exc:
            row["device_only_error"] = f"{type(exc).__name__}: {exc}"
        for name in variants:
            try:
                row |= variant_row(network, chw, repeats, name, VARIANTS[name])
            except Exception as exc:
                row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    plane = Plane.from_array(work / "in.raw", photo(edge))
    upscale_plane(network, plane, work / "warm.raw", tile)
    row["pipeline_s"] = median_time(lambda: upscale_plane(network, plane, work / "o.raw", tile), 2)
    row["network_share"] = count * row["call_s"] / row["pipeline_s"]
    bound = H100_FP16_BOUND_S.get(network.spec.key)
    if bound is not None and edge == 1024:
        row["fraction_of_h100_fp16_bound"] = bound / row["pipeline_s"]
        if row.get("device_only_s"):
            row["device_only_fraction"] = bound / (count * row["device_only_s"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--backends", default="onnxruntime,ncnn")
    parser.add_argument("--tiles", default="256,512,1024")
    parser.add_argument("--edge", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", default="nhwc", help=f"of {sorted(VARIANTS)}, or none")
    args = parser.parse_args()
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    # As bench/gpu/check.py: the lent machines have no TensorRT libraries.
    engine_ort.GPU_PROVIDERS = ("CUDAExecutionProvider",)
    variants = [name for name in args.variants.split(",") if name in VARIANTS]
    report: dict = {"date": time.strftime("%F"), "edge": args.edge, "rows": {}}
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.networks.split(","):
            for backend in args.backends.split(","):
                settings = EngineSettings(threads=cores, use_gpu=True, backend=backend)
                network = load_network(key, settings)
                for tile in (int(t) for t in args.tiles.split(",")):
                    name = f"{key} {backend} tile {tile}"
                    try:
                        row = measure(network, args.edge, tile, Path(tmp), args.repeats, variants)
                    except Exception as exc:  # one failing shape is a result, not the end
                        row = {"error": f"{type(exc).__name__}: {exc}"}
                    report["rows"][name] = row
                    print(name, json.dumps(row), flush=True)
                    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
