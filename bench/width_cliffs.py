"""OpenVINO bf16 speed per input width: some widths are several times slower.

Found while benchmarking images of distinct sizes (bench/distinct_sizes.py):
one 395x325 image took 1.1-1.5 s on AnimeVideo v3 where its neighbours took
0.1-0.5 s. OpenVINO's profile shows the same oneDNN kernel
(``brgconv_avx512_amx_bf16``) 4.5x slower per convolution at width 395 than
at 396. This times one static compilation per (network, height, width),
median of 3 calls after a warm-up, as microseconds per input pixel, so that
widths can be compared directly:

    PYTHONPATH=. .venv/bin/python bench/width_cliffs.py

``--sweep`` times every width of a range instead, on one dynamic
compilation, at a few heights, and lists the widths that ran at least 1.5x
their neighbours' lower median (what ``backends.width_costs`` computes): how
many widths are slow, and whether a short call finds the same ones as a tall
one (the engine times widths with 8-row calls):

    PYTHONPATH=. .venv/bin/python bench/width_cliffs.py --sweep realesr-animevideov3-x4 \
        --widths 380-420 --heights 4,8,200
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import numpy as np
import openvino as ov

from upscayl_cloud.engine.backends.onnx_models import onnx_bytes
from upscayl_cloud.engine.networks import NETWORKS
from upscayl_cloud.engine.options import available_cores

#: network -> (height, widths): even, odd and neighbouring widths.
CASES = {
    "realesr-animevideov3-x4": (325, [392, 394, 395, 396, 400]),
    "span-x4-ch48": (200, [256, 257, 258, 260]),
    "span-x2-ch52": (300, [449, 452, 456]),
    "realesrgan-x4plus": (128, [191, 192, 193, 195]),
    "waifu2x-upconv7-photo-x2": (214, [270, 271, 272]),
    "realcugan-se-up2x-conservative": (236, [272, 276, 280]),
}


def sweep(key: str, widths: range, heights: list[int], threads: int) -> None:
    """Slow widths of one network at each height, timed back to back."""
    spec = NETWORKS[key]
    core = ov.Core()
    model = core.read_model(io.BytesIO(onnx_bytes(key, (spec.output_blob,))))
    model.reshape({spec.input_blob: [1, 3, -1, -1]})
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    print(f"| {key}: rows | slow widths (x their neighbours) | share of widths |")
    print("|---:|---|---:|")
    for height in heights:
        per_pixel = {}
        for width in range(widths.start - 2, widths.stop + 2):
            tensor = np.zeros((1, 3, height, width), dtype=np.float32)
            request.infer({0: tensor})  # the new shape's own cost, once
            start = time.perf_counter()
            request.infer({0: tensor})
            per_pixel[width] = (time.perf_counter() - start) / (height * width)
        slow = []
        for width in widths:
            beside = [per_pixel[w] for w in range(width - 2, width + 3) if w != width]
            ratio = per_pixel[width] / statistics.median_low(beside)
            if ratio >= 1.5:
                slow.append(f"{width} ({ratio:.1f})")
        share = f"{len(slow)}/{len(widths)}"
        print(f"| {height} | {', '.join(slow)} | {share} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", metavar="NETWORK", help="time every width of --widths")
    parser.add_argument("--widths", default="380-420", help="first-last width, for --sweep")
    parser.add_argument("--heights", default="8,200", help="rows per call, for --sweep")
    args = parser.parse_args()
    threads = available_cores()
    if args.sweep:
        first, last = (int(w) for w in args.widths.split("-"))
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
        print(f"- {threads} threads, OpenVINO {ov.__version__}, default precision\n")
        sweep(
            args.sweep, range(first, last + 1), [int(h) for h in args.heights.split(",")], threads
        )
        return
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
    print(f"- {threads} threads, OpenVINO {ov.__version__}, default precision\n")
    print("| network | height | width: microseconds per input pixel |")
    print("|---|---:|---|")
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
    for key, (height, widths) in CASES.items():
        spec = NETWORKS[key]
        model = core.read_model(io.BytesIO(onnx_bytes(key, (spec.output_blob,))))
        cells = []
        for width in widths:
            shaped = model.clone()
            shaped.reshape({spec.input_blob: [1, 3, height, width]})
            request = core.compile_model(shaped, "CPU", config).create_infer_request()
            tensor = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
            request.infer({0: tensor})
            times = []
            for _ in range(3):
                start = time.perf_counter()
                request.infer({0: tensor})
                times.append(time.perf_counter() - start)
            cells.append(f"{width}: {statistics.median(times) / (height * width) * 1e6:.2f}")
        print(f"| {key} | {height} | {', '.join(cells)} |", flush=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nLoad average at the end: {load}; {time.strftime('%F %H:%M %Z')}")


if __name__ == "__main__":
    main()
