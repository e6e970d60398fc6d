"""Why OpenVINO runs new sizes on dynamic shapes instead of rounding to buckets.

A static OpenVINO compilation fits one input shape, so every new image size
below one tile would cost a compilation (``engine/backends/openvino.py``).
Two ways around that were measured: buckets lose, dynamic shapes (now the
engine's first choice for a new size) cost about a tenth of the speed:

1. **Buckets**: extend a small image to the next multiple of ``--bucket``
   pixels (edge, reflect or symmetric padding), run, crop. For unpadded
   networks (waifu2x, Real-CUGAN) the tiler already does this losslessly;
   for the padded ones (RRDB, SRVGG, SPAN) every layer's zero padding then
   sits at the bucket's edge instead of the image's, which changes the
   image's right and bottom borders. Part 1 reports the PSNR and largest
   difference of the bucketed result against ncnn's exact-size run.
2. **Dynamic shapes**: one compilation for every size. Part 2 times OpenVINO
   with dynamic height and width against a static compilation of the same
   size (median of 3 calls after one warm-up), and the compile times.

    PYTHONPATH=. .venv/bin/python bench/shape_buckets.py
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import sys
import time

import numpy as np
import openvino as ov
from skimage import data

from upscayl_cloud.engine.backends.ncnn import NcnnNetwork
from upscayl_cloud.engine.backends.onnx_models import onnx_bytes
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import available_cores

PADDED = ["realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x4"]
PADDED += ["span-x4-ch48", "span-x2-ch52"]
DYNAMIC = {
    "realesrgan-x4plus": [(96, 96), (130, 170)],
    "realesr-animevideov3-x4": [(256, 256), (200, 300)],
    "span-x4-ch48": [(256, 256), (200, 300)],
    "waifu2x-upconv7-photo-noise1-x2": [(250, 270)],
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def buckets(args: argparse.Namespace, photo: np.ndarray) -> None:
    print(f"\n### Part 1: exact size against a {args.bucket}-pixel bucket, ncnn fp32\n")
    print("| network | image | bucket | padding | PSNR dB | max diff /255 | mean diff /255 |")
    print("|---|---|---|---|---:|---:|---:|")
    for key in PADDED:
        spec = NETWORKS[key]
        network = NcnnNetwork(spec, args.threads, use_gpu=False)
        shapes = [(70, 90)] if spec.kib_per_pixel >= 56 else [(130, 150), (100, 70)]
        for height, width in shapes:
            crop = photo[100 : 100 + height, 150 : 150 + width]
            chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
            exact = np.clip(network.run(chw), 0, 1)
            tall = math.ceil(height / args.bucket) * args.bucket
            wide = math.ceil(width / args.bucket) * args.bucket
            for mode in ("edge", "reflect", "symmetric"):
                padded = np.pad(chw, ((0, 0), (0, tall - height), (0, wide - width)), mode=mode)
                out = np.clip(network.run(padded), 0, 1)
                out = out[:, : height * spec.scale, : width * spec.scale]
                diff = np.abs(out - exact) * 255
                print(
                    f"| {key} | {width}x{height} | {wide}x{tall} | {mode} | "
                    f"{psnr(out, exact):.1f} | {diff.max():.1f} | {diff.mean():.3f} |",
                    flush=True,
                )


def dynamic(args: argparse.Namespace) -> None:
    print("\n### Part 2: OpenVINO (default precision) static against dynamic shapes\n")
    print("| network | input | static compile s | static s | dynamic compile s | dynamic s | x |")
    print("|---|---|---:|---:|---:|---:|---:|")
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1}
    for key, shapes in DYNAMIC.items():
        spec = NETWORKS[key]
        model = core.read_model(io.BytesIO(onnx_bytes(key, (spec.output_blob,))))
        shaped = model.clone()
        shaped.reshape({spec.input_blob: [1, 3, -1, -1]})
        start = time.perf_counter()
        flexible = core.compile_model(shaped, "CPU", config).create_infer_request()
        dynamic_compile = time.perf_counter() - start
        for height, width in shapes:
            tensor = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
            shaped = model.clone()
            shaped.reshape({spec.input_blob: [1, 3, height, width]})
            start = time.perf_counter()
            fixed = core.compile_model(shaped, "CPU", config).create_infer_request()
            static_compile = time.perf_counter() - start
            times: dict[str, list[float]] = {"static": [], "dynamic": []}
            for request in (fixed, flexible):
                request.infer({0: tensor})
            for _ in range(3):  # interleaved, so load hits both alike
                for name, request in (("static", fixed), ("dynamic", flexible)):
                    start = time.perf_counter()
                    request.infer({0: tensor})
                    times[name].append(time.perf_counter() - start)
            static_s = statistics.median(times["static"])
            dynamic_s = statistics.median(times["dynamic"])
            print(
                f"| {key} | {width}x{height} | {static_compile:.2f} | {static_s:.3f} | "
                f"{dynamic_compile:.2f} | {dynamic_s:.3f} | {static_s / dynamic_s:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", type=int, default=32)
    parser.add_argument("--threads", type=int, default=available_cores())
    args = parser.parse_args()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
    print(f"- Command: `{' '.join(sys.argv)}`; {args.threads} threads")
    photo = np.asarray(data.astronaut(), dtype=np.float32) / 255
    buckets(args, photo)
    dynamic(args)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nLoad average at the end: {load}; {time.strftime('%F %H:%M %Z')}")


if __name__ == "__main__":
    main()
