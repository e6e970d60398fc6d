"""Check the engine's GPU paths on a real GPU and time them against the CPU.

Runs each network through the engine's own tiling (``upscale_plane``) on the
CPU (ncnn fp32) and on every GPU backend present: ncnn's Vulkan path (fp16)
and, where the ``onnxruntime-gpu`` wheel offers TensorRT or CUDA, ONNX
Runtime (TensorRT in fp16). It reports the PSNR of each GPU result against
the CPU's on the same real photo, the time of a 1024² input at 4x, and that
time as a fraction of the H100's dense-fp16 bound for the work (issue #8).
Meant for a short run on a lent GPU machine; see bench/README.md.

    PYTHONPATH=src python bench/gpu_check.py --out results.json
    PYTHONPATH=src python bench/gpu_check.py --out r.json --backends onnxruntime
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import ncnn
import numpy as np
from skimage import data

from upscayl_cloud.engine.backends.base import Network
from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import EngineSettings, available_cores
from upscayl_cloud.engine.planes import Plane, to_float
from upscayl_cloud.engine.runner import load_network
from upscayl_cloud.engine.tiling import upscale_plane

CASES = {
    # network: (edge of the CPU/GPU comparison crop, tile size on the GPU)
    "span-x4-ch48": (256, 512),
    "realesr-animevideov3-x4": (256, 512),
    "realesrgan-x4plus": (64, 512),
}
#: H100 dense fp16 bound for a 1024^2 input at 4x (issue #8).
H100_FP16_BOUND_S = {"realesrgan-x4plus": 0.038, "realesr-animevideov3-x4": 0.0013}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def photo(edge: int) -> np.ndarray:
    big = np.asarray(data.astronaut(), dtype=np.float32) / 255  # 512x512
    reps = math.ceil(edge / 512)
    return np.tile(big, (reps, reps, 1))[:edge, :edge]


def timed(runner: Network, plane: Plane, work: Path, tile: int, repeats: int) -> float:
    upscale_plane(runner, plane, work / "warm.raw", tile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        upscale_plane(runner, plane, work / "out.raw", tile)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default="ncnn,onnxruntime", help="GPU backends to try")
    parser.add_argument("--networks", default=",".join(CASES))
    parser.add_argument(
        "--precisions",
        default="auto",
        help="auto,fp32 also runs each GPU backend at fp32 (ncnn's Vulkan fp16 switched off)",
    )
    args = parser.parse_args()
    gpus = ncnn.get_gpu_count()
    report: dict = {"gpu_count": gpus, "host": platform.node(), "date": time.strftime("%F")}
    if gpus:
        info = ncnn.get_gpu_info(0)
        report["gpu"] = info.device_name() if hasattr(info, "device_name") else str(info)
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for key in args.networks.split(","):
            edge, gpu_tile = CASES[key]
            cpu = NcnnNetwork(NETWORKS[key], threads=cores, use_gpu=False)
            crop = Plane.from_array(work / "crop.raw", photo(edge))
            start = time.perf_counter()
            cpu_out = to_float(upscale_plane(cpu, crop, work / "cpu.raw", 256).read_all())
            report[key] = {"cpu_seconds_crop": time.perf_counter() - start}
            runs = [(b, p) for b in args.backends.split(",") for p in args.precisions.split(",")]
            for backend, precision in runs:
                name = backend if precision == "auto" else f"{backend}-{precision}"
                settings = EngineSettings(
                    threads=cores, use_gpu=True, backend=backend, precision=precision
                )
                try:
                    gpu = load_network(key, settings)
                except Exception as exc:  # a missing wheel or driver is a result here
                    report[key][name] = {"error": f"{type(exc).__name__}: {exc}"}
                    continue
                row: dict = {"on_gpu": gpu.on_gpu, "device": gpu.device}
                start = time.perf_counter()
                out = upscale_plane(gpu, crop, work / "gpu.raw", gpu_tile)
                gpu_out = to_float(out.read_all())
                row["seconds_crop_first_call"] = time.perf_counter() - start
                row["psnr_vs_cpu_db"] = psnr(gpu_out, cpu_out)
                row["max_abs_diff_255"] = float(np.abs(gpu_out - cpu_out).max() * 255)
                if gpu.on_gpu:
                    big = Plane.from_array(work / "big.raw", photo(1024))
                    seconds = timed(gpu, big, work, gpu_tile, repeats=3)
                    row["seconds_1024_4x"] = seconds
                    if key in H100_FP16_BOUND_S:
                        row["fraction_of_h100_fp16_bound"] = H100_FP16_BOUND_S[key] / seconds
                report[key][name] = row
                print(key, name, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
