"""Check the engine's Vulkan path on a real GPU and time it against the CPU.

Runs each network through the engine's own tiling (``upscale_plane``) on the
CPU and on the GPU, on the same real photo, and reports the PSNR between the
two (ncnn's Vulkan path computes in fp16) and the time per call. Meant for a
short run on a lent GPU machine; see bench/README.md for the command.

    PYTHONPATH=src python bench/gpu_check.py --out results.json
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

from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import available_cores
from upscayl_cloud.engine.planes import Plane, to_float
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


def timed(runner: NcnnNetwork, plane: Plane, work: Path, tile: int, repeats: int) -> float:
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
    args = parser.parse_args()
    gpus = ncnn.get_gpu_count()
    report: dict = {"gpu_count": gpus, "host": platform.node(), "date": time.strftime("%F")}
    if gpus:
        info = ncnn.get_gpu_info(0)
        report["gpu"] = info.device_name() if hasattr(info, "device_name") else str(info)
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for key, (edge, gpu_tile) in CASES.items():
            spec = NETWORKS[key]
            cpu = NcnnNetwork(spec, threads=cores, use_gpu=False)
            gpu = NcnnNetwork(spec, threads=cores, use_gpu=True)
            row: dict = {"on_gpu": gpu.on_gpu}
            crop = Plane.from_array(work / "crop.raw", photo(edge))
            start = time.perf_counter()
            cpu_out = to_float(upscale_plane(cpu, crop, work / "cpu.raw", 256).read_all())
            row["cpu_seconds_crop"] = time.perf_counter() - start
            start = time.perf_counter()
            gpu_out = to_float(upscale_plane(gpu, crop, work / "gpu.raw", gpu_tile).read_all())
            row["gpu_seconds_crop_first_call"] = time.perf_counter() - start
            row["psnr_gpu_vs_cpu_db"] = psnr(gpu_out, cpu_out)
            row["max_abs_diff_255"] = float(np.abs(gpu_out - cpu_out).max() * 255)
            if gpu.on_gpu:
                big = Plane.from_array(work / "big.raw", photo(1024))
                seconds = timed(gpu, big, work, gpu_tile, repeats=3)
                row["gpu_seconds_1024_4x"] = seconds
                if key in H100_FP16_BOUND_S:
                    row["fraction_of_h100_fp16_bound"] = H100_FP16_BOUND_S[key] / seconds
            report[key] = row
            print(key, json.dumps(row), flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
