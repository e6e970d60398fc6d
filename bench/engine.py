"""Engine speed per model: whole pipeline against plain ncnn on the same pixels.

For each model, one real photo is upscaled 4x by ``upscale_file`` (decode ->
tiled passes -> encode to PNG) and the same networks are run by plain ncnn,
untiled, on the same pixels, in the same process. The ratio is what tiling,
planes on disk, decoding and encoding cost on top of the networks themselves
(target: under 1.10). Input sizes are small enough for the untiled baseline
to fit in memory; see bench/README.md for results.

    PYTHONPATH=. .venv/bin/python bench/engine.py [--models a,b] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyvips
from skimage import data

from tests.engine.reference import plain_ncnn
from upscayl_cloud.engine.catalog import MODELS, Run, get_model
from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file

#: Input edge per model: small for the heavy RRDB and multi-pass pipelines.
EDGE = {
    "upscayl-standard-4x": 160,
    "digital-art-4x": 160,
    "texture-boost-4x": 160,
    "crystal-plus-4x": 192,
    "nature-boost-4x": 256,
    "clear-boost-4x": 256,
}
DEFAULT_EDGE = 384


def photo(edge: int) -> np.ndarray:
    image = np.asarray(data.astronaut())  # 512x512 real photo
    return image[:edge, :edge] if edge <= 512 else np.tile(image, (2, 2, 1))[:edge, :edge]


def plain_seconds(model: str, pixels: np.ndarray) -> float:
    """Every network pass of the model's 4x plan, untiled, by plain ncnn."""
    current = pixels.astype(np.float32) / 255
    total = 0.0
    for step in get_model(model).plan(4):
        assert isinstance(step, Run)
        start = time.perf_counter()
        current = plain_ncnn(step.network, current)
        total += time.perf_counter() - start
    return total


def pipeline_seconds(model: str, source: Path, out: Path, settings: EngineSettings) -> float:
    start = time.perf_counter()
    upscale_file(source, out, UpscaleRequest(model, 4, "png"), settings=settings)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = EngineSettings(use_gpu=False, backend="ncnn")
    print(
        f"# {platform.processor() or platform.machine()}, {available_cores()} cores, "
        f"{time.strftime('%F')}, ncnn threads={settings.threads}, libvips {pyvips.version(0)}."
        f"{pyvips.version(1)}"
    )
    print("| model | input | pipeline s | plain ncnn s | ratio | input MP/s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            edge = EDGE.get(model, DEFAULT_EDGE)
            pixels = photo(edge)
            source = work / "in.png"
            pyvips.Image.new_from_array(pixels).pngsave(str(source))
            # Warm both paths (network loading, first-call allocations).
            pipeline_seconds(model, source, work / "out.png", settings)
            plain_seconds(model, pixels)
            plain, piped = [], []
            for _ in range(args.repeats):
                plain.append(plain_seconds(model, pixels))
                piped.append(pipeline_seconds(model, source, work / "out.png", settings))
            p, b = statistics.median(piped), statistics.median(plain)
            mp = edge * edge / 1e6
            print(
                f"| {model} | {edge}x{edge} | {p:.2f} | {b:.2f} | {p / b:.2f} | {mp / p:.4f} |",
                flush=True,
            )
    os.sync()


if __name__ == "__main__":
    main()
