"""Several files at once: does running workers side by side overlap one
file's decoding and encoding with another's inference?

Inference is the only multi-threaded step of a file's pipeline; decoding,
resizing and PNG encoding (libvips) mostly use one core. With one worker
holding every core, those steps leave the other cores idle; with N workers
sharing the cores (what ``serve --workers N`` does: ``engine_threads =
cores / N``), one file's encoding runs while another's network runs. This
runs the same batch both ways, in the same process, and prints files per
minute for each layout:

    PYTHONPATH=. .venv/bin/python bench/files_in_parallel.py
    PYTHONPATH=. .venv/bin/python bench/files_in_parallel.py --model upscayl-standard-4x --edge 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyvips
from skimage import data

from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file


def _inputs(folder: Path, count: int, edge: int) -> list[Path]:
    photos = [data.astronaut(), data.chelsea(), data.coffee()]
    paths = []
    for index in range(count):
        pixels = np.ascontiguousarray(photos[index % len(photos)][:edge, :edge])
        path = folder / f"in-{index}.png"
        pyvips.Image.new_from_array(pixels, interpretation="srgb").pngsave(str(path))
        paths.append(path)
    return paths


def _batch(
    paths: list[Path], out: Path, workers: int, request: UpscaleRequest, backend: str
) -> float:
    threads = max(1, available_cores() // workers)
    settings = EngineSettings(threads=threads, concurrency=workers, use_gpu=False, backend=backend)

    def one(path: Path) -> None:
        upscale_file(path, out / f"{path.stem}.{request.output_format}", request, settings=settings)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, paths))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="upscayl-lite-4x")
    parser.add_argument("--edge", type=int, default=384)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--layouts", default="1,2", help="worker counts to compare")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--format", default="png")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    layouts = [int(n) for n in args.layouts.split(",")]
    request = UpscaleRequest(args.model, 4, args.format)
    print(f"- {os.uname().machine}, {available_cores()} cores, {time.strftime('%F %H:%M')} UTC")
    print(
        f"- {args.files} files of {args.edge}² -> 4x {args.format}, model {args.model}, "
        f"backend {args.backend}; median of {args.repeats} interleaved runs after a warm-up\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp), Path(tmp) / "out"
        out.mkdir()
        paths = _inputs(folder, args.files, args.edge)
        for workers in layouts:  # warm-up: load and compile every layout's networks
            _batch(paths[:workers], out, workers, request, args.backend)
        seconds: dict[int, list[float]] = {n: [] for n in layouts}
        for _ in range(args.repeats):
            for workers in layouts:
                seconds[workers].append(_batch(paths, out, workers, request, args.backend))
    base = statistics.median(seconds[layouts[0]])
    print("| workers x threads | batch s | files/min | vs first |")
    print("|---|---|---|---|")
    for workers in layouts:
        median = statistics.median(seconds[workers])
        threads = max(1, available_cores() // workers)
        print(
            f"| {workers} x {threads} | {median:.2f} | {60 * args.files / median:.1f} | "
            f"{base / median:.2f} |"
        )


if __name__ == "__main__":
    main()
