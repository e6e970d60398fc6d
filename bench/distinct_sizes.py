"""Backends on a stream of images that all differ in size, as a service sees.

``bench/backends.py`` times repeated runs of one size, which leaves out what
OpenVINO pays once per new input shape: a compilation (0.06-0.1 s for the
compact networks, 1-1.7 s for the RRDB ones). A service gets images of every
size, so this measures whole pipelines (``upscale_file``: PNG decode, passes,
PNG encode) over ``--count`` images of distinct sizes, each backend in a
fresh process, and reports the total against ncnn's:

* ``cold``: an empty compiled-model cache folder, so every new shape
  compiles (and is written there);
* ``disk``: a second process over the same sizes with the cache folder the
  first one filled (``UPSCAYL_ENGINE_CACHE_DIR``): a worker after a restart,
  or one of several workers sharing the folder;
* ``again``: the same sizes once more in the first process, the dynamic
  compilation (and any static ones the sizes earned) in memory: close to
  what ``bench/backends.py`` reports for repeated sizes.

Sizes are drawn from ``--seed`` within each model's range (small for the
RRDB model, whose ncnn rate is ~0.005 MP/s on two cores), so a run is
reproducible and takes a few minutes. Run it on a quiet machine; the load
average is printed at the start and the end.

    PYTHONPATH=. .venv/bin/python bench/distinct_sizes.py
    PYTHONPATH=. .venv/bin/python bench/distinct_sizes.py --models upscayl-lite-4x --count 4
    PYTHONPATH=. .venv/bin/python bench/distinct_sizes.py --backends ncnn,openvino,openvino-static
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyvips

from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest, available_cores
from upscayl_cloud.engine.pipeline import upscale_file

#: Input edges per model: (smallest, largest), one model per network family.
EDGES: dict[str, tuple[int, int]] = {
    "upscayl-standard-4x": (64, 192),  # realesrgan-x4plus (RRDB)
    "quick-clear-4x": (160, 512),  # realesr-animevideov3-x4
    "upscayl-lite-4x": (160, 512),  # span-x4-ch48
    "digital-art-plus-4x": (128, 384),  # Real-CUGAN
    "nature-boost-4x": (128, 384),  # waifu2x, two passes
}

#: Backend name -> (backend setting, precision), as in bench/backends.py.
BACKENDS = {
    "ncnn": ("ncnn", "fp32"),
    "openvino": ("openvino", "auto"),
    "openvino-fp32": ("openvino", "fp32"),
    # The policy before dynamic shapes: every shape compiled statically from
    # its first call (a benchmark-only override of the engine's choice).
    "openvino-static": ("openvino", "auto"),
    # Tiles at any width: no width timed, none stepped around
    # (``NetworkSpec.openvino_width_cliffs``).
    "openvino-any-width": ("openvino", "auto"),
}


def sizes(model: str, count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct (width, height) pairs within the model's range."""
    low, high = EDGES[model]
    draw = random.Random(f"{seed}-{model}")
    chosen: list[tuple[int, int]] = []
    while len(chosen) < count:
        size = (draw.randint(low, high), draw.randint(low, high))
        if size not in chosen:
            chosen.append(size)
    return chosen


def source_image(folder: Path, width: int, height: int) -> Path:
    """A crop of a real photo at that size (mirrored where it is larger)."""
    from skimage import data

    photo = np.asarray(data.astronaut())
    reps = (-(-height // photo.shape[0]), -(-width // photo.shape[1]), 1)
    tiled = np.tile(photo, reps)[:height, :width]
    path = folder / f"{width}x{height}.png"
    pyvips.Image.new_from_array(np.ascontiguousarray(tiled)).pngsave(str(path))
    return path


def child(args: argparse.Namespace) -> None:
    """One backend in this process: every size once (``cold`` or ``disk``),
    then, with ``--again``, every size once more. Prints JSON seconds."""
    backend, precision = BACKENDS[args.child]
    if args.child == "openvino-static":
        from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork

        OpenVinoNetwork._run_shapes = lambda self, output, shapes: shapes  # type: ignore[method-assign]
    if args.child == "openvino-any-width":
        from upscayl_cloud.engine.backends.openvino import OpenVinoNetwork

        OpenVinoNetwork.width_timings = property(lambda self: None)  # type: ignore[assignment]
    settings = EngineSettings(
        threads=args.threads,
        use_gpu=False,
        backend=backend,
        precision=precision,
        cache_dir=Path(args.cache) if args.cache else None,
    )
    request = UpscaleRequest(args.model, args.scale, "png")
    folder = Path(args.work)
    paths = [folder / f"{w}x{h}.png" for w, h in sizes(args.model, args.count, args.seed)]

    def one_round() -> list[float]:
        seconds = []
        for path in paths:
            start = time.perf_counter()
            upscale_file(path, folder / f"out-{args.child}.png", request, settings=settings)
            seconds.append(time.perf_counter() - start)
        return seconds

    result = {"first": one_round()}
    if args.again:
        result["again"] = one_round()
    print(json.dumps(result))


def run_child(args: argparse.Namespace, backend: str, work: Path, cache: str, again: bool) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        backend,
        "--model",
        args.model,
        "--work",
        str(work),
        "--cache",
        cache,
        "--count",
        str(args.count),
        "--seed",
        str(args.seed),
        "--scale",
        str(args.scale),
        "--threads",
        str(args.threads),
    ] + (["--again"] if again else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{backend} on {args.model} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(EDGES))
    parser.add_argument("--backends", default="ncnn,openvino", help="the first is the baseline")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    backends = [name for name in args.backends.split(",") if name]
    unknown = [name for name in backends if name not in BACKENDS]
    if unknown or not backends:
        raise SystemExit(f"--backends: unknown {unknown}; choose from {sorted(BACKENDS)}")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"- Date: {time.strftime('%F %H:%M %Z')}; load average at the start: {load}")
    print(f"- Command: `{' '.join(sys.argv)}`; {args.threads} threads; {args.scale}x to PNG")
    print(
        f"- {args.count} images of distinct sizes per model (seed {args.seed}), each backend "
        "in a fresh process; seconds for all of them, load and compilation included\n"
    )
    print("| model | sizes (w x h) | backend | cold s | x | disk-cached s | x | again s | x |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for model in [name for name in args.models.split(",") if name]:
        args.model = model
        with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
            work = Path(tmp)
            chosen = sizes(model, args.count, args.seed)
            for width, height in chosen:
                source_image(work, width, height)
            shown = ", ".join(f"{w}x{h}" for w, h in chosen)
            base: dict[str, float] = {}
            for backend in backends:
                cache = work / f"cache-{backend}"
                cold = run_child(args, backend, work, str(cache), again=True)
                disk = run_child(args, backend, work, str(cache), again=False)
                totals = {
                    "cold": sum(cold["first"]),
                    "disk": sum(disk["first"]),
                    "again": sum(cold["again"]),
                }
                base = base or totals
                kinds = ("cold", "disk", "again")
                cells = " | ".join(f"{totals[k]:.2f} | {base[k] / totals[k]:.2f}" for k in kinds)
                print(f"| {model} | {shown} | {backend} | {cells} |", flush=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nLoad average at the end: {load}; {time.strftime('%F %H:%M %Z')}")


if __name__ == "__main__":
    main()
