"""Peak memory of the whole pipeline: it must not grow with the image.

The engine keeps every image in raw planes on disk and only one tile in RAM
(engine/planes.py), so its memory should be bounded by
``EngineSettings.tile_memory_mb`` whatever the input size. This runs
``upscale_file`` on real-looking photos of increasing size, each in a fresh
subprocess, and reports two numbers per run:

* peak RSS (the child's ``ru_maxrss``), which includes the clean, file-backed
  pages of the plane files that libvips maps with ``rawload``: those grow with
  the image but the kernel can drop them at any time;
* peak anonymous memory (``RssAnon`` of /proc/<pid>/status, sampled by the
  parent every 0.2 s): heap, ncnn blobs, numpy tiles, libvips buffers. This is
  the number that must stay flat across sizes.

The inputs are mosaics of scikit-image's astronaut, chelsea and coffee photos
saved as JPEG. A 6000x4000 input at 4x takes several minutes on two cores;
run it in the background and read the table at the end:

    nohup .venv/bin/python bench/memory.py > /tmp/memory.log 2>&1 &
    .venv/bin/python bench/memory.py --sizes 3000x2000 --model quick-clear-4x --format jpg

The backend is ncnn unless ``--backend`` says otherwise: the recorded results
(bench/README.md) are ncnn's, and ``auto`` would mean OpenVINO on bf16 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from upscayl_cloud.engine.backends.select import CHOICES

SAMPLE_SECONDS = 0.2
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
CELL = 300


def mosaic(width: int, height: int) -> np.ndarray:
    """A ``height x width`` RGB photo mosaic of real 300 px crops (and mirrors)."""
    from skimage import data

    cells = []
    for image in (data.astronaut(), data.chelsea(), data.coffee()):
        h, w = image.shape[:2]
        for y, x in ((0, 0), (h - CELL, w - CELL), ((h - CELL) // 2, (w - CELL) // 2)):
            crop = image[y : y + CELL, x : x + CELL, :3]
            cells += [crop, crop[:, ::-1]]
    rows, cols = -(-height // CELL), -(-width // CELL)
    grid = np.empty((rows * CELL, cols * CELL, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            cell = cells[(r * cols + c * 7 + r) % len(cells)]
            grid[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = cell
    return grid[:height, :width]


def write_input(path: Path, width: int, height: int) -> None:
    import pyvips

    pixels = mosaic(width, height)
    pyvips.Image.new_from_array(pixels, interpretation="srgb").jpegsave(str(path), Q=92)


def read_status(pid: int) -> dict[str, int]:
    """Current sizes (KiB) of ``STATUS_FIELDS`` for ``pid``; empty once it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in STATUS_FIELDS:
                    values[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return values


def measure(source: Path, destination: Path, args: argparse.Namespace) -> dict:
    """Run one upscale in a child process, sampling its memory from here."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(source),
        str(destination),
        "--model",
        args.model,
        "--scale",
        str(args.scale),
        "--format",
        args.format,
        "--backend",
        args.backend,
    ]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks = dict.fromkeys(STATUS_FIELDS, 0)
    peak_anon_at = 0.0
    while child.poll() is None:
        status = read_status(child.pid)
        if status.get("RssAnon", 0) > peaks["RssAnon"]:
            peak_anon_at = time.perf_counter() - start
        for name, value in status.items():
            peaks[name] = max(peaks[name], value)
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"child failed with status {child.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    return {
        **report,
        "wall_seconds": wall,
        "peak_anon_at_seconds": peak_anon_at,
        **{f"peak_{k}_kib": v for k, v in peaks.items()},
    }


def child_main(args: argparse.Namespace) -> None:
    """The measured process: import, upscale once, report on stdout as JSON."""
    from upscayl_cloud.engine.options import EngineSettings, UpscaleRequest
    from upscayl_cloud.engine.pipeline import upscale_file

    settings = EngineSettings(work_dir=Path(args.destination).parent, backend=args.backend)
    before = read_status(os.getpid())
    request = UpscaleRequest(model=args.model, scale=args.scale, output_format=args.format)
    start = time.perf_counter()
    result = upscale_file(Path(args.source), Path(args.destination), request, settings=settings)
    seconds = time.perf_counter() - start
    report = {
        "upscale_seconds": seconds,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "anon_before_kib": before.get("RssAnon", 0),
        "output": f"{result.width}x{result.height}",
        "output_bytes": result.size_bytes,
        "tile_memory_mb": settings.tile_memory_mb,
        "threads": settings.threads,
        "backend": args.backend,
    }
    print(json.dumps(report), flush=True)


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("destination", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="3000x2000,6000x4000", help="input WxH, comma-separated")
    parser.add_argument("--model", default="quick-clear-4x")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--format", default="jpg")
    parser.add_argument(
        "--backend", default="ncnn", choices=CHOICES, help="engine backend (default: ncnn)"
    )
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"backend {args.backend}",
        flush=True,
    )
    rows = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            source = Path(tmp) / "input.jpg"
            write_input(source, width, height)
            report = measure(source, Path(tmp) / f"output.{args.format}", args)
        print(json.dumps({"input": size, **report}), flush=True)
        rows.append((size, report))

    print()
    print(
        "| input | output | wall s | upscale s | peak RSS MiB (ru_maxrss) "
        "| peak RssAnon MiB | peak RssFile MiB | RssAnon before MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size, r in rows:
        print(
            f"| {size} | {r['output']} | {r['wall_seconds']:.0f} | {r['upscale_seconds']:.0f} "
            f"| {mib(r['ru_maxrss_kib'])} | {mib(r['peak_RssAnon_kib'])} "
            f"| {mib(r['peak_RssFile_kib'])} | {mib(r['anon_before_kib'])} |"
        )


if __name__ == "__main__":
    main()
