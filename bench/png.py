"""PNG encoder settings: time and size per zlib level and row filter.

PNG encoding of a large result can cost as much as a fast network, and
libvips's defaults (level 6, no row filter) are neither fast nor small for
upscaled photos. This measures each combination on one upscaled real photo,
best of three, so the defaults in ``EncodeSettings`` rest on numbers.

    PYTHONPATH=. .venv/bin/python bench/png.py [--edge 384] [--backend ncnn]

The image is upscaled by ncnn unless ``--backend`` says otherwise, as for the
recorded results (``auto`` would mean OpenVINO on bf16 CPUs); the backend
only changes the picture being encoded, by a little.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyvips
from skimage import data

from upscayl_cloud.engine.backends.select import CHOICES
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest
from upscayl_cloud.engine.pipeline import upscale_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", type=int, default=384)
    parser.add_argument(
        "--backend", default="ncnn", choices=CHOICES, help="engine backend (default: ncnn)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, result = Path(tmp) / "in.png", Path(tmp) / "out.png"
        pixels = np.asarray(data.astronaut())[: args.edge, : args.edge]
        pyvips.Image.new_from_array(pixels).pngsave(str(source))
        request = UpscaleRequest("quick-clear-4x", 4, "png")
        settings = EngineSettings(use_gpu=False, backend=args.backend)
        upscale_file(source, result, request, settings=settings)
        image = pyvips.Image.new_from_file(str(result)).copy_memory()
    print(f"# {image.width}x{image.height} upscaled photo ({args.backend}), {time.strftime('%F')}")
    print("| level | filter | seconds (best of 3) | MB |")
    print("|---|---|---|---|")
    for level in (1, 2, 3, 6, 9):
        for row_filter in ("none", "sub", "up", "avg", "paeth"):
            best, size = float("inf"), 0
            for _ in range(3):
                start = time.perf_counter()
                size = len(image.pngsave_buffer(compression=level, filter=row_filter))
                best = min(best, time.perf_counter() - start)
            print(f"| {level} | {row_filter} | {best:.3f} | {size / 1e6:.2f} |", flush=True)


if __name__ == "__main__":
    main()
